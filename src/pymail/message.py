"""Building the message and writing it as a stream of CRLF lines.

The headers and the text part are made by the standard `email` package. The
message is written part by part, attachments base64-encoded in slices read
from their files, so an attachment never has to sit in memory whole.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import BinaryIO

from pymail import __version__
from pymail.addresses import Mailbox
from pymail.errors import DataError, NoInputError

# 7bit, not 8bit: the body must pass any relay, with or without 8BITMIME.
POLICY = email_policy.SMTP.clone(cte_type="7bit")
CRLF = b"\r\n"
# 57 input bytes make one 76-character base64 line (RFC 2045, 6.8).
BASE64_LINE = 57
BASE64_SLICE = BASE64_LINE * 1024


@dataclass
class Attachment:
    """A file to attach, opened before any connection is made."""

    path: Path
    name: str
    content_type: str
    stream: BinaryIO
    headers: bytes = b""

    @classmethod
    def open(cls, name: str) -> Attachment:
        path = Path(name)
        if path.is_dir():
            raise NoInputError(f"attachment {name}: is a directory")
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise NoInputError(f"attachment {name}: {reason}") from exc
        # A name from a GBK or Latin-1 system is not UTF-8: decode it.
        display = decode_text(os.fsencode(path.name))
        content_type, encoding = mimetypes.guess_type(display)
        if content_type is None or encoding is not None:
            content_type = "application/octet-stream"
        attachment = cls(path, display, content_type, stream)
        attachment.headers = header_bytes(attachment_headers(attachment))
        return attachment

    def close(self) -> None:
        self.stream.close()


@dataclass
class Draft:
    """What the user asked to send."""

    sender: Mailbox
    to: list[Mailbox]
    cc: list[Mailbox] = field(default_factory=list)
    subject: str = ""
    body: bytes = b""
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: list[Mailbox] = field(default_factory=list)
    sender_header: Mailbox | None = None
    organization: str | None = None
    hostname: str = "localhost"


def decode_text(data: bytes) -> str:
    """Text from bytes: UTF-8, else Latin-1, which keeps every byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_body(data: bytes) -> str:
    """The body's text, with CRLF line ends read as line ends."""
    return decode_text(data).replace("\r\n", "\n")


def clean_subject(subject: str) -> str:
    """A newline in the subject becomes a space, as s-nail does it."""
    return " ".join(subject.replace("\0", " ").splitlines()).strip()


class Message:
    """A message ready to be written: headers and parts."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.headers = EmailMessage(policy=POLICY)
        self.text_part = self._text_part(draft.body)
        self.boundary = "=_pymail_" + secrets.token_hex(12)
        self._set_headers()

    def _text_part(self, body: bytes) -> EmailMessage:
        text = decode_body(body)
        part = EmailMessage(policy=POLICY)
        charset = "us-ascii" if text.isascii() else "utf-8"
        part.set_content(text, charset=charset)
        del part["MIME-Version"]
        return part

    def _set(self, name: str, value: str) -> None:
        try:
            self.headers[name] = value
        except (ValueError, IndexError) as exc:
            raise DataError(f"cannot put {value!r} in the {name} header: "
                            f"{exc}") from exc

    def _set_headers(self) -> None:
        draft = self.draft
        domain = draft.sender.addr.rpartition("@")[2] or draft.hostname
        self._set("Date", format_datetime(datetime.now().astimezone()))
        self._set("From", draft.sender.header())
        if draft.sender_header:
            self._set("Sender", draft.sender_header.header())
        if draft.reply_to:
            self._set("Reply-To", ", ".join(m.header() for m in draft.reply_to))
        if draft.to:
            self._set("To", ", ".join(m.header() for m in draft.to))
        if draft.cc:
            self._set("Cc", ", ".join(m.header() for m in draft.cc))
        self._set("Subject", clean_subject(draft.subject))
        self._set("Message-ID", make_msgid(domain=domain))
        if draft.organization:
            self._set("Organization", draft.organization)
        self._set("User-Agent", f"pymail/{__version__}")
        self._set("MIME-Version", "1.0")
        if draft.attachments:
            self._set("Content-Type",
                      f'multipart/mixed; boundary="{self.boundary}"')
        else:
            for name, value in self.text_part.items():
                self._set(name, value)

    @property
    def message_id(self) -> str:
        return str(self.headers["Message-ID"])

    def chunks(self) -> Iterator[bytes]:
        """The message as bytes; each chunk ends at the end of a line."""
        yield header_bytes(self.headers) + CRLF
        if not self.draft.attachments:
            yield payload_bytes(self.text_part)
            return
        # The CRLF before each boundary belongs to the delimiter (RFC 2046,
        # 5.1.1), so the text keeps its own last line break.
        dash = b"--" + self.boundary.encode("ascii")
        yield dash + CRLF + header_bytes(self.text_part) + CRLF
        yield payload_bytes(self.text_part)
        for attachment in self.draft.attachments:
            yield CRLF + dash + CRLF + attachment.headers + CRLF
            yield from base64_lines(attachment.stream)
        yield CRLF + dash + b"--" + CRLF

    def as_bytes(self) -> bytes:
        """The whole message; for tests and small messages only."""
        return b"".join(self.chunks())


def header_bytes(message: EmailMessage) -> bytes:
    """The header lines of message, folded and encoded, CRLF-terminated."""
    return b"".join(POLICY.fold_binary(name, value)
                    for name, value in message.items())


def payload_bytes(part: EmailMessage) -> bytes:
    """The encoded body of a single part (7bit, quoted-printable, base64)."""
    payload = part.get_payload()
    assert isinstance(payload, str)
    data = payload.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii")
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


def attachment_headers(attachment: Attachment) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    part["Content-Type"] = attachment.content_type
    part.set_param("name", attachment.name)
    part.add_header("Content-Disposition", "attachment",
                    filename=attachment.name)
    part["Content-Transfer-Encoding"] = "base64"
    return part


def base64_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Base64 of a file in 76-character CRLF lines, one slice at a time."""
    stream.seek(0)
    while True:
        data = _read_slice(stream)
        if not data:
            return
        # Slices are a multiple of 57 bytes, so only the last one is short.
        encoded = base64.b64encode(data)
        yield b"".join(encoded[i:i + 76] + CRLF
                       for i in range(0, len(encoded), 76))


def _read_slice(stream: BinaryIO) -> bytes:
    """Read BASE64_SLICE bytes, or fewer only at the end of the file."""
    data = b""
    while len(data) < BASE64_SLICE:
        more = stream.read(BASE64_SLICE - len(data))
        if not more:
            break
        data += more
    return data
