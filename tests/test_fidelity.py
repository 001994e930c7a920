"""Fidelity: whatever goes in, every message reads right in a mail client.

A table of named cases sends through the real test relay and checks what a
client would see (subject, text, types, charsets, attachments, envelope) and
the rules of the wire (CRLF only, no line over 998 octets, 8-bit bytes only
in an SMTPUTF8 transaction). Hypothesis then throws arbitrary text, subjects
and file names at the message builder, and a few at the relay.

Expectations are worked out here from the specification, not copied from
pymail: decoding chains, normalised text, IDNA 2008 with the `idna` package.
"""

from __future__ import annotations

import base64
import email
import email.policy
import mailbox
import mimetypes
import os
import random
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import idna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Result, header_names, recipe
from pymail.addresses import Mailbox
from pymail.errors import DataError
from pymail.message import Attachment, Draft, Message, clean_subject
from servers import USER, RawServer, Received, Recorder, Server, start_server

Run = Callable[..., Result]
MailRc = Callable[[str], Path]

TO = "ops@example.org"
SUBJECT = "fidelity"
LOCALE_VARIABLES = ("LC_ALL", "LC_CTYPE", "LANG")

ZH = "服务器 web-01 告警：磁盘 /var 已满 (97%)\n请尽快处理。\n"
RU = "Резервное копирование завершено\nошибок нет\n"
CSV = b"host,disk\r\nweb-01,97%\r\n"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" + bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(255, -1, -1))
BIG = random.Random(20240601).randbytes(200 * 1024 + 13)
# What pymail guesses for .tar.gz: any of these is right for gzip data.
GZIP_TYPES = ("application/octet-stream", "application/gzip",
              "application/x-gzip", "application/x-compressed-tar")
# An RFC 2047 encoded word, or text a client would take for one.
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")


# Helpers -------------------------------------------------------------------


