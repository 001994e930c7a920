"""The message as the relay receives it: headers, recipients, encodings,
line ends, dot-stuffing and attachments, each sent through the test server."""

from __future__ import annotations

import email
import email.policy
import gc
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

import pymail
from conftest import Result, header_block, header_names, recipe
from servers import USER, Received, Server

Run = Callable[..., Result]

BODY = b"disk /var is 97% full\n"
TO = "ops@example.org"


def parse(received: Received) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(part: EmailMessage) -> str:
    """The decoded text of a part, with LF line ends."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


@pytest.fixture
def relay(server: Server, mailrc: Callable[[str], Path]) -> Server:
    """The test server, with ~/.mailrc holding the standard recipe."""
    mailrc(recipe(server.port, extra="set socket-connect-timeout=2\n"))
    return server


@pytest.fixture
def relay_with(server: Server, mailrc: Callable[[str], Path]
               ) -> Callable[[str], Server]:
    """The test server, with extra lines appended to the recipe."""
    def write(extra: str) -> Server:
        mailrc(recipe(server.port,
                      extra="set socket-connect-timeout=2\n" + extra))
        return server
    return write


def dead_letter(home: Path) -> bytes:
    path = home / "dead.letter"
    return path.read_bytes() if path.exists() else b""


# Headers -------------------------------------------------------------------


@pytest.fixture
def shanghai_time() -> Iterator[None]:
    """Local time 8 hours east of UTC, so the offset is not just +0000.

    A POSIX TZ string, which needs no tz database."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "CST-8"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_standard_headers(relay: Server, run: Run, shanghai_time: None) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    result = run("-s", "disk alert", "-c", "cc@example.net", TO, input=BODY)
    after = datetime.now(timezone.utc)
    assert result.code == 0, result.err
    assert len(relay.messages) == 1
    received = relay.messages[0]
    message = parse(received)

    raw_date = str(message["Date"])
    assert re.search(r" \+0800$", raw_date), raw_date
    date = message["Date"].datetime
    assert date.utcoffset() is not None
    assert before <= date <= after

    assert message["From"].addresses[0].addr_spec == USER
    assert [a.addr_spec for a in message["To"].addresses] == [TO]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["cc@example.net"]
    assert message["Subject"] == "disk alert"
    assert message["MIME-Version"] == "1.0"
    assert str(message["User-Agent"]).startswith("pymail/")
    assert pymail.__version__ in str(message["User-Agent"])
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", str(message["Message-ID"]))
    assert text_of(message) == BODY.decode()
    assert received.mail_from == USER
    assert received.rcpt_tos == [TO, "cc@example.net"]


def test_each_header_appears_once(relay: Server, run: Run) -> None:
    result = run("-s", "once", "-c", "cc@example.net", TO, input=BODY)
    assert result.code == 0, result.err
    names = header_names(relay.messages[0].data)
    for name in ("date", "from", "to", "cc", "subject", "message-id",
                 "mime-version", "user-agent", "content-type"):
        assert names.count(name) == 1, (name, names)


def test_message_id_unique_and_from_the_from_domain(relay: Server,
                                                    run: Run) -> None:
    for _ in range(2):
        result = run("-r", "alert@alerts.example.net", "-s", "id", TO,
                     input=BODY)
        assert result.code == 0, result.err
    ids = [str(parse(m)["Message-ID"]) for m in relay.messages]
    assert len(ids) == 2
    assert ids[0] != ids[1]
    for message_id in ids:
        assert message_id.startswith("<")
        assert message_id.endswith("@alerts.example.net>")


# Recipients ----------------------------------------------------------------


