"""Building the message and writing it as a stream of CRLF lines.

Headers are made and folded by the standard `email` package. Bodies are
encoded here, because what scripts pipe in (colour codes, bare carriage
returns, NUL, logs in GBK, 5,000-character lines) must arrive byte for byte
and the `email` package's text encoder treats some of it as line breaks.
The message is written part by part, attachments base64-encoded in slices
read from their files, so an attachment never has to sit in memory whole.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import io
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from pymail import __version__
from pymail.addresses import Mailbox
from pymail.errors import DataError, NoInputError
from pymail.files import open_regular, spooled
from pymail.lines import blocks, crlf_stream, line_pieces

# 7bit, not 8bit: the message must pass any relay, with or without 8BITMIME.
POLICY = email_policy.SMTP.clone(cte_type="7bit")
# Headers holding a non-ASCII address go out as UTF-8 (RFC 6532).
POLICY_UTF8 = email_policy.SMTPUTF8.clone(cte_type="7bit")
CRLF = b"\r\n"
# RFC 5321, 4.5.3.1.6: 998 octets of text per line, then CRLF.
MAX_LINE = 998
# 57 input bytes make one 76-character base64 line (RFC 2045, 6.8).
BASE64_LINE = 57
BASE64_SLICE = BASE64_LINE * 1024
# A file on no disk block that claims at most this many bytes may be a
# kernel pseudo-file, whose length stat does not tell (/proc says 0, /sys
# 4096): such a file is read when it is opened.
PSEUDO_FILE = 1 << 16
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators:
# none of them may reach a header, where each could read as a line break.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Header fields whose value is free text, encoded by pymail itself (see
# unstructured_line); the others are left to the email package.
STRUCTURED = frozenset({
    "from", "to", "cc", "bcc", "sender", "reply-to", "date", "message-id",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding", "content-disposition", "return-path",
    "received", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "mail-followup-to", "mail-reply-to",
})
HEADER_WIDTH = 78
MIME_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*")
# Headers that only pymail writes: -C cannot add them, -t reads them.
OWN_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "mime-version", "content-type",
    "content-transfer-encoding",
})
FIELD_NAME = re.compile(r"[!-9;-~]+")


# Text codecs Python has that no mail names: they would turn `\x00` in the
# text into a NUL, or the like.
NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "idna",
                          "punycode", "undefined"})


def usable_charset(name: str | None) -> str | None:
    """A codec name Python knows, or None (unknown, ASCII or UTF-8)."""
    if not name:
        return None
    try:
        codec = codecs.lookup(name).name
        "".encode(codec)  # LookupError for base64_codec, rot13 and such
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    if codec in ("ascii", "utf-8") or codec in NOT_CHARSETS:
        return None
    return codec


def locale_charset(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The charset named by LC_ALL, LC_CTYPE or LANG (zh_CN.GBK -> gbk).

    Read from the variables rather than from setlocale, so that it does not
    depend on which locales happen to be installed. When LANG names a
    locale that is not installed, Python itself sets LC_CTYPE=C.UTF-8 (PEP
    538): that says nothing of the input (UTF-8 is tried first anyway), so
    LANG is read past it.
    """
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = environ.get(name)
        if name == "LC_CTYPE" and value in ("C.UTF-8", "C.utf8"):
            continue
        if value:
            charset = value.partition(".")[2].partition("@")[0]
            return usable_charset(charset)
    return None


def decode_text(data: bytes, fallbacks: list[str] | tuple[str, ...] = ()) -> str:
    """Text from bytes: UTF-8, else each fallback charset, else Latin-1,
    which maps every byte to a character so that nothing is lost."""
    for charset in ("utf-8", *fallbacks):
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def clean_subject(subject: str) -> str:
    """A newline in the subject becomes a space, as s-nail does it."""
    text = subject.replace("\r\n", "\n")
    return " ".join(CONTROL.sub(" ", line) for line in text.split("\n")).strip()


def clean_name(name: str) -> str:
    """An attachment name without control characters (they become _)."""
    return CONTROL.sub("_", name)