def normalise(text: str) -> str:
    """CRLF read as LF, and a final line end added when there is text."""
    text = text.replace("\r\n", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def decode_chain(data: bytes, *charsets: str) -> str:
    """The specification's reading of input: UTF-8, then each charset
    given, then Latin-1 (which keeps every byte)."""
    for charset in ("utf-8", *charsets):
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def idna2008(address: str) -> str:
    """The address with its domain in IDNA 2008 punycode."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{idna.encode(domain).decode('ascii')}"


def on_the_wire(text: str) -> bytes:
    """What a normalised text is as a CRLF body in UTF-8."""
    return text.replace("\n", "\r\n").encode("utf-8")


def may_be_7bit(data: bytes) -> bool:
    """The specification's 7bit test: ASCII, no NUL, no lone CR or LF,
    no line over 998 octets."""
    if not data.isascii() or b"\0" in data:
        return False
    lines = data.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return False
    return all(len(line) <= 998 for line in lines)


def base64_reference(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i:i + 76] + b"\r\n"
                    for i in range(0, len(encoded), 76))


def qp_reference(data: bytes) -> bytes:
    """A plain quoted-printable encoder (RFC 2045, 6.7), for its length."""
    lines = data.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    out: list[bytes] = []
    for line in lines:
        current = b""
        for i, byte in enumerate(line):
            literal = 33 <= byte <= 126 and byte != ord("=")
            # A blank is literal except at the end of a line.
            if literal or (byte in (9, 32) and i < len(line) - 1):
                token = bytes([byte])
            else:
                token = b"=%02X" % byte
            if len(current) + len(token) > 75:
                out.append(current + b"=")
                current = b""
            current += token
        out.append(current)
    return b"".join(line + b"\r\n" for line in out)


def parse_bytes(data: bytes) -> EmailMessage:
    """The message as a client reads it; UTF-8 headers (RFC 6532) when
    the data is not ASCII, as in an SMTPUTF8 transaction."""
    if data.isascii():
        message = email.message_from_bytes(data, policy=email.policy.default)
    else:
        message = email.message_from_string(data.decode("utf-8"),
                                             policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_wire_rules(data: bytes, *, utf8_allowed: bool) -> None:
    """CRLF line ends only, no line over 998 octets, 7-bit unless allowed."""
    assert data.endswith(b"\r\n"), "the data does not end with CRLF"
    rest = data.replace(b"\r\n", b"")
    assert b"\n" not in rest, "a bare LF on the wire"
    assert b"\r" not in rest, "a bare CR on the wire"
    longest = max(len(line) for line in data.split(b"\r\n"))
    assert longest <= 998, f"a line of {longest} octets"
    if not utf8_allowed:
        assert data.isascii(), "8-bit bytes without SMTPUTF8"


def assert_no_defects(message: EmailMessage) -> None:
    for part in message.walk():
        assert part.defects == [], (part.get_content_type(), part.defects)


def text_part(message: EmailMessage) -> EmailMessage | None:
    """The part holding stdin's text: the message, or the first part that
    is not an attachment."""
    if not message.is_multipart():
        return message
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        if part.get_content_disposition() != "attachment":
            return part
    return None


def attachments_of(message: EmailMessage) -> list[EmailMessage]:
    if not message.is_multipart():
        return []
    return [p for p in message.iter_parts()
            if isinstance(p, EmailMessage)
            and p.get_content_disposition() == "attachment"]


def text_of(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def file_name(part: EmailMessage) -> str:
    """filename= exactly as sent (get_filename() strips blanks and <>)."""
    value = part["Content-Disposition"].params.get("filename")
    assert isinstance(value, str)
    return value


def assert_text_part(part: EmailMessage, expected: str, *,
                     kind: str = "text/plain") -> None:
    """Type, charset label, transfer encoding and text of a text part."""
    assert part.get_content_type() == kind
    assert part.get_content_disposition() in (None, "inline")
    assert text_of(part) == expected
    canonical = on_the_wire(expected)
    assert part.get_param("charset") == ("us-ascii" if canonical.isascii()
                                         else "utf-8")
    cte = part["Content-Transfer-Encoding"]
    payload = part.get_payload().encode("ascii", "surrogateescape")
    if may_be_7bit(canonical):
        assert cte == "7bit"
        return
    assert cte in ("quoted-printable", "base64")
    b64 = base64_reference(canonical)
    if cte == "base64":
        assert payload == b64
    # The shorter of the two; a little slack for where QP breaks its lines.
    shortest = min(len(qp_reference(canonical)), len(b64))
    assert len(payload) <= shortest * 1.02 + 8, (cte, len(payload), shortest)


def expected_type(name: str) -> str:
    """The type a client expects from the name, octet-stream if unknown
    (or compressed: the bytes are then not of the named type)."""
    kind, encoding = mimetypes.guess_type(name, strict=False)
    return "application/octet-stream" if kind is None or encoding else kind


# The relay -----------------------------------------------------------------


@dataclass
class OptionRecorder(Recorder):
    """The test recorder, also keeping the MAIL FROM parameters of each
    message (SMTPUTF8, BODY=8BITMIME)."""

    options: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any,
                          envelope: Any) -> str:
        self.options.append([o.upper() for o in envelope.mail_options])
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def relay(cert: Any) -> Iterator[Server]:
    srv = start_server(cert=cert, tls="implicit", handler=OptionRecorder())
    yield srv
    srv.stop()


def options_of(server: Server, index: int = -1) -> list[str]:
    handler = server.handler
    assert isinstance(handler, OptionRecorder)
    return handler.options[index]


@pytest.fixture
def clean_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    """No locale from the tester's shell: each case sets its own."""
    for name in LOCALE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def restore_tz() -> Iterator[None]:
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


# The corpus ----------------------------------------------------------------


@dataclass(frozen=True)
class F:
    """A file of the case, by its name (str, or raw bytes for names that
    are not UTF-8); replaced by its path on the command line."""

    key: str | bytes


@dataclass
class Seen:
    """What one case produced, for its own extra checks."""

    result: Result
    received: Received | None
    message: EmailMessage | None
    home: Path


AUTO: Any = object()


@dataclass
class Case:
    name: str
    stdin: bytes = b"disk /var is 97% full\n"
    options: tuple[Any, ...] = ()
    to: tuple[str, ...] = (TO,)
    subject_arg: str | None = SUBJECT
    files: dict[str | bytes, bytes] = field(default_factory=dict)
    rc: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # What the client must see. AUTO: worked out from the input.
    subject: str | tuple[str, ...] = AUTO
    text: str | None = AUTO
    body_type: str = "text/plain"
    raw_body: bytes | None = None  # for a body type that is not text
    attached: tuple[tuple[str, str | tuple[str, ...], str | bytes], ...] = ()
    mail_from: str = USER
    rcpt: tuple[str, ...] = AUTO
    to_header: tuple[tuple[str, str], ...] | None = None
    from_header: tuple[tuple[str, str], ...] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()  # never in the data (Bcc)
    smtputf8: bool = False
    code: int | None = 0
    sent: bool | None = True
    err: str = ""
    check: Callable[[Seen], None] | None = None

    def expected_subject(self) -> tuple[str, ...]:
        if self.subject is AUTO:
            return (self.subject_arg or "",)
        if isinstance(self.subject, str):
            return (self.subject,)
        return self.subject

    def expected_text(self) -> str | None:
        if self.text is AUTO:
            if not self.stdin and self.attached:
                return None
            return normalise(self.stdin.decode("utf-8"))
        return None if self.text is None else normalise(self.text)

    def expected_rcpt(self) -> list[str]:
        return [TO] if self.rcpt is AUTO else list(self.rcpt)


def case(name: str, **kwargs: Any) -> Any:
    return pytest.param(Case(name, **kwargs), id=name)


def attach(*keys: str | bytes) -> tuple[Any, ...]:
    return tuple(item for key in keys for item in ("-a", F(key)))


def no_injection(seen: Seen) -> None:
    """Refused (nothing sent) or sent without the smuggled header."""
    if seen.received is None:
        assert seen.result.code == 65, seen.result.err
        return
    names = header_names(seen.received.data)
    assert "bcc" not in names
    assert seen.received.rcpt_tos == [TO]


def kept_in_dead_letter(seen: Seen) -> None:
    dead = seen.home / "dead.letter"
    assert dead.exists()
    assert b"disk /var is 97% full" in dead.read_bytes()


def recorded_without_bcc(seen: Seen) -> None:
    assert seen.received is not None and seen.message is not None
    path = seen.home / "sent.mbox"
    raw = path.read_bytes()
    assert raw.startswith(b"From ")
    assert b"hidden@secret.example" not in raw
    assert b"\nBcc:" not in raw and b"\nbcc:" not in raw.lower()
    (copy,) = list(mailbox.mbox(str(path)))
    assert copy["Subject"] == SUBJECT
    assert copy["Message-ID"] == seen.message["Message-ID"]
    assert "Bcc" not in copy
    payload = copy.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.replace(b"\r\n", b"\n") == b"disk /var is 97% full\n"


def date_and_message_id(seen: Seen) -> None:
    assert seen.message is not None
    assert re.search(r" \+0800$", str(seen.message["Date"]))
    message_id = str(seen.message["Message-ID"])
    assert re.fullmatch(r"<[^<>@\s]+@alerts\.example\.net>", message_id)


def message_id_in_punycode(seen: Seen) -> None:
    assert seen.message is not None
    assert str(seen.message["Message-ID"]).endswith(
        "@" + idna2008("x@bücher.example").partition("@")[2] + ">")


def names_the_line(seen: Seen) -> None:
    assert "line 3" in seen.result.err


def raw_field(data: bytes, name: bytes) -> list[bytes]:
    """The physical lines of one top-level header field."""
    lines = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + b":"):
            end = i + 1
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1
            return lines[i:end]
    raise AssertionError(f"no {name!r} field")


