"""The flow of one message: settings, body, message, relay, and what is kept.

Every failure after the body was read keeps the message in dead.letter
before it is reported, so nothing a script pipes into pymail is lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pymail import deadletter, logs, progress
from pymail.addresses import Mailbox, expand, parse_list, parse_mailbox, unique
from pymail.delivery import Sent, bounded, settle_failure, settle_outcome
from pymail.errors import (
    ConfigError,
    DataError,
    NoInputError,
    PymailError,
    UsageError,
    internal_error,
)
from pymail.files import read_regular
from pymail.message import (
    OWN_HEADERS,
    Attachment,
    Draft,
    Message,
    Payload,
    body_text,
    check_field,
    decode_text,
    locale_charset,
    split_header_block,
    transfer_decoded,
    usable_charset,
)
from pymail.notices import check_secrets
from pymail.relay import Envelope, deliver
from pymail.request import Request
from pymail.settings import Settings, default_user, home_dir, resolve_variables

log = logs.Logger(__name__)

# Names some files use that pymail accepts and explains under -v.
NO_EFFECT = {
    "sendwait": "pymail always waits for the relay",
    "sendcharsets": "pymail sends UTF-8 (or US-ASCII when that is enough)",
}


@dataclass(repr=False, eq=False)
class Parsed:
    """The request after -t: recipients, subject and headers from stdin."""

    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    sender: str | None
    body: bytes
    body_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    # -t's Content-Type and transfer encoding for a body that is not text
    # (multipart, a PDF): it goes as it came.
    mime: tuple[str, str | None] | None = None


def send_request(request: Request) -> int:
    """Send what the request asks for; returns the exit status."""
    try:
        settings = resolve_variables(read_system=request.read_system,
                                     assignments=list(request.assign),
                                     account=request.account)
    except ConfigError as error:
        # The configuration is broken, but what was piped in must survive,
        # even nothing: a subject or an attachment may be the message.
        if sys.stdin is not None and sys.stdin.isatty():
            return fail(error, None, "", None)  # someone is there to see
        body = b"" if sys.stdin is None else sys.stdin.buffer.read()
        return keep_unbuilt(error, default_dead_letter(), request, body)
    check_secrets(settings)
    for source in settings.sources:
        log.info("read %s", source)
    for note in settings.notes:
        log.info("%s", note)
    for name, why in NO_EFFECT.items():
        if settings.flag(name):
            log.info("%s is accepted: %s", name, why)
    password_source = settings.credentials()[3]
    if password_source:
        log.info("the password comes from %s", settings.origin(password_source))
    elif settings.text("pymail-password-command"):
        log.info("the password comes from pymail-password-command (%s)",
                 settings.origin("pymail-password-command"))

    body = read_body(settings)
    dead = settings.dead_letter()
    attachments: list[Attachment] = []
    try:
        parsed = parse_input(request, settings, body)
        if request.skip_empty and not parsed.body:
            log.info("empty message not sent (-E)")
            return 0
        message, envelope = compose(request, settings, parsed, attachments)
    except Exception as exc:  # a bug of pymail's too: the message is kept
        close_all(attachments)
        failure = exc if isinstance(exc, PymailError) else \
            internal_error("building the message", exc)
        return keep_unbuilt(failure, dead, request, body)
    try:
        return transmit(settings, envelope, message)
    finally:
        close_all(attachments)


def compose(request: Request, settings: Settings, parsed: Parsed,
            attachments: list[Attachment]) -> tuple[Message, Envelope]:
    """The message and its envelope; the attachments opened are added to
    `attachments`, for the caller to close."""
    fallbacks = charsets(settings)
    for name in request.attach:
        attachments.append(Attachment.open(name, fallbacks))
    senders, envelope_sender = senders_of(request, parsed, settings)
    draft, recipients = make_draft(parsed, settings, senders, attachments)
    if not recipients:
        # `mail -s x "$UNSET"`: nothing to send to, and nothing lost.
        raise UsageError("no recipients (an empty address was given)")
    message = Message(draft)
    return message, Envelope(envelope_sender, recipients, utf8=message.utf8,
                             eight_bit=message.eight_bit)


def keep_unbuilt(error: PymailError, dead: Path | None, request: Request,
                 body: bytes) -> int:
    """Keep a message that could not be built (see pymail.unbuilt)."""
    from pymail import unbuilt

    return unbuilt.keep_unbuilt(error, dead, request, body)


def transmit(settings: Settings, envelope: Envelope, message: Message) -> int:
    """Deliver, then settle the outcome: queue, dead.letter, record."""
    try:
        relay = settings.relay().address
    except ConfigError:
        relay = "-"
    sent = Sent(envelope, message.chunks, message.message_id, relay,
                settings.account)
    size = message.size()
    try:
        with bounded(settings.deadline()), progress.shown(size) as counted:
            outcome = deliver(settings, envelope, counted(message.chunks()),
                              size)
    except PymailError as error:
        return settle_failure(settings, error, sent)
    except Exception as exc:
        # A bug of pymail's must not cost the message: keep it, then say so.
        return settle_failure(settings, internal_error("sending", exc), sent)
    if outcome.reply:
        record(settings, envelope.sender, message)
    return settle_outcome(settings, outcome, sent)


def fail(error: PymailError, dead: Path | None, sender: str,
         chunks: Callable[[], Iterable[bytes]] | None, *,
         recipients: list[str] | None = None,
         rebuild: str | None = None, attachments: list[str] | None = None,
         account: str | None = None) -> int:
    """Keep the message (chunks gives it afresh at each call), then print
    one line; returns the exit status. With `rebuild`, the message is kept
    unbuilt with the recipients and attachments as given, for --resend to
    build once the cause is fixed."""
    where = ""
    if chunks is not None:
        try:
            where = "; " + deadletter.keep(dead, sender, chunks,
                                           recipients=recipients,
                                           error=error.line(), rebuild=rebuild,
                                           attachments=attachments,
                                           account=account)
        except PymailError as keep_error:
            print(f"pymail: {error.line()}", file=sys.stderr)
            print(f"pymail: {keep_error.line()}", file=sys.stderr)
            return keep_error.code
    print(f"pymail: {error.line()}{where}", file=sys.stderr)
    log.debug("details", exc_info=error)
    return error.code


def read_body(settings: Settings) -> bytes:
    """stdin as bytes; at a terminal, with `dot`, a lone `.` line ends it."""
    if sys.stdin is None:  # started with stdin closed
        return b""
    stream = sys.stdin.buffer
    if not sys.stdin.isatty():
        return stream.read()
    lines = []
    for line in stream:
        if settings.flag("dot") and line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def charsets(settings: Settings) -> tuple[str, ...]:
    """Charsets to try, in order, for input that is not UTF-8: ttycharset,
    the locale's charset (unless ASCII or UTF-8), s-nail's charset-8bit.
    Latin-1, which keeps every byte, comes after them all."""
    found = [usable_charset(settings.text("ttycharset")),
             locale_charset(os.environ),
             usable_charset(settings.text("charset-8bit"))]
    return tuple(dict.fromkeys(c for c in found if c))


def text_of(value: str, fallbacks: tuple[str, ...]) -> str:
    """An argument or file value whose bytes were not UTF-8 (Python keeps
    them as surrogates), decoded by the rule for stdin instead."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return decode_text(os.fsencode(value), fallbacks)
    return value