# Bodies -------------------------------------------------------------------

def canonical_text(text: str) -> bytes:
    """UTF-8 with CRLF line ends; LF and CRLF are line ends, a lone CR is
    data (a progress bar), and the text ends with a line end."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return b"".join(line.encode("utf-8") + CRLF for line in lines)


def is_7bit(data: bytes) -> bool:
    """ASCII, no NUL, no lone CR, every line within the SMTP limit."""
    if not data.isascii() or b"\0" in data:
        return False
    lines = data.split(CRLF)
    if any(b"\r" in line or b"\n" in line for line in lines):
        return False
    return max((len(line) for line in lines), default=0) <= MAX_LINE


def quoted_printable(data: bytes) -> bytes:
    """Quoted-printable with CRLF hard breaks and 76-character lines;
    a lone CR, NUL and escape codes are encoded, so they survive."""
    lines = data.split(CRLF)
    ends_with_break = lines[-1] == b""
    if ends_with_break:
        lines.pop()
    encoded = [binascii.b2a_qp(line, quotetabs=False, istext=False)
               .replace(b"=\n", b"=\r\n") for line in lines]
    result = CRLF.join(encoded)
    # Without a final line break the last line ends in a soft break.
    return result + (CRLF if ends_with_break else b"=" + CRLF)


def base64_body(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i:i + 76] + CRLF for i in range(0, len(encoded), 76))


def encode_body(data: bytes, *, text: bool) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded bytes): 7bit when that is safe,
    else the shorter of quoted-printable and base64 (always base64 for data
    that is not text)."""
    if not text:
        return "base64", base64_body(data)
    if is_7bit(data):
        return "7bit", data
    qp = quoted_printable(data)
    b64 = base64_body(data)
    return ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)


# Attachments -------------------------------------------------------------

@dataclass(repr=False, eq=False)
class Attachment:
    """A file to attach, opened and checked before any connection is made.

    Its length is taken when it is opened, and that many bytes are sent
    however the file changes later, so that Message.size() is exact.
    """

    path: Path
    name: str
    content_type: str
    stream: BinaryIO
    headers: bytes = b""
    size: int = 0

    @classmethod
    def open(cls, name: str, fallbacks: tuple[str, ...] = ()) -> Attachment:
        path = Path(name)
        if path.is_dir():
            raise NoInputError(f"attachment {name}: is a directory")
        try:
            # A FIFO or a device would block or never end: files only.
            stream, size = measured(
                os.fdopen(open_regular(path, os.O_RDONLY), "rb"))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise NoInputError(f"attachment {name}: {reason}") from exc
        # A name made on a GBK or Latin-1 system is not UTF-8: decode it.
        display = clean_name(decode_text(os.fsencode(path.name), fallbacks))
        import mimetypes  # attachments only

        content_type, encoding = mimetypes.guess_type(display, strict=False)
        if content_type is None or encoding is not None:
            content_type = "application/octet-stream"
        attachment = cls(path, display, content_type, stream, size=size)
        attachment.headers = attachment_headers(display, content_type)
        return attachment

    def lines(self) -> Iterator[bytes]:
        """The file base64-encoded; a read error is the user's to know."""
        try:
            yield from base64_lines(self.stream, self.size)
        except OSError as exc:
            raise NoInputError(f"attachment {self.path}: cannot be read: "
                               f"{exc.strerror or exc}") from exc
        except EOFError as exc:
            raise NoInputError(f"attachment {self.path}: the file became "
                               "shorter while it was sent") from exc

    def close(self) -> None:
        self.stream.close()


def measured(stream: BinaryIO) -> tuple[BinaryIO, int]:
    """The stream to send and its length; a pseudo-file is read now."""
    info = os.fstat(stream.fileno())
    if info.st_blocks or info.st_size > PSEUDO_FILE:
        return stream, info.st_size
    with stream:
        data = stream.read()
    return io.BytesIO(data), len(data)