def subject_encoded_and_folded(seen: Seen) -> None:
    assert seen.received is not None
    lines = raw_field(seen.received.data, b"Subject")
    assert len(lines) > 1, "a long subject on one line"
    assert all(len(line) <= 78 for line in lines), lines
    assert re.search(rb"=\?utf-8\?[bq]\?", b"".join(lines), re.IGNORECASE)


def subject_encoded(seen: Seen) -> None:
    assert seen.received is not None
    field = b"".join(raw_field(seen.received.data, b"Subject"))
    assert field.isascii()
    assert re.search(rb"=\?utf-8\?[bq]\?", field, re.IGNORECASE)


def name_for_old_and_new_clients(seen: Seen) -> None:
    """RFC 2231 filename*= and an RFC 2047 encoded name= in Content-Type."""
    assert seen.received is not None
    data = seen.received.data
    assert re.search(rb"filename\*(0\*)?=utf-8''", data, re.IGNORECASE)
    assert re.search(rb'name="=\?utf-8\?[bq]\?', data, re.IGNORECASE)


def header_in_utf8(seen: Seen) -> None:
    """The To header holds the address as UTF-8 (RFC 6532), in a
    transaction that said SMTPUTF8."""
    assert seen.received is not None
    to = b"".join(raw_field(seen.received.data, b"To"))
    assert "用户@example.com".encode() in to


T_HEADERS = (
    b"To: t1@example.org\n"
    b"Cc: \"Ops, Team\" <team@example.org>\n"
    b"Bcc: secret@example.net\n"
    b"Subject: =?utf-8?b?5aSH5Lu95a6M5oiQ?=\n"
    b"X-Priority: 1\n"
    b"\n"
    b"backup done\n")