def parse_input(request: Request, settings: Settings, body: bytes) -> Parsed:
    """Apply -q and -t to what was read from stdin."""
    fallbacks = charsets(settings)

    def texts(values: tuple[str, ...]) -> list[str]:
        return [text_of(v, fallbacks) for v in values]

    parsed = Parsed(texts(request.to), texts(request.cc), texts(request.bcc),
                    text_of(request.subject or "", fallbacks),
                    text_of(request.from_, fallbacks) if request.from_
                    else None, body, request.body_type)
    for line in texts(request.custom_headers):
        name, value = check_field(line, "-C")
        if name.lower() in OWN_HEADERS or name.lower().startswith("content-"):
            raise UsageError(f"-C cannot set {name}: use -s, -r, -c, -b, "
                             "-M or the recipients instead")
        parsed.headers.append((name, value))
    if request.read_headers:
        read_header_block(parsed, request, charsets(settings))
    if request.quote_file:
        parsed.body = read_quote(request.quote_file) + parsed.body
    if not (parsed.to or parsed.cc or parsed.bcc):
        raise UsageError("no recipients: none given, none in the -t headers")
    return parsed


def read_header_block(parsed: Parsed, request: Request,
                      fallbacks: tuple[str, ...]) -> None:
    """-t: To, Cc and Bcc add recipients; Subject and From apply unless -s
    or -r says otherwise; other headers are kept; Bcc and Resent-Bcc are
    never written."""
    headers, parsed.body = split_header_block(parsed.body, fallbacks)
    content_type = encoding = ""
    described = []  # Content-Disposition and the like
    for name, value in headers:
        key = name.lower()
        if key in ("to", "cc", "bcc"):
            getattr(parsed, key).append(value)
        elif key == "subject":
            if request.subject is None:
                parsed.subject = value
        elif key == "from":
            if request.from_ is None:
                parsed.sender = value
        elif key == "content-type":
            if not content_type:  # the first, as the sendmail entry reads
                content_type = value or " "
        elif key == "content-transfer-encoding":
            encoding = encoding or value
        elif key.startswith("content-"):
            described.append((name, value))
        elif key not in ("mime-version", "resent-bcc"):  # Resent-Bcc: as Bcc
            parsed.headers.append((name, value))
    kind = content_type.partition(";")[0].strip()
    if request.body_type == "text/plain" and content_type:
        # No subtype (`text`, empty): plain text, as RFC 2045 says.
        parsed.body_type = kind if "/" in kind else "text/plain"
    text = parsed.body_type.lower().startswith("text/")
    if not text and request.body_type == "text/plain":
        # A MIME body goes as it came, with the headers that describe it.
        if request.quote_file:
            raise DataError(f"-q cannot put text before the {kind} body "
                            "the -t headers give")
        parsed.mime = (content_type, encoding.strip() or None)
        parsed.headers += described
        return
    if not request.attach:  # one part: what describes it still does
        parsed.headers += described
    if not text:  # -M's type: stdin's bytes, their encoding undone
        parsed.body = transfer_decoded(parsed.body, encoding)
    elif encoding or "charset" in content_type.lower():
        # Decoded (base64 under its header) and read in the charset its
        # header names: pymail encodes what it sends itself.
        parsed.body = body_text(parsed.body, content_type, encoding,
                                fallbacks).encode("utf-8")