def base64_length(size: int) -> int:
    """The length of base64_body() of `size` bytes, CRLFs included."""
    lines, rest = divmod(size, BASE64_LINE)
    last = 4 * -(-rest // 3) + len(CRLF) if rest else 0
    return lines * (BASE64_LINE * 4 // 3 + len(CRLF)) + last


def attachment_headers(name: str, content_type: str) -> bytes:
    """Content-Type with name= and Content-Disposition with filename=.

    A non-ASCII name goes in filename* (RFC 2231), which current clients
    read, and RFC 2047-encoded in name=, which older ones read.
    """
    plain = name.isascii() and "=?" not in name
    if name.isascii() and not plain:
        # Looks like an encoded word: RFC 2231 form, which nothing decodes
        # as RFC 2047 (the email package would write it as it is).
        value = "utf-8''" + quote(name, safe="")
        disposition = (f"Content-Disposition: attachment;\r\n"
                       f" filename*={value}\r\n").encode("ascii")
    else:
        part = EmailMessage(policy=POLICY)
        part.add_header("Content-Disposition", "attachment", filename=name)
        disposition = header_bytes(part)
    disposition += b"Content-Transfer-Encoding: base64\r\n"
    if plain:
        kind = EmailMessage(policy=POLICY)
        kind["Content-Type"] = content_type
        kind.set_param("name", name)
        first = header_bytes(kind)
    else:
        words = "\r\n ".join(encoded_words(name, 75))
        first = f'Content-Type: {content_type};\r\n name="{words}"\r\n'.encode()
    return first + disposition


def base64_lines(stream: BinaryIO, size: int) -> Iterator[bytes]:
    """Base64 of the first `size` bytes of a file in 76-character CRLF
    lines, one slice at a time; EOFError if the file is shorter."""
    stream.seek(0)
    while size:
        data = _read_slice(stream, min(size, BASE64_SLICE))
        size -= len(data)
        # Slices are a multiple of 57 bytes, so only the last one is short.
        yield base64_body(data)


def _read_slice(stream: BinaryIO, want: int) -> bytes:
    """Read `want` bytes; EOFError if the file ends first."""
    data = b""
    while len(data) < want:
        more = stream.read(want - len(data))
        if not more:
            raise EOFError
        data += more
    return data


@dataclass
class Payload:
    """A body sent from a file as it is: the sendmail entry's MIME body,
    its line ends made CRLF."""

    stream: BinaryIO
    size: int
    eight_bit: bool = False  # holds bytes over 127: BODY=8BITMIME

    @classmethod
    def of(cls, chunks: Iterable[bytes]) -> Payload:
        """The chunks, every line end CRLF, held in a file (see spooled)."""
        eight_bit = False

        def noted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal eight_bit
            for chunk in chunks:
                eight_bit = eight_bit or not chunk.isascii()
                yield chunk
        stream = spooled(crlf_stream(noted(chunks)))
        size = stream.seek(0, os.SEEK_END)
        return cls(stream, size, eight_bit)

    def chunks(self) -> Iterator[bytes]:
        """The body, in pieces that end at line ends."""
        for piece, _ in line_pieces(blocks(self.stream, 0, self.size)):
            yield piece


# The message --------------------------------------------------------------

@dataclass(repr=False, eq=False)
class Draft:
    """What the user asked to send."""

    sender: list[Mailbox]
    to: list[Mailbox]
    cc: list[Mailbox] = field(default_factory=list)
    subject: str = ""
    body: bytes = b""
    body_type: str = "text/plain"
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: list[Mailbox] = field(default_factory=list)
    sender_header: Mailbox | None = None
    organization: str | None = None
    hostname: str = "localhost"
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    fallback_charsets: tuple[str, ...] = ()
    # A MIME body to send as it is (Content-Type, transfer encoding, body):
    # what the sendmail entry reads when the message is not plain text.
    passthrough: tuple[str, str | None, Payload] | None = None


class Message:
    """A message ready to be written: headers and parts."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.utf8 = any(not m.addr.isascii() for m in self._mailboxes())
        self.policy = POLICY_UTF8 if self.utf8 else POLICY
        # (name, value) in order; structured values are the email package's
        # header objects, free text is kept as given (see unstructured_line).
        self.fields: list[tuple[str, Any]] = []
        self.boundary = "=_pymail_" + secrets.token_hex(12)
        self.text_headers, self.text_payload = self._body_part()
        self._set_headers()

    def _mailboxes(self) -> list[Mailbox]:
        draft = self.draft
        extra = [draft.sender_header] if draft.sender_header else []
        return draft.sender + draft.to + draft.cc + draft.reply_to + extra

    @property
    def eight_bit(self) -> bool:
        """Whether the body goes with 8-bit bytes (a sendmail MIME body
        passed through as it came); pymail's own encoding is 7-bit."""
        passthrough = self.draft.passthrough
        return passthrough is not None and passthrough[2].eight_bit

    @property
    def has_text(self) -> bool:
        """False when the body is empty and there are attachments: then only
        the attachments are sent."""
        return bool(self.draft.body) or not self.draft.attachments

    def _body_part(self) -> tuple[list[tuple[str, str]], bytes | Payload]:
        draft = self.draft
        if draft.passthrough is not None:
            content_type, encoding, body = draft.passthrough
            fields = [("Content-Type", content_type)]
            if encoding:
                fields.append(("Content-Transfer-Encoding", encoding))
            return fields, body
        kind = draft.body_type.lower()
        if not MIME_TYPE.fullmatch(kind):
            raise DataError(f"-M {draft.body_type!r} is not a MIME type "
                            "(like text/html)")
        if not kind.startswith("text/"):
            cte, payload = encode_body(draft.body, text=False)
            return [("Content-Type", kind),
                    ("Content-Transfer-Encoding", cte)], payload
        text = decode_text(draft.body, draft.fallback_charsets)
        data = canonical_text(text)
        charset = "us-ascii" if data.isascii() else "utf-8"
        cte, payload = encode_body(data, text=True)
        return [("Content-Type", f'{kind}; charset="{charset}"'),
                ("Content-Transfer-Encoding", cte)], payload

    def _set(self, name: str, value: str) -> None:
        shown = value if len(value) < 80 else value[:77] + "..."
        if CONTROL.search(value.replace("\t", " ")):
            raise DataError(f"cannot put {shown!r} in the {name} header: "
                            "it holds a line break or control character")
        if name.lower() not in STRUCTURED:
            field = (name, value)
            folded = unstructured_line(name, value)
        else:
            try:
                field = self.policy.header_store_parse(name, value)
                folded = self.policy.fold_binary(*field)
            except Exception as exc:  # noqa: BLE001 - see below
                # The email package's header parser fails in many ways on
                # odd values (IndexError, AttributeError, UnicodeError...);
                # any of them means this value cannot be sent.
                raise DataError(f"cannot put {shown!r} in the {name} header: "
                                f"{exc or type(exc).__name__}") from exc
        check_folded(name, folded)
        self.fields.append(field)

    def _set_headers(self) -> None:
        draft = self.draft
        first = draft.sender[0]
        domain = first.addr.rpartition("@")[2] or draft.hostname
        # Headers given with -C or -t win over the ones pymail would make
        # from variables; From, To, Cc, Subject and MIME are always pymail's.
        given = {name.lower() for name, _ in draft.extra_headers}

        def own(name: str, value: str | None) -> None:
            if value and name.lower() not in given:
                self._set(name, value)

        own("Date", format_datetime(datetime.now().astimezone()))
        self._set("From", ", ".join(m.header() for m in draft.sender))
        sender = draft.sender_header
        if sender is None and len(draft.sender) > 1:
            sender = first  # RFC 5322, 3.6.2: several authors need a Sender
        own("Sender", sender.header() if sender else None)
        own("Reply-To", ", ".join(m.header() for m in draft.reply_to))
        own("To", ", ".join(m.header() for m in draft.to))
        own("Cc", ", ".join(m.header() for m in draft.cc))
        self._set("Subject", clean_subject(draft.subject))
        own("Message-ID", make_msgid(domain=domain))
        if draft.organization:
            own("Organization", clean_subject(draft.organization))
        for name, value in draft.extra_headers:
            self._set(name, value)
        own("User-Agent", f"pymail/{__version__}")
        self._set("MIME-Version", "1.0")
        if draft.attachments:
            self._set("Content-Type",
                      f'multipart/mixed; boundary="{self.boundary}"')
        else:
            for name, value in self.text_headers:
                self._set(name, value)

    @property
    def message_id(self) -> str:
        return next(str(v) for n, v in self.fields if n == "Message-ID")

    def header_block(self) -> bytes:
        """The header lines; free-text fields are encoded by pymail."""
        return b"".join(
            self.policy.fold_binary(name, value)
            if name.lower() in STRUCTURED else unstructured_line(name, value)
            for name, value in self.fields)

    def chunks(self, with_attachments: bool = True) -> Iterator[bytes]:
        """The message as bytes; each chunk ends at the end of a line (but
        for the parts of a line over 64 KiB in a sendmail entry's body).
        Without attachments (their parts left empty) is for keeping what
        can be kept when an attachment cannot be read."""
        for piece in self._layout():
            if isinstance(piece, bytes):
                yield piece
            elif isinstance(piece, Payload):
                yield from piece.chunks()
            elif with_attachments:
                yield from piece.lines()

    def size(self) -> int:
        """The length of the message in bytes, counted without reading or
        encoding the attachments."""
        return sum(len(piece) if isinstance(piece, bytes) else
                   piece.size if isinstance(piece, Payload) else
                   base64_length(piece.size) for piece in self._layout())

    def _layout(self) -> Iterator[bytes | Payload | Attachment]:
        """The message, with each file standing for its body."""
        yield self.header_block() + CRLF
        if not self.draft.attachments:
            yield self.text_payload
            return
        # The CRLF before each boundary belongs to the delimiter (RFC 2046,
        # 5.1.1), so every part keeps its own last line break.
        dash = b"--" + self.boundary.encode("ascii")
        opening = dash + CRLF
        if self.has_text:
            part = b"".join(f"{name}: {value}\r\n".encode()
                            for name, value in self.text_headers)
            yield opening + part + CRLF
            yield self.text_payload
            opening = CRLF + opening
        for attachment in self.draft.attachments:
            yield opening + attachment.headers + CRLF
            yield attachment
            opening = CRLF + dash + CRLF
        yield CRLF + dash + b"--" + CRLF

    def as_bytes(self) -> bytes:
        """The whole message; for tests and small messages only."""
        return b"".join(self.chunks())


def check_folded(name: str, folded: bytes) -> None:
    """The folded header must be one field: continuation lines start with
    a blank, nothing but CRLF ends a line, no line is over 998 octets. This
    holds whatever the email package decoded from encoded words."""
    lines = folded.split(CRLF)
    if lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines):
        if b"\r" in line or b"\n" in line or b"\0" in line or \
                (number and line[:1] not in (b" ", b"\t")) or \
                len(line) > MAX_LINE:
            raise DataError(f"the {name} header cannot be written safely "
                            "(a line break, NUL, or a line over 998 octets)")


def unstructured_line(name: str, value: str) -> bytes:
    """A free-text header (Subject, Organization, X-...) as CRLF lines.

    Plain ASCII is folded at spaces only, so that unfolding gives back every
    space. Anything else (non-ASCII, text that looks like an encoded word, a
    word too long to fold) becomes RFC 2047 encoded words, each a whole
    number of characters, so that the text survives exactly. The email
    package's folder loses the space between encoded words.
    """
    text = str(value)
    words = text.split(" ")
    plain = (text.isascii() and "=?" not in text and
             all(len(w) <= HEADER_WIDTH - len(name) - 2 for w in words))
    if not plain:
        first = HEADER_WIDTH - len(name) - 2
        folded = "\r\n ".join(encoded_words(text, first))
        return f"{name}: {folded}".encode("ascii") + CRLF
    lines = [f"{name}:"]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > HEADER_WIDTH and \
                lines[-1].strip(" ") not in ("", f"{name}:"):
            lines.append("")
        lines[-1] += " " + word
    return "\r\n".join(lines).encode("ascii") + CRLF


def encoded_words(text: str, first: int) -> list[str]:
    """RFC 2047 B-encoded words of whole characters: the first at most
    `first` long, the others at most 75 (RFC 2047, 2)."""
    def word(chunk: str) -> str:
        return "=?utf-8?b?" + base64.b64encode(chunk.encode()).decode() + "?="

    words: list[str] = []
    current = ""
    for char in text:
        limit = first if not words else 75
        if current and len(word(current + char)) > limit:
            words.append(word(current))
            current = ""
        current += char
    words.append(word(current))
    return words


def header_bytes(message: EmailMessage) -> bytes:
    """The header lines of message, folded and encoded, CRLF-terminated."""
    return b"".join(POLICY.fold_binary(name, value)
                    for name, value in message.items())


def check_field(line: str, where: str) -> tuple[str, str]:
    """Split `Field: value` (from -C or a -t header), refusing what would
    add a header line or replace one pymail writes."""
    name, colon, value = line.partition(":")
    name = name.strip()
    if not colon or not FIELD_NAME.fullmatch(name):
        raise DataError(f"{where}: {line!r} is not a `Field: value` header")
    if any(c in value for c in "\r\n\0"):
        raise DataError(f"{where}: the value of {name} holds a line break "
                        "or NUL")
    return name, value.strip()


def split_header_block(data: bytes, fallbacks: tuple[str, ...] = (), *,
                       strict: bool = True
                       ) -> tuple[list[tuple[str, str]], bytes]:
    """For -t: the header lines at the start of data, and the body after
    the first empty line. Folded lines are unfolded; encoded words are
    decoded. A line that is neither a header nor a continuation is an error
    naming its number; not strict (sendmail), it starts the body."""
    headers: list[tuple[str, str]] = []
    position = 0
    number = 0
    while position < len(data):
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end + 1
        raw = data[position:end]
        position = end
        number += 1
        line = decode_text(raw, fallbacks).rstrip("\r\n")
        if not strict:
            # sendmail takes what cron and daemons write: a stray CR or NUL
            # inside a header line is a space there, not the end of the
            # headers (which would turn Cc and Bcc into body text).
            line = line.replace("\r", " ").replace("\0", " ")
        # Only an empty line ends the headers: a line of blanks (spaces,
        # tabs, form feeds) after a header continues it, adding nothing.
        if not line.strip():
            if line and headers:
                continue
            break
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        try:
            headers.append(check_field(line, f"-t header line {number}"))
        except DataError:
            if strict:
                raise
            position -= len(raw)
            break
    else:
        position = len(data)
    return [(name, decoded_header(name, value)) for name, value in headers], \
        data[position:]


def transfer_decoded(body: bytes, encoding: str) -> bytes:
    """A body with its Content-Transfer-Encoding (base64, quoted-printable)
    undone; 7bit, 8bit and binary bodies are as they are."""
    import binascii
    import quopri

    encoding = encoding.strip().lower()
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        if encoding == "quoted-printable":
            return quopri.decodestring(body)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"the body is not valid {encoding}") from exc
    return body


def body_text(body: bytes, content_type: str, encoding: str,
              fallbacks: tuple[str, ...]) -> str:
    """A text body given with its headers: its transfer encoding undone,
    read in its charset (else as stdin is)."""
    body = transfer_decoded(body, encoding)
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        charset = usable_charset(value.strip().strip('"')) \
            if key.strip().lower() == "charset" else None
        if charset:
            # The charset named comes first: ISO-2022-JP text is ASCII,
            # Latin-1 text may look like UTF-8.
            with suppress(UnicodeDecodeError):
                return body.decode(charset)
    return decode_text(body, fallbacks)


def decoded_header(name: str, value: str) -> str:
    """A header value with RFC 2047 encoded words decoded."""
    if "=?" not in value:
        return value
    try:
        return str(email_policy.default.header_factory(name, value))
    except Exception:  # noqa: BLE001 - the parser fails in many ways (see
        return value   # Message._set): the value is then taken as it is