CORPUS = [
    # stdin: whatever it holds, a text/plain body ----------------------------
    case("cron-colour-codes",
         stdin=b"\x1b[31mERROR\x1b[0m /var 97% full\n\x1b[1;32mOK\x1b[0m\n"),
    case("crlf-log", stdin=b"job started\r\njob done\r\n",
         text="job started\njob done\n"),
    case("mixed-line-ends", stdin=b"dos\r\nunix\nlast"),
    case("no-final-newline", stdin=b"no newline at the end"),
    case("empty-body", stdin=b"", text=""),
    case("gbk-log-ttycharset", stdin=ZH.encode("gbk"),
         options=("-S", "ttycharset=gbk"), text=ZH),
    case("gbk-log-locale", stdin=ZH.encode("gbk"), env={"LANG": "zh_CN.GBK"},
         text=ZH),
    # zh_CN.GBK not generated: Python (PEP 538) sets LC_CTYPE=C.UTF-8.
    case("gbk-locale-not-installed", stdin=ZH.encode("gbk"),
         env={"LANG": "zh_CN.GBK", "LC_CTYPE": "C.UTF-8"}, text=ZH),
    case("gb18030-lc-ctype-beats-lang",
         stdin="备份完成 𠮷 €\n".encode("gb18030"),
         env={"LANG": "en_US.UTF-8", "LC_CTYPE": "zh_CN.GB18030"},
         text="备份完成 𠮷 €\n"),
    case("lc-all-c-beats-lang", stdin=ZH.encode("gbk"),
         env={"LC_ALL": "C", "LANG": "zh_CN.GBK"},
         text=ZH.encode("gbk").decode("latin-1")),
    case("utf8-log-in-gbk-locale", stdin=ZH.encode(),
         env={"LANG": "zh_CN.GBK"}, text=ZH),
    case("ttycharset-beats-locale", stdin=ZH.encode("gbk"),
         options=("-S", "ttycharset=gbk"), env={"LANG": "ja_JP.eucJP"},
         text=ZH),
    case("latin1-log", stdin="café crème brûlée\n".encode("latin-1"),
         text="café crème brûlée\n"),
    case("charset-8bit", stdin=RU.encode("koi8-r"),
         options=("-S", "charset-8bit=koi8-r"), text=RU),
    case("locale-beats-charset-8bit", stdin=RU.encode("koi8-r"),
         env={"LANG": "ru_RU.KOI8-R"}, options=("-S", "charset-8bit=cp1251"),
         text=RU),
    case("every-byte-latin1", stdin=bytes(range(256)),
         text=bytes(range(256)).decode("latin-1")),
    case("progress-bar-cr",
         stdin=b"backup  10%\rbackup  55%\rbackup 100%\rdone\n"),
    case("progress-bar-cr-at-end", stdin=b"  0%\r 50%\r100%\r"),
    case("nul-bytes", stdin=b"field1\x00field2\x00\nnext\n"),
    case("bel-backspace", stdin=b"beep\x07 over\x08\x08\x08strike\n"),
    case("form-feed-and-separators",
         stdin=b"page 1\x0cpage 2\x0bvt\x1cfs\x1dgs\x1ers\x7fdel\n"),
    case("5000-char-ascii-line", stdin=b"x" * 5000 + b"\n"),
    case("5000-char-chinese-line", stdin=("磁" * 5000 + "\n").encode()),
    case("3000-char-line-no-newline", stdin=b"y" * 3000),
    case("trailing-whitespace", stdin="naïve   \ntab\t\n".encode()),
    case("equals-signs-and-nul", stdin=b"a=b =3D c=\n=\nx\x00\n"),
    case("dot-lines", stdin=b".\n..\n.hidden\nend\n."),
    case("From -line-in-body",
         stdin=b"From here on, all is well\nFrom: not a header\n>From\n"),
    case("emoji", subject_arg="🔥 prod down 🚨",
         stdin="deploy failed 😱\n".encode()),
    case("html-report -M text/html", options=("-M", "text/html"),
         stdin="<html><body><h1>Report</h1><p>café</p></body></html>\n"
         .encode(), body_type="text/html"),
    case("json -M application/json", options=("-M", "application/json"),
         stdin=b'{"status": "ok", "bytes": "\xff"}\n',
         body_type="application/json",
         raw_body=b'{"status": "ok", "bytes": "\xff"}\n'),
    case("quote-file -q", files={"previous.txt": b"> earlier message\n> quoted"},
         options=("-q", F("previous.txt")), stdin=b"my reply\n",
         text="> earlier message\n> quoted\nmy reply\n"),
    # Subjects ------------------------------------------------------------
    case("chinese-subject", subject_arg="服务器告警：磁盘已满",
         check=subject_encoded),
    case("very-long-subject",
         subject_arg=("disk usage report for web-01 and friends " * 40).strip()),
    case("very-long-subject-one-word", subject_arg="x" * 1500),
    case("very-long-chinese-subject", subject_arg="服务器告警，磁盘已满。" * 60,
         check=subject_encoded_and_folded),
    case("gbk-subject-argument", options=("-S", "ttycharset=gbk"),
         subject_arg=os.fsdecode("服务器告警".encode("gbk")), subject="服务器告警"),
    case("subject-with-newline", subject_arg="disk\nfull\r\non web-01\tnow",
         subject="disk full on web-01 now"),
    case("subject-injection", subject_arg="hi\r\nBcc: evil@x.org",
         subject="hi Bcc: evil@x.org", check=no_injection),
    case("subject-with-specials",
         subject_arg='Re: [ops] "quoted" (comment) <angle> a=b; c,d'),
    case("subject-two-spaces-at-a-fold",
         subject_arg="告警：数据库备份失败磁盘满了  ✓ 已处理"),
    case("subject-space-between-encoded-words",
         subject_arg="budget salle équipe jour été B équipe prévu comité jour"),
    case("subject-starting-with-a-long-url",
         subject_arg="https://monitoring.example.org/d/abcdef123/disk-usage"
         "?orgId=1&var-host=web-01 is red"),
    case("subject-of-74-characters",
         subject_arg="The nightly backup of the production database finished "
         "with three warnings"),
    case("subject-encoded-word-lookalike",
         subject_arg="=?utf-8?q?not_decoded?= literally"),
    case("subject-nel", subject_arg="a\x85b", subject="a b"),
    case("subject-c1-control", subject_arg="a\x9b31mred", subject="a 31mred"),
    case("subject-line-separator", subject_arg="one\u2028two",
         subject=("one\u2028two", "one two")),
    # Attachments ---------------------------------------------------------
    case("chinese-file-name", files={"报告.csv": CSV},
         options=attach("报告.csv"),
         attached=(("报告.csv", "text/csv", "报告.csv"),),
         check=name_for_old_and_new_clients),
    case("gbk-file-name", files={"报告.csv".encode("gbk"): CSV},
         options=("-S", "ttycharset=gbk", *attach("报告.csv".encode("gbk"))),
         attached=(("报告.csv", "text/csv", "报告.csv".encode("gbk")),)),
    case("gbk-file-name-locale", files={"周报.pdf".encode("gbk"): PDF},
         env={"LANG": "zh_CN.GBK"}, options=attach("周报.pdf".encode("gbk")),
         attached=(("周报.pdf", "application/pdf", "周报.pdf".encode("gbk")),)),
    case("latin1-file-name", files={b"caf\xe9.pdf": PDF},
         options=attach(b"caf\xe9.pdf"),
         attached=(("café.pdf", "application/pdf", b"caf\xe9.pdf"),)),
    case("control-chars-in-file-name", files={"a\tb\x1bc\x7f.txt": b"x\n"},
         options=attach("a\tb\x1bc\x7f.txt"),
         attached=(("a_b_c_.txt", "text/plain", "a\tb\x1bc\x7f.txt"),)),
    case("c1-control-in-file-name", files={"a\x9bb.txt": b"x\n"},
         options=attach("a\x9bb.txt"),
         attached=(("a_b.txt", "text/plain", "a\x9bb.txt"),)),
    case("line-separator-in-file-name", files={"a\u2028b.txt": b"x\n"},
         options=attach("a\u2028b.txt"),
         attached=(("a_b.txt", "text/plain", "a\u2028b.txt"),)),
    case("file-name-with-quotes-and-spaces",
         files={'my "final" report; v2 (1).csv': CSV},
         options=attach('my "final" report; v2 (1).csv'),
         attached=(('my "final" report; v2 (1).csv', "text/csv",
                    'my "final" report; v2 (1).csv'),)),
    case("long-chinese-file-name", files={"季度报告" * 20 + ".pdf": PDF},
         options=attach("季度报告" * 20 + ".pdf"),
         attached=(("季度报告" * 20 + ".pdf", "application/pdf",
                    "季度报告" * 20 + ".pdf"),)),
    case("file-name-encoded-word-lookalike", files={"=?utf-8?q?x?=.txt": b"x"},
         options=attach("=?utf-8?q?x?=.txt"),
         attached=(("=?utf-8?q?x?=.txt", "text/plain", "=?utf-8?q?x?=.txt"),)),
    case("crlf-text-attachment", files={"notes.txt": b"line 1\r\nline 2\r\n\r\n"},
         options=attach("notes.txt"),
         attached=(("notes.txt", "text/plain", "notes.txt"),)),
    case("empty-attachment", files={"empty.csv": b""}, options=attach("empty.csv"),
         attached=(("empty.csv", "text/csv", "empty.csv"),)),
    case("unknown-extension", files={"blob.qqzz": PNG},
         options=attach("blob.qqzz"),
         attached=(("blob.qqzz", "application/octet-stream", "blob.qqzz"),)),
    case("compressed-tarball", files={"logs.tar.gz": b"\x1f\x8b\x08" + PNG},
         options=attach("logs.tar.gz"),
         attached=(("logs.tar.gz", GZIP_TYPES, "logs.tar.gz"),)),
    case("two-attachments", files={"report.csv": CSV, "chart.png": PNG},
         options=attach("report.csv", "chart.png"),
         attached=(("report.csv", "text/csv", "report.csv"),
                   ("chart.png", "image/png", "chart.png"))),
    case("six-attachments",
         files={f"part{i}.csv": CSV * i for i in range(6)},
         options=attach(*(f"part{i}.csv" for i in range(6))),
         attached=tuple((f"part{i}.csv", "text/csv", f"part{i}.csv")
                        for i in range(6))),
    case("big-attachment", files={"dump.bin": BIG}, options=attach("dump.bin"),
         attached=(("dump.bin", "application/octet-stream", "dump.bin"),)),
    case("attachment-only", stdin=b"", files={"x.pdf": PDF},
         options=attach("x.pdf"),
         attached=(("x.pdf", "application/pdf", "x.pdf"),)),
    case("attachment-only -E", stdin=b"", files={"x.pdf": PDF},
         options=("-E", *attach("x.pdf")), sent=False),
    case("empty -E", stdin=b"", options=("-E",), sent=False),
    case("gbk-body-with-attachment", stdin=ZH.encode("gbk"),
         options=("-S", "ttycharset=gbk", *attach("report.csv")),
         files={"report.csv": CSV}, text=ZH,
         attached=(("report.csv", "text/csv", "report.csv"),)),
    # Addresses -----------------------------------------------------------
    case("idn-domain", to=("ops@bücher.example",),
         rcpt=("ops@xn--bcher-kva.example",),
         to_header=(("", "ops@xn--bcher-kva.example"),)),
    case("idn-eszett-is-idna2008", to=("Info <info@straße.example>",),
         rcpt=(idna2008("info@straße.example"),),
         to_header=(("Info", "info@xn--strae-oqa.example"),)),
    case("idn-from -r", options=("-r", "Alert Bot <alert@bücher.example>"),
         mail_from=idna2008("alert@bücher.example"),
         from_header=(("Alert Bot", "alert@xn--bcher-kva.example"),),
         check=message_id_in_punycode),
    case("smtputf8-local-part", to=("用户@example.com",),
         rcpt=("用户@example.com",), to_header=(("", "用户@example.com"),),
         smtputf8=True, check=header_in_utf8),
    case("smtputf8-local-part-idn-domain", to=("josé@bücher.example",),
         rcpt=(idna2008("josé@bücher.example"),), smtputf8=True),
    case("reply-to-utf8-local-part", options=("-S", "replyto=用户@example.com"),
         headers={"Reply-To": "用户@example.com"}, smtputf8=True),
    case("bcc-dedupe",
         options=("-c", TO, "-b", TO, "-b", "Hidden <hidden@secret.example>",
                  "-c", "cc@example.net"),
         rcpt=(TO, "cc@example.net", "hidden@secret.example"),
         hidden=("hidden@secret.example", "secret.example")),
    case("display-name-comma", to=('"Last, First" <first.last@example.org>',),
         rcpt=("first.last@example.org",),
         to_header=(("Last, First", "first.last@example.org"),)),
    case("comment-name", to=("ops@example.org (Ops Team)",),
         to_header=(("Ops Team", TO),)),
    case("comma-list",
         to=('a@example.org, B Person <b@example.org>, "C, D" <cd@example.org>',),
         rcpt=("a@example.org", "b@example.org", "cd@example.org"),
         to_header=(("", "a@example.org"), ("B Person", "b@example.org"),
                    ("C, D", "cd@example.org"))),
    case("chinese-display-name", to=("张三 <zhang@example.org>",),
         rcpt=("zhang@example.org",),
         to_header=(("张三", "zhang@example.org"),)),
    case("gbk-display-name-argument", options=("-S", "ttycharset=gbk"),
         to=(os.fsdecode("张三".encode("gbk")) + " <zhang@example.org>",),
         rcpt=("zhang@example.org",), to_header=(("张三", "zhang@example.org"),)),
    case("from-with-comma-name",
         options=("-S", 'from="Backup, Nightly" <backup@example.com>'),
         mail_from="backup@example.com",
         from_header=(("Backup, Nightly", "backup@example.com"),)),
    case("from-comment-form",
         options=("-S", "from=backup@example.com (Nightly Backup)"),
         mail_from="backup@example.com",
         from_header=(("Nightly Backup", "backup@example.com"),)),
    case("-r display name", options=("-r", "Alert Bot <alert@example.com>"),
         mail_from="alert@example.com",
         from_header=(("Alert Bot", "alert@example.com"),)),
    case("replyto-and-sender",
         options=("-S", 'replyto="Replies, Team" <replies@example.org>',
                  "-S", "sender=robot@example.com"),
         headers={"Reply-To": '"Replies, Team" <replies@example.org>',
                  "Sender": "robot@example.com"}),
    case("sender-and-replyto-forms",
         options=("-S", "sender=Robot <robot@example.com>",
                  "-S", "replyto=replies@example.org (Replies), b@example.org"),
         headers={"Sender": "Robot <robot@example.com>",
                  "Reply-To": "Replies <replies@example.org>, b@example.org"}),
    case("-r comment form", options=("-r", "alert@example.com (Alert Bot)"),
         mail_from="alert@example.com",
         from_header=(("Alert Bot", "alert@example.com"),)),
    case("alias-expands", to=("team",),
         rc="alias team ops1@example.org ops2@example.org\n",
         rcpt=("ops1@example.org", "ops2@example.org"),
         to_header=(("", "ops1@example.org"), ("", "ops2@example.org"))),
    case("unknown-bare-name", to=("nosuchalias",), code=65, sent=False,
         err="nosuchalias", check=kept_in_dead_letter),
    # Headers -------------------------------------------------------------
    case("custom header -C",
         options=("-C", "X-Field: some value", "-C", "X-Chinese: 值班表"),
         headers={"X-Field": "some value", "X-Chinese": "值班表"}),
    case("-C From refused", options=("-C", "From: x@example.com"), code=64,
         sent=False, err="From"),
    case("-C Content-Type refused", options=("-C", "Content-Type: text/html"),
         code=64, sent=False, err="Content-Type"),
    case("-C injection", options=("-C", "X-A: a\r\nBcc: evil@x.org"),
         code=None, sent=None, check=no_injection),
    case("-r injection", options=("-r", "a@example.com\r\nBcc: evil@x.org"),
         code=None, sent=None, check=no_injection),
    case("sender-injection",
         options=("-S", "sender=a@example.com\nBcc: evil@x.org"),
         code=None, sent=None, check=no_injection),
    case("organization-with-newline",
         options=("-S", "ORGANIZATION=Ops\r\nBcc: evil@x.org"),
         headers={"Organization": "Ops Bcc: evil@x.org"}, check=no_injection),
    case("-t lone-cr injection", options=("-t",),
         stdin=b"X-A: a\rBcc: evil@x.org\nSubject: s\n\nbody\n",
         code=None, sent=None, check=no_injection),
    case("replyto-injection",
         options=("-S", "replyto=a@example.org\r\nBcc: evil@x.org"),
         code=None, sent=None, check=no_injection),
    case("date-offset-and-message-id", env={"TZ": "CST-8"},
         options=("-r", "alert@alerts.example.net"),
         mail_from="alert@alerts.example.net", check=date_and_message_id),
    # -t ------------------------------------------------------------------
    case("-t headers", options=("-t",), subject_arg=None, stdin=T_HEADERS,
         subject="备份完成", text="backup done\n",
         rcpt=(TO, "t1@example.org", "team@example.org", "secret@example.net"),
         to_header=(("", TO), ("", "t1@example.org")),
         headers={"X-Priority": "1"}, hidden=("secret@example.net",)),
    case("-t with -s and -r", options=("-t", "-r", "cli@example.com"),
         subject_arg="cli subject", mail_from="cli@example.com",
         stdin=b"From: header@example.com\nSubject: header subject\n\nbody\n",
         text="body\n", from_header=(("", "cli@example.com"),)),
    case("-t From used", options=("-t",), subject_arg=None,
         stdin=b"From: Header Bot <hb@example.com>\nSubject: s\n\nbody\n",
         subject="s", text="body\n", mail_from="hb@example.com",
         from_header=(("Header Bot", "hb@example.com"),)),
    case("-t folded headers", options=("-t",), subject_arg=None, to=(),
         stdin=b"To: t1@example.org,\n  t2@example.org\nSubject: folded\n"
         b" subject\n\nbody\n",
         subject="folded subject", text="body\n",
         rcpt=("t1@example.org", "t2@example.org")),
    case("-t crlf headers", options=("-t",), subject_arg=None,
         stdin=b"Subject: from windows\r\nX-Priority: 2\r\n\r\nbody\r\n",
         subject="from windows", text="body\n", headers={"X-Priority": "2"}),
    case("-t malformed header", options=("-t",),
         stdin=b"To: t1@example.org\nSubject: x\nthis is not a header\n\nb\n",
         code=65, sent=False, check=names_the_line),
    case("-t encoded-word injection", options=("-t",),
         stdin=b"X-Note: =?utf-8?q?a=0D=0ABcc:_evil@x.org?=\n\nbody\n",
         code=None, sent=None, check=no_injection),
    # record --------------------------------------------------------------
    case("record-mbox", rc="set record=sent.mbox\n",
         options=("-b", "hidden@secret.example"),
         rcpt=(TO, "hidden@secret.example"), hidden=("hidden@secret.example",),
         check=recorded_without_bcc),
]


