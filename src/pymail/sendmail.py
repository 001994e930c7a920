"""The sendmail entry: what cron, logwatch, smartd, mdadm and fail2ban call.

It reads a whole message (headers and body) from stdin and relays it with
the same configuration as pymail. It is the `pymail-sendmail` command, and
pymail itself behaves this way when invoked as `sendmail` (or `mailq`).
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from pymail import logs
from pymail.addresses import Mailbox, expand, parse_list, parse_mailbox, unique
from pymail.errors import (
    EX_SOFTWARE,
    EX_USAGE,
    ConfigError,
    DataError,
    PymailError,
    UsageError,
    internal_error,
)
from pymail.files import spooled, stdout_gone, steady_streams
from pymail.lines import BLOCK, blocks, line_pieces
from pymail.message import (
    Attachment,
    Draft,
    Message,
    Payload,
    body_text,
    split_header_block,
)
from pymail.notices import setup_logging
from pymail.relay import Envelope
from pymail.settings import Settings, resolve_variables

log = logs.Logger(__name__)

# Options whose value may be attached (-fuser) or the next word (-f user).
WITH_VALUE = frozenset("fFrBNVRXLhCOd")
# Headers that the rebuilt message takes from the parsed ones.
HANDLED = frozenset({"from", "to", "cc", "bcc", "subject", "mime-version",
                     "content-type", "content-transfer-encoding",
                     "resent-bcc"})  # never written, as Bcc
# Without -i, a line of a single dot (and CRs) ends the message.
DOT_LINE = re.compile(rb"^\.\r*(?:\n|\Z)", re.MULTILINE)
# The empty line after the header, and the most of a message read to find
# it: a header is not megabytes long.
HEADER_END = re.compile(rb"\n\r?\n")
HEADER_LIMIT = 1 << 20


USAGE = """\
usage: pymail-sendmail [-t] [-i] [-f sender] [-F name] [recipient...] < message
       pymail-sendmail -q        send what is queued, now
       pymail-sendmail -bp       list the queue (also: mailq)

pymail's entry for programs that call sendmail (cron, daemons): the message
on stdin goes through the relay of /etc/mail.rc and ~/.mailrc. -t takes the
recipients from its To, Cc and Bcc headers too. Other sendmail options are
accepted and ignored; -v says which. See pymail's README for the rest."""


@dataclass(repr=False, eq=False)
class Options:
    recipients: list[str] = field(default_factory=list)
    sender: str | None = None
    full_name: str | None = None
    read_recipients: bool = False
    ignore_dots: bool = False
    mode: str = "send"
    verbose: bool = False
    debug: bool = False
    ignored: list[str] = field(default_factory=list)


def parse_args(args: list[str], program: str) -> Options:
    """sendmail's options, as cron, cronie and other callers pass them."""
    options = Options(mode="list" if program == "mailq" else "send")
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            options.recipients.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            options.recipients.append(arg)
            continue
        letter, attached = arg[1], arg[2:]
        value = attached
        if letter in WITH_VALUE and not attached:
            if i >= len(args):
                raise UsageError(f"sendmail option {arg} needs a value")
            value = args[i]
            i += 1
        if letter in "fr":
            options.sender = value
        elif letter == "F":
            options.full_name = value
        elif arg == "-t":
            options.read_recipients = True
        elif arg in ("-i", "-oi"):
            options.ignore_dots = True
        elif arg == "-v":
            options.verbose = True
        elif letter == "q":
            options.mode = "flush"
        elif letter == "b":
            options.mode = _mode(attached)
        elif letter in WITH_VALUE or letter in "oAUGnme":
            options.ignored.append(arg if attached or letter not in
                                   WITH_VALUE else f"{arg} {value}")
        else:
            raise UsageError(f"unknown sendmail option {arg}")
    return options


def _mode(word: str) -> str:
    if word in ("m", ""):
        return "send"
    if word == "p":
        return "list"
    if word == "s":
        raise UsageError("-bs (SMTP on standard input) is not supported: "
                         "pymail relays messages, it is not an SMTP server")
    raise UsageError(f"-b{word} is not supported by pymail")


def read_message(ignore_dots: bool) -> BinaryIO:
    """stdin, in memory or a temporary file (see files.spooled); without
    -i, a line holding a single dot ends the message."""
    if sys.stdin is None:
        return io.BytesIO()
    chunks = _read(sys.stdin.buffer)
    return spooled(chunks if ignore_dots else _until_dot(chunks))


def _read(stream: BinaryIO) -> Iterator[bytes]:
    # read1: at a terminal, each line as it is typed, so that a dot ends it.
    # BinaryIO does not declare read1; stdin's buffer has it.
    while chunk := stream.read1(BLOCK):  # type: ignore[attr-defined]
        yield chunk