def test_bcc_in_envelope_only(relay: Server, run: Run) -> None:
    result = run("-s", "report", "-b", "hidden@secret.example", TO, input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == [TO, "hidden@secret.example"]
    message = parse(received)
    assert "Bcc" not in message
    assert b"bcc:" not in received.data.lower()
    assert b"hidden" not in received.data
    assert b"secret.example" not in received.data


def test_address_in_to_cc_and_bcc_gets_one_rcpt(relay: Server,
                                                run: Run) -> None:
    result = run("-s", "dup", "-c", TO, "-b", TO, "-b", "other@example.net",
                 TO, input=BODY)
    assert result.code == 0, result.err
    assert relay.messages[0].rcpt_tos == [TO, "other@example.net"]


# Subject -------------------------------------------------------------------


def test_chinese_subject_is_encoded(relay: Server, run: Run) -> None:
    subject = "服务器告警：磁盘已满"
    result = run("-s", subject, TO, input=BODY)
    assert result.code == 0, result.err
    data = relay.messages[0].data
    data.decode("ascii")  # raises if a raw 8-bit byte went on the wire
    assert re.search(rb"^Subject: =\?utf-8\?[bq]\?", header_block(data),
                     re.IGNORECASE | re.MULTILINE)
    assert parse(relay.messages[0])["Subject"] == subject


def test_long_chinese_subject_is_folded(relay: Server, run: Run) -> None:
    subject = "服务器告警：磁盘已满，" * 30
    result = run("-s", subject, TO, input=BODY)
    assert result.code == 0, result.err
    data = relay.messages[0].data
    data.decode("ascii")
    assert all(len(line) <= 78 for line in header_block(data).split(b"\r\n"))
    assert parse(relay.messages[0])["Subject"] == subject.strip()


def test_newline_in_subject_becomes_space(relay: Server, run: Run) -> None:
    result = run("-s", "a\nb", TO, input=BODY)
    assert result.code == 0, result.err
    data = relay.messages[0].data
    assert parse(relay.messages[0])["Subject"] == "a b"
    names = header_names(data)
    assert "b" not in names
    assert b"\r\nb\r\n" not in header_block(data) + b"\r\n"
    assert names.count("subject") == 1


def test_subject_cannot_inject_a_bcc(relay: Server, run: Run) -> None:
    result = run("-s", "a\r\nBcc: evil@x.org", TO, input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == [TO]
    assert "bcc" not in header_names(received.data)
    message = parse(received)
    assert "Bcc" not in message
    assert message["Subject"] == "a Bcc: evil@x.org"


# Body ----------------------------------------------------------------------


def test_utf8_chinese_body(relay: Server, run: Run) -> None:
    body = "服务器 web-01 告警：\n磁盘 /var 已满 (97%)\n请尽快处理。\n"
    result = run("-s", "告警", TO, input=body.encode("utf-8"))
    assert result.code == 0, result.err
    data = relay.messages[0].data
    data.decode("ascii")  # 7bit on the wire: the relay may not do 8BITMIME
    message = parse(relay.messages[0])
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] in ("base64",
                                                    "quoted-printable")
    assert text_of(message) == body


def test_ascii_body_is_us_ascii_7bit(relay: Server, run: Run) -> None:
    body = "line one\nline two\n"
    result = run("-s", "plain", TO, input=body.encode())
    assert result.code == 0, result.err
    message = parse(relay.messages[0])
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "us-ascii"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert text_of(message) == body
    assert b"\r\n\r\nline one\r\nline two\r\n" in relay.messages[0].data


def test_body_read_as_bytes_in_c_locale(relay: Server, run: Run,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "C")
    monkeypatch.setenv("LC_ALL", "C")
    body = "数据库备份完成\n"
    result = run("-s", "backup", TO, input=body.encode("utf-8"))
    assert result.code == 0, result.err
    message = parse(relay.messages[0])
    assert message.get_content_charset() == "utf-8"
    assert text_of(message) == body


def test_body_read_as_bytes_in_c_locale_subprocess(relay: Server) -> None:
    """A real process whose text stdin would be ASCII still reads bytes."""
    env = dict(os.environ, LANG="C", LC_ALL="C", PYTHONUTF8="0",
               PYTHONCOERCECLOCALE="0", PYTHONIOENCODING="ascii")
    body = "数据库备份完成\n"
    proc = subprocess.run(
        [sys.executable, "-m", "pymail", "-n", "-s", "backup", TO],
        input=body.encode("utf-8"), capture_output=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    message = parse(relay.messages[0])
    assert text_of(message) == body


# Line ends, line lengths, dot-stuffing ------------------------------------


def assert_crlf_only(data: bytes) -> None:
    stripped = data.replace(b"\r\n", b"")
    assert b"\n" not in stripped, "bare LF in the data"
    assert b"\r" not in stripped, "bare CR in the data"
    assert data.endswith(b"\r\n")


@pytest.mark.parametrize("body", [
    "x" * 5000 + "\n",
    "short\n" + "y" * 5000 + "\nafter\n",
    "磁" * 5000 + "\n",
    "no newline at the end " * 300,
], ids=["ascii", "ascii-middle", "chinese", "no-final-newline"])
def test_crlf_and_line_length(relay: Server, run: Run, body: str) -> None:
    result = run("-s", "long", TO, input=body.encode("utf-8"))
    assert result.code == 0, result.err
    data = relay.messages[0].data
    assert_crlf_only(data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert text_of(parse(relay.messages[0])).rstrip("\n") == body.rstrip("\n")


def test_crlf_and_line_length_with_attachment(relay: Server, run: Run,
                                              tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"a\nb\n" + b"z" * 3000 + b"\n")
    result = run("-s", "long", "-a", str(path), TO,
                 input=b"x" * 5000 + b"\nunix\nline\n")
    assert result.code == 0, result.err
    data = relay.messages[0].data
    assert_crlf_only(data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_lf_input_with_crlf_input_mixed(relay: Server, run: Run) -> None:
    result = run("-s", "mixed", TO, input=b"dos line\r\nunix line\n")
    assert result.code == 0, result.err
    data = relay.messages[0].data
    assert_crlf_only(data)
    assert text_of(parse(relay.messages[0])) == "dos line\nunix line\n"


@pytest.mark.parametrize("body", [
    ".\n",
    "before\n.\nafter\n",
    ".hidden\n..double\n.\n",
    "text\n.",
    "点\n.\n.开头\n",
], ids=["only-dot", "dot-line", "leading-dots", "dot-at-eof", "utf8"])
def test_dot_lines_arrive_intact(relay: Server, run: Run, body: str) -> None:
    result = run("-s", "dots", TO, input=body.encode("utf-8"))
    assert result.code == 0, result.err
    assert len(relay.messages) == 1
    text = text_of(parse(relay.messages[0]))
    expected = body if body.endswith("\n") else body + "\n"
    assert text == expected


# Attachments ---------------------------------------------------------------


def attachments_of(message: EmailMessage) -> list[EmailMessage]:
    return [p for p in message.iter_parts()
            if p.get_content_disposition() == "attachment"]


def test_attachments(relay: Server, run: Run, tmp_path: Path) -> None:
    files = {
        "report.csv": (os.urandom(3000), "text/csv"),
        "x.pdf": (os.urandom(4096), "application/pdf"),
        "blob.zzq": (os.urandom(57 * 3 + 1), "application/octet-stream"),
        "empty": (b"", "application/octet-stream"),
        "big.bin": (os.urandom(200 * 1024 + 7), "application/octet-stream"),
    }
    args: list[str] = []
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
        args += ["-a", str(tmp_path / name)]
    result = run("-s", "files", *args, TO, input=BODY)
    assert result.code == 0, result.err

    data = relay.messages[0].data
    assert_crlf_only(data)
    message = parse(relay.messages[0])
    assert message.get_content_type() == "multipart/mixed"
    assert message["MIME-Version"] == "1.0"
    parts = list(message.iter_parts())
    assert len(parts) == 1 + len(files)
    assert parts[0].get_content_type() == "text/plain"
    assert parts[0].get_content_disposition() in (None, "inline")
    assert text_of(parts[0]).rstrip("\n") == BODY.decode().rstrip("\n")

    attached = attachments_of(message)
    assert [p.get_filename() for p in attached] == list(files)
    for part, (name, (content, content_type)) in zip(attached, files.items(),
                                                      strict=True):
        assert part.get_content_type() == content_type, name
        assert part["Content-Transfer-Encoding"] == "base64", name
        assert part.get_payload(decode=True) == content, name


def test_attachment_with_chinese_file_name(relay: Server, run: Run,
                                           tmp_path: Path) -> None:
    content = os.urandom(1000)
    path = tmp_path / "报告.csv"
    path.write_bytes(content)
    result = run("-s", "report", "-a", str(path), TO, input=BODY)
    assert result.code == 0, result.err
    relay.messages[0].data.decode("ascii")
    (part,) = attachments_of(parse(relay.messages[0]))
    assert part.get_filename() == "报告.csv"
    assert part.get_content_type() == "text/csv"
    assert part.get_payload(decode=True) == content


def test_attachment_with_empty_body(relay: Server, run: Run,
                                    tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    content = os.urandom(500)
    path.write_bytes(content)
    result = run("-s", "only a file", "-a", str(path), TO, input=b"")
    assert result.code == 0, result.err
    message = parse(relay.messages[0])
    # An empty stdin with attachments sends only the attachments.
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/pdf"]
    assert parts[0].get_payload(decode=True) == content


def test_attachment_with_empty_body_and_E_sends_nothing(
        relay: Server, run: Run, tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(b"%PDF-1.4\n")
    result = run("-E", "-s", "only a file", "-a", str(path), TO, input=b"")
    assert result.code == 0, result.err
    assert relay.messages == []


def test_text_part_without_final_newline(relay: Server, run: Run,
                                           tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(b"%PDF-1.4\n")
    result = run("-s", "exact", "-a", str(path), TO, input=b"no newline")
    assert result.code == 0, result.err
    parts = list(parse(relay.messages[0]).iter_parts())
    assert text_of(parts[0]).rstrip("\n") == "no newline"


def test_text_part_keeps_its_final_newline(relay: Server, run: Run,
                                           tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(b"%PDF-1.4\n")
    result = run("-s", "exact", "-a", str(path), TO, input=BODY)
    assert result.code == 0, result.err
    parts = list(parse(relay.messages[0]).iter_parts())
    assert text_of(parts[0]) == BODY.decode()


def test_attachment_with_non_utf8_file_name(relay: Server, run: Run,
                                            tmp_path: Path, home: Path) -> None:
    content = os.urandom(300)
    # "报告.csv" in GBK, as a file made on a zh_CN.GBK system is named.
    raw = os.path.join(os.fsencode(tmp_path), "报告.csv".encode("gbk"))
    with open(raw, "wb") as stream:
        stream.write(content)
    # A short timeout: the failed DATA leaves the connection waiting.
    result = run("-S", "socket-connect-timeout=0.5", "-s", "gbk",
                 "-a", os.fsdecode(raw), TO, input=b"body 9001\n")
    assert result.code != 70, result.err
    if result.code == 0:
        (part,) = attachments_of(parse(relay.messages[0]))
        assert part.get_payload(decode=True) == content
        assert (part.get_filename() or "").endswith(".csv")
    else:
        assert relay.messages == []
        assert b"body 9001" in dead_letter(home)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_bad_attachment(relay: Server, run: Run, tmp_path: Path, home: Path,
                        kind: str) -> None:
    path = tmp_path / "nightly-report.csv"
    if kind == "directory":
        path.mkdir()
    result = run("-s", "report", "-a", str(path), TO,
                 input=b"the unique body 8472\n")
    assert result.code == 66
    assert str(path) in result.err
    assert result.err.startswith("pymail: ")
    assert relay.messages == []
    assert relay.handler.logins == []  # never connected and logged in
    assert b"the unique body 8472" in dead_letter(home)


def test_bad_attachment_makes_no_connection(run: Run, tmp_path: Path,
                                            mailrc: Callable[[str], Path]
                                            ) -> None:
    """The attachments are opened before anything connects to the relay."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        mailrc(recipe(port, extra="set socket-connect-timeout=2\n"))
        result = run("-s", "r", "-a", str(tmp_path / "missing.csv"), TO,
                     input=BODY)
        assert result.code == 66
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_bad_attachment_among_good_ones(relay: Server, run: Run,
                                        tmp_path: Path, home: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(b"a,b\n")
    missing = tmp_path / "missing.csv"
    result = run("-s", "report", "-a", str(good), "-a", str(missing), TO,
                 input=b"body 5521\n")
    assert result.code == 66
    assert "missing.csv" in result.err
    assert relay.messages == []
    assert b"body 5521" in dead_letter(home)


def test_bad_attachment_closes_the_files_already_opened(
        relay: Server, run: Run, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(b"a,b\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = run("-s", "report", "-a", str(good), "-a",
                     str(tmp_path / "missing.csv"), TO, input=BODY)
        gc.collect()
    assert result.code == 66
    unclosed = [str(w.message) for w in caught
                if issubclass(w.category, ResourceWarning)
                and "good.csv" in str(w.message)]
    assert unclosed == []


# Senders and optional headers ----------------------------------------------


def test_r_sets_from_header_and_envelope(relay: Server, run: Run) -> None:
    result = run("-r", "Alert Bot <alert@example.com>", "-s", "r", TO,
                 input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.mail_from == "alert@example.com"
    (sender,) = parse(received)["From"].addresses
    assert sender.display_name == "Alert Bot"
    assert sender.addr_spec == "alert@example.com"


def test_r_with_a_chinese_display_name(relay: Server, run: Run) -> None:
    result = run("-r", "告警机器人 <alert@example.com>", "-s", "r", TO,
                 input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    received.data.decode("ascii")
    assert received.mail_from == "alert@example.com"
    (sender,) = parse(received)["From"].addresses
    assert sender.display_name == "告警机器人"
    assert sender.addr_spec == "alert@example.com"


def test_sendmail_f_sets_envelope_only(relay: Server, run: Run) -> None:
    result = run("-s", "f", TO, "--", "-f", "bounce@example.com", input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.mail_from == "bounce@example.com"
    assert received.rcpt_tos == [TO]
    message = parse(received)
    assert [a.addr_spec for a in message["From"].addresses] == [USER]
    assert b"bounce@example.com" not in received.data


def test_replyto_sender_organization(relay_with: Callable[[str], Server],
                                     run: Run) -> None:
    relay = relay_with("set replyto=replies@example.org\n"
                       "set sender=robot@example.com\n"
                       "set ORGANIZATION='Example Ops'\n")
    result = run("-s", "hdrs", TO, input=BODY)
    assert result.code == 0, result.err
    message = parse(relay.messages[0])
    assert [a.addr_spec for a in message["Reply-To"].addresses] == [
        "replies@example.org"]
    assert [a.addr_spec for a in message["Sender"].addresses] == [
        "robot@example.com"]
    assert message["Organization"] == "Example Ops"
    assert relay.messages[0].mail_from == USER


def test_no_optional_headers_by_default(relay: Server, run: Run) -> None:
    result = run("-s", "plain", TO, input=BODY)
    assert result.code == 0, result.err
    names = header_names(relay.messages[0].data)
    for name in ("reply-to", "sender", "organization", "cc", "bcc"):
        assert name not in names


def test_hostname_in_ehlo(relay_with: Callable[[str], Server], run: Run) -> None:
    relay = relay_with("set hostname=mail.example.net\n")
    result = run("-v", "-s", "ehlo", TO, input=BODY)
    assert result.code == 0, result.err
    ehlo = [line for line in result.err.splitlines()
            if re.search(r">>> ehlo ", line, re.IGNORECASE)]
    assert ehlo, result.err
    assert all(line.lower().endswith(">>> ehlo mail.example.net")
               for line in ehlo), ehlo
    assert len(relay.messages) == 1


def test_from_unset_uses_smtp_auth_user(server: Server, run: Run,
                                        mailrc: Callable[[str], Path]) -> None:
    text = recipe(server.port)
    assert f"set from={USER}\n" in text
    mailrc(text.replace(f"set from={USER}\n", ""))
    result = run("-s", "who", TO, input=BODY)
    assert result.code == 0, result.err
    received = server.messages[0]
    assert received.mail_from == USER
    assert [a.addr_spec for a in parse(received)["From"].addresses] == [USER]
    assert str(parse(received)["Message-ID"]).endswith("@example.com>")
