"""The flow of one message: settings, body, message, relay, and what is kept.

Every failure after the body was read keeps the message in dead.letter
before it is reported, so nothing a script pipes into pymail is lost.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from pymail import delivery
from pymail.addresses import Mailbox, expand, parse_list, parse_mailbox, unique
from pymail.cli import Request, default_user
from pymail.errors import ConfigError, PymailError
from pymail.message import Attachment, Draft, Message, clean_subject
from pymail.relay import Envelope, deliver
from pymail.settings import Settings, home_dir, resolve_variables

log = logging.getLogger(__name__)

# Names some files use that pymail accepts and explains under -v.
NO_EFFECT = {
    "sendwait": "pymail always waits for the relay",
    "sendcharsets": "pymail sends UTF-8 (or US-ASCII when that is enough)",
}


def send_request(request: Request) -> int:
    """Send what the request asks for; returns the exit status."""
    try:
        settings = resolve_variables(read_system=request.read_system,
                                     assignments=list(request.assign))
    except ConfigError as error:
        # The configuration is broken, but what was piped in must survive.
        body = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
        return fail(error, default_dead_letter(), "",
                    [fallback_entry(request, body)] if body else None)
    for note in settings.notes:
        log.info("%s", note)
    for name, why in NO_EFFECT.items():
        if settings.flag(name):
            log.info("%s is accepted: %s", name, why)

    body = read_body(settings)
    if request.skip_empty and not body.strip() and not request.attach:
        log.info("empty message not sent (-E)")
        return 0

    dead = settings.dead_letter()
    attachments: list[Attachment] = []
    try:
        sender, envelope_sender = sender_of(request, settings)
        for name in request.attach:
            attachments.append(Attachment.open(name))
        draft, recipients = make_draft(request, settings, sender, body,
                                       attachments)
        message = Message(draft)
    except PymailError as error:
        close_all(attachments)
        return fail(error, dead, "", [fallback_entry(request, body)])
    envelope = Envelope(envelope_sender, recipients)
    try:
        reply = deliver(settings, envelope, message.chunks())
    except PymailError as error:
        code = fail(error, dead, envelope.sender, message.chunks())
        close_all(attachments)
        return code
    close_all(attachments)
    log.info("delivered %s: %s", message.message_id, reply)
    return 0


def fail(error: PymailError, dead: Path | None, sender: str,
         chunks: Iterable[bytes] | None) -> int:
    """Keep the message, then print one line; returns the exit status."""
    where = ""
    if chunks is not None:
        try:
            where = "; " + delivery.keep(dead, sender, chunks)
        except PymailError as keep_error:
            print(f"pymail: {error.line()}", file=sys.stderr)
            print(f"pymail: {keep_error.line()}", file=sys.stderr)
            return keep_error.code
    print(f"pymail: {error.line()}{where}", file=sys.stderr)
    log.debug("details", exc_info=error)
    return error.code


def read_body(settings: Settings) -> bytes:
    """stdin as bytes; at a terminal, with `dot`, a lone `.` line ends it."""
    stream = sys.stdin.buffer
    if not sys.stdin.isatty():
        return stream.read()
    lines = []
    for line in stream:
        if settings.flag("dot") and line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def sender_of(request: Request, settings: Settings) -> tuple[Mailbox, str]:
    """The From mailbox and the envelope sender."""
    if request.from_:
        sender = parse_mailbox(request.from_, "-r")
    elif settings.text("from"):
        sender = parse_list([settings.text("from") or ""],
                            f"from ({settings.origin('from')})")[0]
    else:
        _, user, _ = settings.auth()
        if user and "@" in user:
            # Providers reject a MAIL FROM other than the login.
            sender = parse_mailbox(user, "smtp-auth-user")
        else:
            sender = Mailbox("", f"{default_user()}@{settings.hostname()}")
    if "@" not in sender.addr:
        sender = Mailbox(sender.name, f"{sender.addr}@{settings.hostname()}")
    envelope = sender.addr
    if request.envelope_sender:
        envelope = parse_mailbox(request.envelope_sender, "-f").addr
    return sender, envelope


def make_draft(request: Request, settings: Settings, sender: Mailbox,
               body: bytes, attachments: list[Attachment]
               ) -> tuple[Draft, list[str]]:
    """The draft and its envelope recipients (To, Cc and Bcc, each once)."""
    aliases = settings.aliases
    to = expand(parse_list(request.to, "the recipients"), aliases, "To")
    cc = expand(parse_list(request.cc, "-c"), aliases, "-c")
    bcc = expand(parse_list(request.bcc, "-b"), aliases, "-b")
    reply_to = parse_list([settings.text("replyto", "reply-to") or ""],
                          "replyto")
    sender_var = settings.text("sender")
    draft = Draft(
        sender=sender, to=to, cc=cc, subject=request.subject or "",
        body=body, attachments=attachments, reply_to=reply_to,
        sender_header=parse_mailbox(sender_var, "sender") if sender_var
        else None,
        organization=settings.text("ORGANIZATION"),
        hostname=settings.hostname())
    return draft, unique(to + cc + bcc)


def fallback_entry(request: Request, body: bytes) -> bytes:
    """A minimal message holding the body, when no real one could be built."""
    subject = clean_subject(request.subject or "")
    head = "Subject: " + subject.encode("ascii", "replace").decode() + "\n"
    return head.encode() + b"\n" + body


def default_dead_letter() -> Path:
    name = os.environ.get("DEAD")
    return Path(os.path.expanduser(name)) if name else home_dir() / "dead.letter"


def close_all(attachments: list[Attachment]) -> None:
    for attachment in attachments:
        attachment.close()