def _until_dot(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks up to a line holding a single dot (and CRs)."""
    for piece, at_start in line_pieces(chunks):
        start = 0 if at_start else piece.find(b"\n") + 1
        found = DOT_LINE.search(piece, start) if at_start or start else None
        if found:
            yield piece[:found.start()]
            return
        yield piece


def run(program: str, args: list[str]) -> int:
    options = parse_args(args, program)
    setup_logging(options.verbose, options.debug)
    for ignored in options.ignored:
        log.info("sendmail option %s ignored", ignored)
    try:
        settings = resolve_variables(read_system=True, assignments=[])
    except ConfigError as error:
        if options.mode != "send":
            raise
        # The configuration is broken, but the message must survive it.
        from pymail.send import default_dead_letter, fail

        data = read_message(options.ignore_dots)
        return fail(error, default_dead_letter(), options.sender or "",
                    partial(blocks, data), recipients=options.recipients,
                    rebuild=kept_as(options))
    from pymail.notices import check_secrets

    check_secrets(settings)
    if options.mode == "send":
        return send(settings, options, read_message(options.ignore_dots))
    from pymail import maintenance

    if options.mode == "flush":
        # sendmail -q runs the queue now, whatever the back-off; a message
        # queued with an account (pymail -A) goes with that account.
        def settings_for(account: str | None) -> Settings:
            return resolve_variables(read_system=True, assignments=[],
                                     account=account)

        return maintenance.flush(settings, [], settings_for, everything=True)
    return maintenance.list_queue(settings)


def send(settings: Settings, options: Options, data: BinaryIO) -> int:
    """Relay one message read from stdin; keep it on any failure."""
    from pymail.send import charsets, fail, transmit

    try:
        message, envelope = rebuild(settings, options, data, charsets(settings))
    except Exception as exc:  # a bug of pymail's too: the message is kept
        error = exc if isinstance(exc, PymailError) else \
            internal_error("building the message", exc)
        return fail(error, settings.dead_letter(), options.sender or "",
                    partial(blocks, data), recipients=options.recipients,
                    rebuild=kept_as(options))
    return transmit(settings, envelope, message)


def kept_as(options: Options) -> str:
    """How --resend is to build a message kept unbuilt (see
    deadletter.REBUILD_HEADER): "t" or "1", and -F's name as JSON."""
    mark = "t" if options.read_recipients else "1"
    if options.full_name:
        import json

        mark += " " + json.dumps({"full_name": options.full_name})
    return mark


def options_of(kept_mark: str, recipients: list[str],
               sender: str | None) -> Options:
    """The options kept_as recorded."""
    import json

    mode, _, extra = kept_mark.partition(" ")
    full_name = None
    if extra:
        try:
            full_name = json.loads(extra)["full_name"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise DataError("the recorded sendmail options are not "
                            "what pymail writes") from None
        if not isinstance(full_name, str):
            raise DataError("the recorded sendmail -F is not a name")
    return Options(recipients=recipients, sender=sender,
                   read_recipients=mode == "t", ignore_dots=True,
                   full_name=full_name)


def rebuild(settings: Settings, options: Options, data: BinaryIO,
            fallbacks: tuple[str, ...],
            attachments: list[Attachment] | None = None
            ) -> tuple[Message, Envelope]:
    """The message as pymail writes it: its headers kept, Date, Message-ID
    and From added when missing, a bare local From made the configured
    address, bare recipients resolved, Bcc removed, the body re-encoded.
    A MIME body that is not text is sent from the file, never held whole.
    Attachments (of a message kept unbuilt) go after a text body."""
    head = head_of(data)
    headers, rest = split_header_block(head, fallbacks, strict=False)
    if not rest and len(head) >= HEADER_LIMIT and not HEADER_END.search(head):
        # Cut here, the headers after the limit (Bcc among them) would be
        # sent as body text.
        raise DataError(f"sendmail: the header block is longer than "
                        f"{HEADER_LIMIT >> 20} MiB")
    body_start = len(head) - len(rest)
    first = {n.lower(): v for n, v in reversed(headers)}
    content_type = first.get("content-type", "text/plain")
    kind = content_type.partition(";")[0].strip().lower()
    if "/" not in kind:  # empty, or `text`: no MIME type; RFC 2045 says
        content_type = kind = "text/plain"  # take it as plain text
    passthrough = None
    if kind.startswith("text/"):
        data.seek(body_start)
        text = body_text(data.read(), first.get("content-type", ""),
                         first.get("content-transfer-encoding", ""),
                         fallbacks).encode("utf-8")
    else:
        # Multipart and other MIME bodies go as they came, line ends fixed.
        passthrough = (content_type, first.get("content-transfer-encoding"),
                       Payload.of(blocks(data, body_start)))
        text = b""
        if attachments:
            raise DataError(f"cannot attach {attachments[0].name} to a "
                            f"{kind} body")
    aliases, catchall = settings.all_aliases(), settings.catchall()
    # Without -t the headers are only shown: a name that resolves to no
    # address (`To: root`) is left out of them rather than stop the mail.
    strict = options.read_recipients
    def every(field: str) -> list[Mailbox]:
        """The addresses of every header of this name, not only the first."""
        found: list[Mailbox] = []
        for name, value in headers:
            if name.lower() == field.lower():
                found += _addresses(value, aliases, catchall, field, strict)
        return found

    to, cc, bcc = every("To"), every("Cc"), every("Bcc")
    listed = expand(parse_list(options.recipients, "the recipients"),
                    aliases, "the recipients", catchall)
    recipients = unique(listed + (to + cc + bcc if options.read_recipients
                                  else []))
    if not recipients:
        raise UsageError("no recipients: none given, none in the headers"
                         if options.read_recipients else
                         "no recipients: none given, and no -t")
    sender = author(settings, first.get("from"), options)
    envelope_sender = sender.addr
    if options.sender and "@" in options.sender:
        envelope_sender = parse_mailbox(options.sender, "-f").addr
    draft = Draft(
        sender=[sender], to=to, cc=cc, subject=first.get("subject", ""),
        body=text, body_type=kind, passthrough=passthrough,
        attachments=list(attachments or []),
        hostname=settings.hostname(),
        extra_headers=[(n, v) for n, v in headers if n.lower() not in HANDLED],
        fallback_charsets=fallbacks)
    message = Message(draft)
    return message, Envelope(envelope_sender, recipients, utf8=message.utf8,
                             eight_bit=message.eight_bit)


def head_of(data: BinaryIO) -> bytes:
    """The start of the message up to its first empty line, or up to
    HEADER_LIMIT bytes of it (then split_header_block finds where the body
    begins, or takes all for headers)."""
    head = b""
    for block in blocks(data):
        head += block
        if HEADER_END.search(head) or len(head) >= HEADER_LIMIT:
            break
    return head


def author(settings: Settings, header: str | None,
           options: Options) -> Mailbox:
    """The From mailbox. A bare local sender (root, `root (Cron Daemon)`)
    becomes the configured address, keeping its display name: relays
    refuse anything else."""
    configured = configured_from(settings)
    mailbox = None
    if header:
        mailboxes = parse_list([header], "the From header")
        if not mailboxes:
            raise DataError(f"the From header {header!r} holds no address")
        mailbox = mailboxes[0]
    elif options.sender:
        mailbox = parse_mailbox(options.sender, "-f")
    # -F names the sender only when the message has no From of its own.
    name = (mailbox.name if header and mailbox else "") or \
        options.full_name or ""
    if mailbox is None or "@" not in mailbox.addr:
        return Mailbox(name or configured.name, configured.addr)
    return Mailbox(name, mailbox.addr)


def configured_from(settings: Settings) -> Mailbox:
    from pymail.send import configured_senders

    senders = configured_senders(settings)
    if not senders:
        raise ConfigError("the From address is empty")
    return senders[0]


def _addresses(value: str | None, aliases: dict[str, list[str]],
               catchall: str | None, where: str,
               strict: bool = True) -> list[Mailbox]:
    if not value:
        return []
    try:
        return expand(parse_list([value], f"the {where} header"), aliases,
                      f"the {where} header", catchall)
    except DataError:
        if strict:
            raise
        log.info("the %s header names no address pymail can resolve; "
                 "left out", where)
        return []


def main(argv: list[str] | None = None, program: str | None = None) -> None:
    """Entry point of pymail-sendmail."""
    args = sys.argv[1:] if argv is None else argv
    if argv is None:
        steady_streams()
    name = program or Path(sys.argv[0]).name
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if args[:1] in (["--help"], ["-h"]):
        print(USAGE)
        sys.exit(0)
    try:
        code = run(name, args)
    except UsageError as error:
        print(f"sendmail: {error.line()}", file=sys.stderr)
        code = EX_USAGE
    except PymailError as error:
        print(f"pymail: {error.line()}", file=sys.stderr)
        code = error.code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = stdout_gone()
    except Exception:
        if debug:
            raise
        print("pymail: internal error (run with --debug for details)",
              file=sys.stderr)
        code = EX_SOFTWARE
    sys.exit(code)