def read_quote(name: str) -> bytes:
    """The file -q names, put before stdin's text."""
    path = Path(name)
    if path.is_dir():
        raise NoInputError(f"-q {name}: is a directory")
    try:
        data = read_regular(path)
    except OSError as exc:
        raise NoInputError(f"-q {name}: {exc.strerror or exc}") from exc
    return data if not data or data.endswith(b"\n") else data + b"\n"


def senders_of(request: Request, parsed: Parsed,
               settings: Settings) -> tuple[list[Mailbox], str]:
    """The From mailboxes and the envelope sender (the first of them)."""
    if parsed.sender:
        where = "-r" if request.from_ else "the -t From header"
        senders = qualified(parse_list([parsed.sender], where), settings)
    else:
        senders = configured_senders(settings)
    if not senders:
        raise ConfigError("the From address is empty")
    envelope = senders[0].addr
    if request.envelope_sender:
        envelope = parse_mailbox(request.envelope_sender, "-f").addr
    return senders, envelope


def configured_senders(settings: Settings) -> list[Mailbox]:
    """From the configuration: `from`, else smtp-auth-user when it is an
    address (providers reject a MAIL FROM other than the login), else
    user@hostname."""
    if settings.text("from"):
        value = text_of(settings.text("from") or "", charsets(settings))
        senders = parse_list([value], f"from ({settings.origin('from')})")
    else:
        _, user, _ = settings.auth()
        if user and "@" in user:
            senders = [parse_mailbox(user, "smtp-auth-user")]
        else:
            senders = [Mailbox("", f"{default_user()}@{settings.hostname()}")]
    return qualified(senders, settings)


def qualified(senders: list[Mailbox], settings: Settings) -> list[Mailbox]:
    """A bare name gets @hostname."""
    return [m if "@" in m.addr else
            Mailbox(m.name, f"{m.addr}@{settings.hostname()}")
            for m in senders]


def make_draft(parsed: Parsed, settings: Settings, senders: list[Mailbox],
               attachments: list[Attachment]) -> tuple[Draft, list[str]]:
    """The draft and its envelope recipients (To, Cc and Bcc, each once)."""
    aliases, catchall = settings.all_aliases(), settings.catchall()
    to = expand(parse_list(parsed.to, "the recipients"), aliases, "To",
                catchall)
    cc = expand(parse_list(parsed.cc, "Cc"), aliases, "Cc", catchall)
    bcc = expand(parse_list(parsed.bcc, "Bcc"), aliases, "Bcc", catchall)
    fallbacks = charsets(settings)
    reply_to = parse_list(
        [text_of(settings.text("replyto", "reply-to") or "", fallbacks)],
        "replyto")
    sender_var = text_of(settings.text("sender") or "", fallbacks)
    passthrough = None
    if parsed.mime:
        if attachments:
            raise DataError(f"cannot attach {attachments[0].name} to the "
                            f"{parsed.body_type} body the -t headers give")
        passthrough = (*parsed.mime, Payload.of([parsed.body]))
    draft = Draft(
        sender=senders, to=to, cc=cc, subject=parsed.subject,
        body=parsed.body, body_type=parsed.body_type, passthrough=passthrough,
        attachments=attachments, reply_to=reply_to,
        sender_header=parse_mailbox(sender_var, "sender") if sender_var
        else None,
        organization=text_of(settings.text("ORGANIZATION") or "", fallbacks),
        hostname=settings.hostname(), extra_headers=parsed.headers,
        fallback_charsets=charsets(settings))
    return draft, unique(to + cc + bcc)


def record(settings: Settings, sender: str, message: Message) -> None:
    """With `record` set, append a copy of the sent message (no Bcc: pymail
    never writes one) to that mbox file. A failure here is only a warning:
    the message was delivered."""
    name = settings.text("record")
    if not name:
        return
    path = Path(os.path.expanduser(name))
    if not path.is_absolute():
        path = home_dir() / path
    try:
        deadletter.append_private(path, deadletter.mbox_entry(
            sender, message.chunks()))
    except OSError as exc:
        log.warning("delivered, but could not write record %s: %s", path,
                    exc.strerror or exc)
    except NoInputError as error:
        log.warning("delivered, but could not write record %s: %s", path,
                    error.line())


def default_dead_letter() -> Path:
    name = os.environ.get("DEAD")
    return Path(os.path.expanduser(name)) if name else home_dir() / "dead.letter"


def close_all(attachments: list[Attachment]) -> None:
    for attachment in attachments:
        attachment.close()
