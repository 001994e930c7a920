"""Messages kept before pymail could build them (an unknown alias, a
missing attachment, a broken mail.rc), and how --resend builds them later.

The entry in dead.letter is readable mail: the command line's From, To,
Cc, Subject, -C and -M as headers, then, after an empty line, stdin as it
came (with -q's text put where pymail puts it). Its envelope records the
command line itself, as JSON (see deadletter.REBUILD_HEADER), so that
--resend builds the message exactly as the command would have once the
cause is fixed: the same -t parsing, the same variables, the same
encoding.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from pymail.deadletter import COMMAND_LINE, Kept
from pymail.errors import DataError, PymailError
from pymail.message import Attachment, Message, clean_subject, split_header_block
from pymail.relay import Envelope
from pymail.request import Request
from pymail.send import compose, fail, parse_input, read_quote
from pymail.settings import Settings

MARK = COMMAND_LINE  # see deadletter.REBUILD_HEADER
# The Request fields the JSON holds (attachments and the account have
# envelope lines of their own).
FIELDS = ("to", "cc", "bcc", "subject", "from_", "envelope_sender",
          "body_type", "quote_file", "custom_headers", "read_headers")


def keep_unbuilt(error: PymailError, dead: Path | None, request: Request,
                 body: bytes) -> int:
    """Keep a message that could not be built, for --resend to build once
    the cause is fixed; returns the exit status (see send.fail)."""
    data, fields = _stored(request, body)
    return fail(error, dead, request.envelope_sender or "",
                lambda: [_readable_head(request, fields) + b"\n" + data],
                recipients=[*request.to, *request.cc, *request.bcc],
                rebuild=MARK + json.dumps(fields, separators=(",", ":")),
                attachments=[os.path.abspath(a) for a in request.attach],
                account=request.account)


def _stored(request: Request, body: bytes) -> tuple[bytes, dict[str, Any]]:
    """stdin as it is kept, and the JSON fields. -q's text goes in when it
    can be read (a script may remove the file after); a body that is not
    text goes as base64: dead.letter changes line ends."""
    fields: dict[str, Any] = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in ((n, getattr(request, n)) for n in FIELDS)}
    if request.quote_file:
        fields["quote_file"] = os.path.abspath(request.quote_file)
    if request.quote_file and not _encoded(request, body):
        with suppress(PymailError):  # its error was shown; the file stays
            quote = read_quote(request.quote_file)
            at = 0
            if request.read_headers:
                # After the -t headers, where pymail puts it.
                _, rest = split_header_block(body, strict=False)
                at = len(body) - len(rest)
                if not _blank_ended(body[:at]):  # headers only, no body
                    body += b"\n" if not body or body.endswith(b"\n") \
                        else b"\n\n"
                    at = len(body)
            body = body[:at] + quote + body[at:]
            fields["quote_file"] = None
    # Text survives dead.letter's line ends; other bodies, and text in
    # UTF-16 and such (NULs), go as base64.
    text = request.body_type.lower().startswith("text/") and b"\0" not in body
    if text and request.read_headers and request.body_type == "text/plain":
        headers, _ = split_header_block(body, strict=False)
        types = [v for n, v in headers if n.lower() == "content-type"]
        kind = types[0].partition(";")[0].strip().lower() if types else ""
        text = kind.startswith("text/") or "/" not in kind
    fields["base64"] = not text
    if not text:
        body = base64.encodebytes(body)  # in lines of 76
    return body, fields


def _encoded(request: Request, body: bytes) -> bool:
    """Whether -t's headers give the body a transfer encoding (then -q's
    text cannot go in before it)."""
    if not request.read_headers:
        return False
    headers, _ = split_header_block(body, strict=False)
    return any(name.lower() == "content-transfer-encoding" and
               value.strip().lower() in ("base64", "quoted-printable")
               for name, value in headers)


def _blank_ended(head: bytes) -> bool:
    """Whether a -t header block ends with its empty line."""
    lines = head.split(b"\n")
    return len(lines) >= 2 and lines[-1] == b"" and lines[-2] in (b"", b"\r")


def _readable_head(request: Request, fields: dict[str, Any]) -> bytes:
    """The command line's headers, for whoever reads dead.letter (raw
    UTF-8, each on one line; --resend does not read them)."""
    head = []
    if request.from_:
        head.append(f"From: {clean_subject(request.from_)}")
    head += [f"{name}: {clean_subject(', '.join(given))}"
             for name, given in (("To", request.to), ("Cc", request.cc))
             if given]
    if request.subject or not request.read_headers:
        head.append(f"Subject: {clean_subject(request.subject or '')}")
    head += [clean_subject(field) for field in request.custom_headers]
    if request.body_type.lower() != "text/plain":
        head.append(f"Content-Type: {clean_subject(request.body_type)}")
    if fields["base64"]:
        head.append("Content-Transfer-Encoding: base64")
    joined = "".join(line + "\n" for line in head)
    # Bytes the command line held that are not UTF-8 (a GBK subject) go as
    # they came.
    try:
        return joined.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return joined.encode("utf-8", "replace")


def request_of(rebuild: str, attachments: list[str],
               account: str | None) -> tuple[Request, bool]:
    """The command line recorded, and whether stdin was kept as base64.
    DataError when it is not what pymail writes (an edited file)."""
    fields = _fields(rebuild)

    def texts(name: str) -> tuple[str, ...]:
        value = fields.get(name)
        if not isinstance(value, list):
            raise _unreadable(name)
        return tuple(_text(item, name) for item in value)

    def text(name: str) -> str | None:
        value = fields.get(name)
        return None if value is None else _text(value, name)

    def flag(name: str) -> bool:
        value = fields.get(name)
        if not isinstance(value, bool):
            raise _unreadable(name)
        return value

    for path in [*attachments, text("quote_file") or ""]:
        if "\0" in path:
            raise DataError(f"a recorded file name holds a NUL: {path!r}")
    request = Request(
        texts("to"), cc=texts("cc"), bcc=texts("bcc"),
        subject=text("subject"), from_=text("from_"),
        envelope_sender=text("envelope_sender"),
        quote_file=text("quote_file"),
        custom_headers=texts("custom_headers"),
        body_type=_text(fields.get("body_type"), "body_type"),
        read_headers=flag("read_headers"),
        attach=tuple(attachments), account=account)
    return request, flag("base64")


def _fields(rebuild: str) -> dict[str, Any]:
    try:
        fields = json.loads(rebuild[len(MARK):])
    except (ValueError, RecursionError) as exc:
        raise DataError(f"the recorded command line is not JSON "
                        f"({type(exc).__name__})") from None
    if not isinstance(fields, dict):
        raise DataError("the recorded command line is not a JSON object")
    return fields


def _text(value: Any, name: str) -> str:
    """A string as pymail writes them: the bytes of a command line that
    were not UTF-8 are lone surrogates of U+DC80..U+DCFF, no others."""
    if not isinstance(value, str):
        raise _unreadable(name)
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise _unreadable(name) from None
    return value


def _unreadable(name: str) -> DataError:
    return DataError(f"the recorded command line's {name} is not what "
                     "pymail writes")


def reads_files(kept: Kept) -> bool:
    """Whether building the message reads files by the paths it names
    (when the record cannot be read, it is taken to)."""
    if kept.attachments:
        return True
    try:
        return _fields(kept.rebuild or "").get("quote_file") is not None
    except DataError:
        return True


def build(settings: Settings, kept: Kept,
          opened: list[Attachment]) -> tuple[Message, Envelope]:
    """The message as the command would have built it, from a kept entry;
    attachments opened are added to opened."""
    request, encoded = request_of(kept.rebuild or "", kept.attachments,
                                  kept.account)
    message = kept.message  # CRLF line ends
    # Past the readable head, which may have no line at all (-t alone).
    body = message[2:] if message.startswith(b"\r\n") else \
        message.partition(b"\r\n\r\n")[2]
    if encoded:
        try:
            body = binascii.a2b_base64(body)
        except binascii.Error as exc:
            raise DataError("the kept message's base64 is broken") from exc
    parsed = parse_input(request, settings, body)
    return compose(request, settings, parsed, opened)