def make_files(tmp_path: Path, files: dict[str | bytes, bytes]
               ) -> dict[str | bytes, str]:
    """Write the case's files; returns the path of each as an argument."""
    folder = os.fsencode(tmp_path / "files")
    os.makedirs(folder, exist_ok=True)
    paths: dict[str | bytes, str] = {}
    for key, content in files.items():
        raw = os.path.join(folder, os.fsencode(key))
        with open(raw, "wb") as stream:
            stream.write(content)
        paths[key] = os.fsdecode(raw)
    return paths


@pytest.mark.parametrize("c", CORPUS)
def test_corpus(c: Case, relay: Server, run: Run, mailrc: MailRc,
                monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path,
                clean_locale: None, restore_tz: None) -> None:
    for name, value in c.env.items():
        monkeypatch.setenv(name, value)
    time.tzset()
    mailrc(recipe(relay.port, extra="set socket-connect-timeout=2\n" + c.rc))
    paths = make_files(tmp_path, c.files)
    args = [paths[a.key] if isinstance(a, F) else a for a in c.options]
    if c.subject_arg is not None:
        args = ["-s", c.subject_arg, *args]
    result = run(*args, *c.to, input=c.stdin)

    if c.code is not None:
        assert result.code == c.code, result.err
    assert c.err in result.err
    if c.sent is False or (c.sent is None and not relay.messages):
        assert relay.messages == []
        if c.check:
            c.check(Seen(result, None, None, home))
        return
    assert result.code == 0, result.err
    assert len(relay.messages) == 1
    received = relay.messages[0]
    data = received.data

    # The wire.
    assert_wire_rules(data, utf8_allowed=c.smtputf8)
    if not data.isascii():
        assert "SMTPUTF8" in options_of(relay), "8-bit data without SMTPUTF8"
    names = header_names(data)
    assert "bcc" not in names
    for hidden in c.hidden:
        assert hidden.encode() not in data

    # The envelope.
    assert received.mail_from == c.mail_from
    assert received.rcpt_tos == c.expected_rcpt()

    # What a client shows.
    message = parse_bytes(data)
    assert_no_defects(message)
    assert message["Subject"] in c.expected_subject()
    assert message["MIME-Version"] == "1.0"
    for header in ("date", "from", "subject", "message-id", "mime-version",
                   "content-type"):
        assert names.count(header) == 1, (header, names)
    sender_domain = c.mail_from.rpartition("@")[2]
    assert str(message["Message-ID"]).endswith("@" + sender_domain + ">")
    assert message["Date"].datetime.utcoffset() is not None
    if c.to_header is not None:
        assert [(a.display_name, a.addr_spec) for a in message["To"].addresses
                ] == list(c.to_header)
    if c.from_header is not None:
        assert [(a.display_name, a.addr_spec)
                for a in message["From"].addresses] == list(c.from_header)
    for name, value in c.headers.items():
        assert names.count(name.lower()) == 1, (name, names)
        assert str(message[name]) == value

    part = text_part(message)
    if c.raw_body is not None:
        assert part is not None
        assert part.get_content_type() == c.body_type
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_payload(decode=True) == c.raw_body
    elif (expected := c.expected_text()) is None:
        assert part is None, "a text part for an empty stdin"
    else:
        assert part is not None
        assert_text_part(part, expected, kind=c.body_type)

    attached = attachments_of(message)
    assert [file_name(p) for p in attached] == [a[0] for a in c.attached]
    if c.attached:
        assert message.get_content_type() == "multipart/mixed"
    for p, (name, kind, key) in zip(attached, c.attached, strict=True):
        kinds = (kind,) if isinstance(kind, str) else kind
        assert p.get_content_type() in kinds, name
        # Old clients read name= in Content-Type.
        assert p.get_param("name") == name
        assert p["Content-Transfer-Encoding"] == "base64"
        assert p.get_payload(decode=True) == c.files[key], name

    if c.check:
        c.check(Seen(result, received, message, home))


def test_corpus_is_big_enough() -> None:
    names = [p.id for p in CORPUS]
    assert len(names) >= 30
    assert len(set(names)) == len(names)


# Beyond the table ----------------------------------------------------------


def sent_text(server: Server, index: int) -> tuple[bytes, bytes]:
    """The text part's headers and payload, as sent."""
    data = server.messages[index].data
    message = parse_bytes(data)
    return (str(message["Content-Type"]).encode()
            + str(message["Content-Transfer-Encoding"]).encode(),
            data.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("body", [ZH.encode(), b"plain ascii\n",
                                  "café\r\n".encode(), b"\x1b[1mbold\n"],
                         ids=["chinese", "ascii", "latin-crlf", "escape"])
def test_output_does_not_depend_on_the_locale(
        body: bytes, relay: Server, run: Run, mailrc: MailRc,
        monkeypatch: pytest.MonkeyPatch, clean_locale: None) -> None:
    """Valid UTF-8 reads the same whatever the locale says."""
    mailrc(recipe(relay.port, extra="set socket-connect-timeout=2\n"))
    locales = [{}, {"LANG": "C"}, {"LC_ALL": "zh_CN.GBK"},
               {"LANG": "ja_JP.eucJP"}, {"LC_CTYPE": "en_US.UTF-8"},
               {"LANG": "ru_RU.KOI8-R", "LC_ALL": "POSIX"}]
    for env in locales:
        for name in LOCALE_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = run("-s", "locale", TO, input=body)
        assert result.code == 0, (env, result.err)
    first = sent_text(relay, 0)
    for index in range(1, len(locales)):
        assert sent_text(relay, index) == first, locales[index]
    assert text_of(parse_bytes(relay.messages[0].data)) == normalise(
        body.decode())


def test_message_ids_are_unique(relay: Server, run: Run,
                                mailrc: MailRc) -> None:
    mailrc(recipe(relay.port, extra="set socket-connect-timeout=2\n"))
    for _ in range(5):
        assert run("-s", "id", TO, input=b"x\n").code == 0
    ids = [str(parse_bytes(m.data)["Message-ID"]) for m in relay.messages]
    assert len(set(ids)) == 5
    assert all(i.endswith("@example.com>") for i in ids)


def test_utf8_local_part_refused_without_smtputf8(
        cert: Any, run: Run, mailrc: MailRc, home: Path) -> None:
    """A relay that does not offer SMTPUTF8 never sees MAIL FROM for a
    UTF-8 local part: exit 65, and a message that says why."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    srv = RawServer(["220 old.example ESMTP",
                     "250-old.example\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME",
                     "334 UGFzc3dvcmQ6", "235 2.7.0 ok", "221 bye"],
                    context=context)
    try:
        mailrc(recipe(srv.port, extra="set socket-connect-timeout=2\n"))
        result = run("-s", "intl", "用户@example.com",
                     input=b"disk /var is 97% full\n")
    finally:
        srv.stop()
    assert result.code == 65, result.err
    assert "SMTPUTF8" in result.err
    assert "用户@example.com" in result.err
    assert not any(line.upper().startswith((b"MAIL", b"RCPT", b"DATA"))
                   for line in srv.heard), srv.heard
    dead = home / "dead.letter"
    assert dead.exists() and b"disk /var is 97% full" in dead.read_bytes()


# Hypothesis: the message builder ------------------------------------------


def build(*, subject: str = SUBJECT, body: bytes = b"x\n",
          attachments: list[Attachment] | None = None,
          fallbacks: tuple[str, ...] = ()) -> bytes:
    draft = Draft(sender=[Mailbox("Bot", USER)], to=[Mailbox("", TO)],
                  subject=subject, body=body, attachments=attachments or [],
                  fallback_charsets=fallbacks)
    return Message(draft).as_bytes()


CONTROLS = "[\x00-\x1f\x7f-\x9f\u2028\u2029]"


def expected_subject(subject: str) -> str:
    """CRLF, CR, LF and every other control character (C0, DEL, C1) and
    the Unicode line and paragraph separators become one space each;
    blanks at the ends do not count."""
    subject = subject.replace("\r\n", "\n")
    return re.sub(CONTROLS, " ", subject).strip()


def expected_name(name: str) -> str:
    """Control characters and separators in a file name become _."""
    return re.sub(CONTROLS, "_", name)


subjects = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


def file_names() -> st.SearchStrategy[str]:
    """Printable names a file can have: no control characters, no / or
    NUL, not . or .., at most 100 characters and 255 bytes."""
    alphabet = st.characters(blacklist_categories=("Cs",),
                             blacklist_characters="/\0")
    return (st.text(alphabet=alphabet, min_size=1, max_size=100)
            .filter(lambda n: n not in (".", ".."))
            .filter(lambda n: len(n.encode("utf-8")) <= 255))


FAST = settings(max_examples=150, deadline=None)


@FAST
@given(text=st.text())
def test_any_text_round_trips(text: str) -> None:
    data = build(body=text.encode("utf-8"))
    assert_wire_rules(data, utf8_allowed=False)
    message = parse_bytes(data)
    assert_no_defects(message)
    assert_text_part(message, normalise(text))


@FAST
@given(data=st.binary(max_size=2000),
       fallbacks=st.sampled_from([(), ("gbk",), ("gb18030",), ("koi8_r",),
                                  ("shift_jis", "cp1251"), ("euc_jp",)]))
def test_any_bytes_round_trip(data: bytes, fallbacks: tuple[str, ...]) -> None:
    """Bytes are read by the chain (UTF-8, the charsets, Latin-1) and then
    arrive as that text, whatever they hold."""
    wire = build(body=data, fallbacks=fallbacks)
    assert_wire_rules(wire, utf8_allowed=False)
    message = parse_bytes(wire)
    assert_no_defects(message)
    assert_text_part(message, normalise(decode_chain(data, *fallbacks)))


def assert_same_subject(parsed: str, subject: str) -> None:
    """The parsed subject is exactly the expected one, spaces included."""
    expected = expected_subject(subject)
    assert parsed == expected
    assert parsed == clean_subject(subject)


@FAST
@given(subject=subjects)
def test_any_subject_round_trips(subject: str) -> None:
    data = build(subject=subject)
    assert_wire_rules(data, utf8_allowed=False)
    message = parse_bytes(data)
    assert_no_defects(message)
    assert_same_subject(message["Subject"], subject)
    assert header_names(data).count("subject") == 1


@FAST
@given(words=st.lists(st.text(alphabet=st.characters(min_codepoint=0x21,
                                                     max_codepoint=0x7e),
                              min_size=1, max_size=40),
                      min_size=1, max_size=40))
def test_ascii_words_subject_round_trips_exactly(words: list[str]) -> None:
    """ASCII words with one space between them come back exactly, however
    long the subject and wherever it is folded."""
    subject = " ".join(words)
    data = build(subject=subject)
    assert_wire_rules(data, utf8_allowed=False)
    assert parse_bytes(data)["Subject"] == subject


@FAST
@given(subject=st.text())
def test_any_subject_makes_one_header_line(subject: str) -> None:
    """Whatever the subject, it never adds a header line: the message is
    refused or has exactly the header fields pymail writes."""
    try:
        data = build(subject=subject)
    except DataError:
        return  # refused (exit 65)
    names = header_names(data)
    assert names.count("subject") == 1
    assert set(names) <= {"date", "from", "to", "subject", "message-id",
                          "user-agent", "mime-version", "content-type",
                          "content-transfer-encoding"}


@FAST
@given(files=st.lists(st.tuples(file_names(), st.binary(max_size=600)),
                      min_size=1, max_size=3,
                      unique_by=lambda f: f[0]),
       body=st.sampled_from([b"", b"see attached\n", ZH.encode()]))
def test_any_file_name_round_trips(files: list[tuple[str, bytes]],
                                   body: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        opened = []
        try:
            for name, content in files:
                path = Path(folder) / name
                path.write_bytes(content)
                opened.append(Attachment.open(str(path)))
            data = build(body=body, attachments=opened)
        finally:
            for attachment in opened:
                attachment.close()
    assert_wire_rules(data, utf8_allowed=False)
    message = parse_bytes(data)
    assert_no_defects(message)
    assert message.get_content_type() == "multipart/mixed"
    attached = attachments_of(message)
    names = [expected_name(n) for n, _ in files]
    assert [file_name(p) for p in attached] == names
    for part, name, (_, content) in zip(attached, names, files, strict=True):
        assert part.get_payload(decode=True) == content
        assert part.get_param("name") == name
        assert part.get_content_type() == expected_type(name)
    part = text_part(message)
    if body:
        assert part is not None
        assert_text_part(part, normalise(body.decode()))
    else:
        assert part is None


# Hypothesis: through the relay ---------------------------------------------


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300), subject=subjects.map(lambda s: s[:300]),
       name=file_names(),
       content=st.binary(max_size=2000))
def test_round_trip_through_the_relay(relay: Server, run: Run, mailrc: MailRc,
                                      tmp_path: Path, clean_locale: None,
                                      text: str, subject: str, name: str,
                                      content: bytes) -> None:
    mailrc(recipe(relay.port, extra="set socket-connect-timeout=2\n"))
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / name
    path.write_bytes(content)
    before = len(relay.messages)
    result = run("-s", subject, "-a", str(path), TO,
                 input=text.encode("utf-8"))
    assert result.code == 0, result.err
    assert len(relay.messages) == before + 1
    received = relay.messages[-1]
    assert received.rcpt_tos == [TO]
    assert_wire_rules(received.data, utf8_allowed=False)
    message = parse_bytes(received.data)
    assert_no_defects(message)
    assert_same_subject(message["Subject"], subject)
    (part,) = attachments_of(message)
    assert file_name(part) == expected_name(name)
    assert part.get_payload(decode=True) == content
    body = text_part(message)
    if text:
        assert body is not None
        assert_text_part(body, normalise(text))
    else:
        assert body is None
