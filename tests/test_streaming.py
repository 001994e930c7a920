"""Big messages: the size told to the relay before sending, dead.letter
written as a stream, and the progress bar on a terminal."""

from __future__ import annotations

import base64
import errno
import io
import mailbox
import os
import pty
import random
import re
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Result, recipe
from pymail import deadletter, files, lines, logs, sendmail, spool
from pymail.addresses import Mailbox
from pymail.errors import NoInputError
from pymail.message import BASE64_LINE, BASE64_SLICE, Attachment, Draft, Message
from pymail.sendmail import Options, rebuild
from pymail.settings import resolve_variables
from servers import (
    USER,
    Received,
    Recorder,
    StreamServer,
    free_port,
    start_server,
)

TO = "ops@example.org"
MIB = 1 << 20


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "queue"


@contextmanager
def attached(files: list[tuple[str, bytes]]) -> Iterator[list[Attachment]]:
    """The files written to a temporary folder and opened as attachments."""
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        opened = []
        for name, content in files:
            path = Path(folder) / name
            path.write_bytes(content)
            attachment = Attachment.open(str(path))
            stack.callback(attachment.close)
            opened.append(attachment)
        yield opened


def message(body: bytes, attachments: list[Attachment]) -> Message:
    return Message(Draft(sender=[Mailbox("Bot", USER)], to=[Mailbox("", TO)],
                         subject="sizes", body=body, attachments=attachments))


def assert_exact(built: Message) -> None:
    assert built.size() == len(built.as_bytes())
    # Counting reads nothing: the message can still be written after it.
    assert built.size() == len(built.as_bytes())


# Message.size() -------------------------------------------------------------

def test_size_of_every_attachment_length_up_to_200() -> None:
    for length in range(201):
        with attached([("data.bin", bytes(range(length)))]) as files:
            assert_exact(message(b"see attached\n", files))


@pytest.mark.parametrize("length", [
    0, 1, 2, 3, BASE64_LINE - 1, BASE64_LINE, BASE64_LINE + 1,
    BASE64_SLICE - 1, BASE64_SLICE, BASE64_SLICE + 1,
    2 * BASE64_SLICE + BASE64_LINE + 2])
def test_size_around_lines_and_slices(length: int) -> None:
    content = (b"\x00\xff\r\n.From " * (length // 10 + 1))[:length]
    with attached([("a.bin", content)]) as files:
        assert_exact(message(b"", files))


def test_size_without_attachments() -> None:
    for body in (b"", b"x", b"line\n", "caf\u00e9 \u4e2d\u6587\n".encode(),
                 b"\x1b[31mred\r\n\x00" * 50, b"y" * 5000):
        assert_exact(message(body, []))


names = st.sampled_from(["a.txt", "report.pdf", "caf\u00e9.csv",
                         "\u65e5\u5fd7 2024.log", "=?utf-8?q?x?=.bin",
                         "no extension", "x" * 120 + ".tar.gz"])


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.one_of(st.integers(0, 300),
                                  st.integers(BASE64_SLICE - 60,
                                              BASE64_SLICE + 60)),
                        max_size=4),
       body=st.sampled_from([b"", b"see attached\n",
                             "\u4e2d\u6587\n".encode(), b"no end"]),
       name=names)
def test_size_is_exact(lengths: list[int], body: bytes, name: str) -> None:
    files = [(f"{n}-{name}", bytes([n]) * length)
             for n, length in enumerate(lengths)]
    with attached(files) as opened:
        assert_exact(message(body, opened))


@pytest.mark.parametrize("data", [
    b"Subject: plain\n\nhello\n",
    b"Subject: no end\n\nhello",
    b"Content-Type: text/plain; charset=gbk\nContent-Transfer-Encoding: 8bit"
    b"\n\n\xd6\xd0\xce\xc4\n",
    b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="XX"\n\n'
    b"--XX\nContent-Type: text/plain\n\nsee attached\n--XX\n"
    b"Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
    b"JVBERi0xLjQK\n--XX--\n",
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n\n" + b"QUJD\r\n" * 1000,
])
def test_size_of_messages_from_the_sendmail_entry(data: bytes) -> None:
    settings = resolve_variables(read_system=False,
                                 assignments=[f"from={USER}"])
    built, _ = rebuild(settings, Options(recipients=[TO]), io.BytesIO(data),
                       ())
    assert_exact(built)


def test_attachment_is_sent_as_long_as_it_was_when_opened(tmp_path) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"first\n")
    attachment = Attachment.open(str(path))
    with path.open("ab") as log:
        log.write(b"second\n")
    built = message(b"", [attachment])
    assert b"Zmlyc3QK" in built.as_bytes()  # base64 of "first\n" only
    assert_exact(built)
    attachment.close()


def test_attachment_that_shrinks_is_an_error(tmp_path) -> None:
    path = tmp_path / "rotated.log"
    path.write_bytes(b"x" * 100_000)
    attachment = Attachment.open(str(path))
    path.write_bytes(b"")
    with pytest.raises(NoInputError, match="shorter"):
        message(b"", [attachment]).as_bytes()
    attachment.close()


def test_pseudo_file_is_read_when_opened() -> None:
    """/proc says its files are empty; what they hold is sent."""
    attachment = Attachment.open("/proc/self/status")
    assert attachment.size > 0
    assert_exact(message(b"", [attachment]))
    attachment.close()


# dead.letter, written as a stream ---------------------------------------------

def entries_of(data: bytes) -> list[bytes]:
    """The entries of an mbox file's bytes, each with its From_ line."""
    found = deadletter.spans(io.BytesIO(data))
    return [data[span.start:span.end] for span in found]


def read_back(entry: bytes) -> deadletter.Kept:
    """One entry as --resend reads it."""
    return deadletter.read_entry(io.BytesIO(entry),
                                 deadletter.Span(0, len(entry)))


def mboxrd(data: bytes) -> bytes:
    """What mbox_text must write, computed on the whole message at once."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    text = b"\n".join(b">" + line if re.match(rb">*From ", line) else line
                      for line in lines)
    return text if text.endswith(b"\n") else text + b"\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """data in chunks, cut at the given offsets."""
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


tricky = st.lists(st.sampled_from([b"From ", b">", b"From", b" ", b"\r",
                                   b"\n", b"\r\n", b"x", b"rom "]),
                  max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=tricky, points=st.lists(st.integers(0, 400), max_size=12),
       block=st.sampled_from([6, 7, 11, 1 << 16]))
def test_mbox_text_quotes_whatever_the_chunks(data: bytes, points: list[int],
                                              block: int) -> None:
    """The same bytes as quoting the whole message, however it is cut into
    chunks, and with lines longer than a block written in parts."""
    with mock.patch.object(lines, "BLOCK", block):
        written = b"".join(deadletter.mbox_text(cut(data, points)))
    assert written == mboxrd(data)


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.sampled_from([b"From me", b">From you", b"", b".",
                                       b"x" * 30, b">>From ", b"Fro"]),
                      max_size=30),
       points=st.lists(st.integers(0, 400), max_size=8))
def test_kept_entry_reads_back_as_the_message(lines: list[bytes],
                                              points: list[int]) -> None:
    message = b"Subject: x\r\n\r\n" + b"".join(line + b"\r\n" for line in lines)
    entry = b"".join(deadletter.mbox_entry(
        USER, cut(message, points), recipients=[TO]))
    [raw] = entries_of(entry)
    kept = read_back(raw)
    assert kept.message == message
    assert kept.recipients == [TO]


def split_mbox(data: bytes) -> list[bytes]:
    """The entries of an mbox file, found line by line in memory."""
    entries: list[bytes] = []
    for line in re.findall(rb"[^\n]*\n|[^\n]+$", data):
        if line.startswith(b"From ") or not entries:
            entries.append(line)
        else:
            entries[-1] += line
    return [e for e in entries if e.startswith(b"From ")]


def parse_entry(entry: bytes) -> tuple[str | None, list[str], bytes]:
    """Envelope and message of one entry, read in memory."""
    lines = entry.split(b"\n")
    sender, recipients, index = None, [], 1
    while index < len(lines):
        line = lines[index]
        if line.startswith(b"X-Pymail-Envelope-From: "):
            sender = line[24:].decode().strip().strip("<>")
        elif line.startswith(b"X-Pymail-Envelope-To: "):
            recipients.append(line[22:].decode().strip().strip("<>"))
        elif line.startswith(b"X-Pymail-Error: "):
            index += 1
            break  # the last envelope line
        elif not line.startswith(b"X-Pymail-Rebuild: "):
            break
        index += 1
    body = b"\n".join(lines[index:])
    if body.endswith(b"\n\n"):
        body = body[:-1]
    body = re.sub(rb"^>(>*From )", rb"\1", body, flags=re.MULTILINE)
    return sender, recipients, body.replace(b"\n", b"\r\n")


mbox_pieces = st.lists(st.sampled_from([
    b"From a@b Thu Jan  1 00:00:00 2026\n", b"X-Pymail-Envelope-From: <a@b>\n",
    b"X-Pymail-Envelope-To: <c@d>\n", b"X-Pymail-Error: 451 later\n",
    b"X-Pymail-Error: 550 " + b"long reply " * 1000 + b"\n",
    b"Subject: x\n", b"\n", b">From ", b"From ", b"x", b"\r", b"\n\n"]),
    max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=mbox_pieces, block=st.sampled_from([5, 6, 7, 13, 1 << 16]))
def test_entries_are_read_back_in_blocks(data: bytes, block: int) -> None:
    """Found and read by offsets, a block at a time, the entries are those
    found by reading the whole file."""
    if not data.endswith(b"\n"):
        data += b"\n"
    with mock.patch.object(lines, "BLOCK", block):
        stream = io.BytesIO(data)
        found = deadletter.spans(stream)
        assert [data[s.start:s.end] for s in found] == split_mbox(data)
        for span, entry in zip(found, split_mbox(data), strict=True):
            kept = deadletter.read_entry(stream, span)
            assert (kept.sender, kept.recipients, kept.message) == \
                parse_entry(entry)


def test_removed_entries_are_found_by_content(tmp_path: Path) -> None:
    first = b"From a Thu Jan  1 00:00:00 2026\nSubject: one\n\n1\n\n"
    second = b"From b Thu Jan  1 00:00:00 2026\nSubject: two\n\n22\n\n"
    path = tmp_path / "dead.letter"
    prefix = b"To: x@example.org\n\nmail with no From_ line (bsd-mailx)\n"
    path.write_bytes(prefix + first + second + first)

    def marks(*entries: bytes) -> list[tuple[int, str]]:
        stream = io.BytesIO(b"".join(entries))
        return [deadletter.fingerprint(stream, span)
                for span in deadletter.spans(stream)]

    deadletter.remove_entries(path, marks(first))
    assert path.read_bytes() == prefix + second + first  # each removed once
    deadletter.remove_entries(path, marks(b"From c\nSubject: gone\n\n"))
    assert path.read_bytes() == prefix + second + first
    deadletter.remove_entries(path, marks(first, second))
    assert path.read_bytes() == prefix  # what is not an entry stays
    path.write_bytes(first)
    deadletter.remove_entries(path, marks(first))
    assert not path.exists()


def test_failed_writing_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "dead.letter"
    path.write_bytes(OLD_ENTRY)
    path.chmod(0o600)

    def pieces() -> Iterator[bytes]:
        yield b"From bot@example.com Thu Jan  1 00:00:00 2026\n"
        yield b"Subject: half\n\n" + b"x" * 100_000
        raise NoInputError("attachment gone")

    with pytest.raises(NoInputError):
        deadletter.append_private(path, pieces())
    assert path.read_bytes() == OLD_ENTRY


OLD_ENTRY = (b"From someone Thu Jan  1 00:00:00 2026\nSubject: older\n\n"
             b"kept before\n\n")


@dataclass
class Refuser(Recorder):
    """Reads the whole message, keeps it, then gives `reply` (a refusal
    unless told); `then` runs before the reply."""

    then: Callable[[], None] | None = None
    reply: str = "554 5.6.0 refused after reading it"

    async def handle_DATA(self, server: Any, session: Any,
                          envelope: Any) -> str:
        self.messages.append(Received(envelope.mail_from,
                                      list(envelope.rcpt_tos),
                                      envelope.original_content))
        if self.then is not None:
            self.then()
        return self.reply


def big_file(path: Path, size: int) -> Path:
    path.write_bytes(random.Random(size).randbytes(size))
    return path


def from_lines(count: int) -> bytes:
    """Lines that need quoting in mbox, of lengths that vary."""
    return b"".join(b"From line %d %s\n>From %s\n" % (n, b"y" * (n % 53),
                                                     b"z" * (n % 7))
                    for n in range(count))


def test_big_refused_message_is_kept_exactly(cert, mailrc, run, home,
                                             tmp_path) -> None:
    attachment = big_file(tmp_path / "dump.bin", 5 * MIB)
    (home / "dead.letter").write_bytes(OLD_ENTRY)
    handler = Refuser()
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(recipe(srv.port))
        result = run("-s", "dump", "-a", str(attachment), TO,
                     input=from_lines(2000))
    finally:
        srv.stop()
    assert result.code == 69, result.err
    assert "message saved in" in result.err
    [received] = handler.messages
    data = (home / "dead.letter").read_bytes()
    assert data.startswith(OLD_ENTRY)
    old, raw = entries_of(data)
    assert read_back(raw).message == received.data
    assert_mbox(home / "dead.letter", 2)


def test_big_kept_message_is_resent_exactly(cert, mailrc, run, home,
                                            tmp_path) -> None:
    attachment = big_file(tmp_path / "dump.bin", 5 * MIB)
    refuser = Refuser()
    srv = start_server(cert=cert, handler=refuser)
    try:
        mailrc(recipe(srv.port))
        run("-s", "dump", "-a", str(attachment), TO, input=from_lines(2000))
    finally:
        srv.stop()
    (home / "dead.letter").write_bytes((home / "dead.letter").read_bytes()
                                       + OLD_ENTRY)
    taker = Recorder()
    srv = start_server(cert=cert, handler=taker)
    try:
        mailrc(recipe(srv.port))
        result = run("--resend")
    finally:
        srv.stop()
    assert result.code == 0, result.err
    assert "resent 1 of 2" in result.out
    [resent] = taker.messages
    assert resent.data == refuser.messages[0].data
    assert resent.rcpt_tos == [TO]
    assert (home / "dead.letter").read_bytes() == OLD_ENTRY


def assert_mbox(path: Path, count: int) -> None:
    """The file parses as an mbox of `count` messages: every line of a
    message that begins with `From ` was quoted."""
    box = mailbox.mbox(path, create=False)
    try:
        assert len(box) == count
    finally:
        box.close()


def test_quoting_across_the_blocks_of_a_queued_message(cert, mailrc, run,
                                                       home, queue_dir):
    """A queued message is read back in blocks that cut lines anywhere:
    moved to dead.letter, it is kept exactly, From lines quoted."""
    mailrc(recipe(free_port(), extra=f"set pymail-queue={queue_dir}\n"))
    body = from_lines(6000)
    assert run("-s", "froms", TO, input=body).code == 0
    [queued] = queue_dir.glob("*.eml")
    message = queued.read_bytes()
    assert len(message) > 4 * spool.READ_SIZE
    handler = Recorder(rcpt_replies={TO: "550 5.1.1 no such user"})
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(recipe(srv.port, extra=f"set pymail-queue={queue_dir}\n"))
        result = run("--flush", queued.stem)
    finally:
        srv.stop()
    assert result.code == 69, result.err
    [raw] = entries_of((home / "dead.letter").read_bytes())
    assert read_back(raw).message == message
    assert_mbox(home / "dead.letter", 1)


def test_attachment_gone_when_kept_leaves_no_half_entry(cert, mailrc, run,
                                                        home, tmp_path):
    attachment = big_file(tmp_path / "rotated.log", 2 * MIB)
    (home / "dead.letter").write_bytes(OLD_ENTRY)
    handler = Refuser(then=lambda: attachment.write_bytes(b"short"))
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(recipe(srv.port))
        result = run("-s", "log", "-a", str(attachment), TO, input=b"see log\n")
    finally:
        srv.stop()
    assert result.code == 69, result.err
    assert "(without the attachments)" in result.err
    old, raw = entries_of((home / "dead.letter").read_bytes())
    assert old == OLD_ENTRY
    kept = read_back(raw).message
    assert b"see log" in kept and b'filename="rotated.log"' in kept
    assert len(kept) < 10_000
    assert_mbox(home / "dead.letter", 2)


def test_dead_letter_too_big_to_write_is_left_as_it_was(mailrc, home,
                                                        tmp_path):
    """Writing stops midway (a full disk, a quota; here RLIMIT_FSIZE): the
    file is cut back, and the message goes to stderr whole."""
    attachment = big_file(tmp_path / "dump.bin", MIB)
    dead = home / "dead.letter"
    dead.write_bytes(OLD_ENTRY)
    mailrc(recipe(free_port()))
    limited = ("import resource, sys; "
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({MIB // 4},) * 2); "
               "from pymail.cli import main; main()")
    proc = subprocess.run(
        [sys.executable, "-c", limited, "-n", "-s", "dump", "-a",
         str(attachment), TO], input=b"the dump\n", capture_output=True,
        timeout=60, check=False)
    assert proc.returncode == 73, proc.stderr[-2000:]
    assert dead.read_bytes() == OLD_ENTRY
    entry, _, said = proc.stderr.rpartition(b"\npymail: ")
    assert said.startswith(b"cannot write")
    [raw] = entries_of(entry + b"\n")
    kept = read_back(raw)
    assert kept.recipients == [TO]
    assert len(kept.message) > MIB and kept.message.endswith(b"--\r\n")


def test_record_without_the_attachment_is_only_a_warning(cert, mailrc, run,
                                                         home, tmp_path):
    attachment = big_file(tmp_path / "rotated.log", MIB)
    record = home / "sent.mbox"
    handler = Refuser(then=lambda: attachment.write_bytes(b""),
                      reply="250 2.0.0 taken")
    srv = start_server(cert=cert, handler=handler)
    try:
        mailrc(recipe(srv.port, extra=f"set record={record}\n"))
        result = run("-s", "log", "-a", str(attachment), TO, input=b"log\n")
    finally:
        srv.stop()
    assert result.code == 0, result.err
    assert "delivered, but could not write record" in result.err
    assert len(handler.messages) == 1
    assert not record.exists() or record.read_bytes() == b""


# The progress bar --------------------------------------------------------------

def on_terminal(*args: str, stdin: bytes = b"files\n") -> tuple[int, bytes]:
    """Run pymail with stderr on a pseudo-terminal: its exit status and
    what the terminal showed."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymail", "-n", *args],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=terminal)
    finally:
        os.close(terminal)
    shown: list[bytes] = []
    reader = threading.Thread(target=read_terminal, args=(controller, shown))
    reader.start()
    try:
        proc.communicate(stdin, timeout=60)
    finally:
        reader.join(10)
        os.close(controller)
    return proc.returncode, b"".join(shown)


def seen(shown: bytes) -> bytes:
    """What the terminal showed, without its control sequences (click
    hides the cursor while it draws)."""
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", shown)


def read_terminal(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # EIO: the program closed the terminal
            return
        if not data:
            return
        into.append(data)


def verified(port: int, ca_file: Path, auth: bool = True) -> str:
    """A mail.rc that checks the relay's certificate, as one would for a
    person at the terminal, who is warned about ssl-verify=ignore."""
    if not auth:
        return (f"set from={USER}\nset smtp=smtps://127.0.0.1:{port}\n"
                f"set ssl-ca-file={ca_file}\n")
    return recipe(port).replace("set ssl-verify=ignore",
                                f"set ssl-ca-file={ca_file}")


@pytest.fixture
def private_rc(mailrc: Callable[[str], Path]) -> Callable[[str], Path]:
    """~/.mailrc, mode 0600: a password in it readable by others is
    something pymail warns about on a terminal."""
    def write(text: str) -> Path:
        path = mailrc(text)
        path.chmod(0o600)
        return path
    return write


def test_progress_bar_on_a_terminal(server, private_rc, tmp_path, ca_file):
    private_rc(verified(server.port, ca_file))
    attachment = big_file(tmp_path / "backup.tar", 5 * MIB)
    code, shown = on_terminal("-s", "backup", "-a", str(attachment), TO)
    assert code == 0, shown
    assert len(server.messages) == 1
    # One line, redrawn; it ends full, then ends (LF shows as CRLF).
    [bar, after] = seen(shown).split(b"\r\n")
    assert bar.startswith(b"\rpymail: sending 6.8 MiB  [")
    assert re.fullmatch(rb"pymail: sending 6.8 MiB  \[#+\]  100%",
                        bar.rpartition(b"\r")[2])
    assert after == b""


def test_no_bar_when_stderr_is_a_pipe(server, mailrc, tmp_path):
    mailrc(recipe(server.port))
    attachment = big_file(tmp_path / "backup.tar", 5 * MIB)
    proc = subprocess.run(
        [sys.executable, "-m", "pymail", "-n", "-s", "backup", "-a",
         str(attachment), TO], input=b"files\n", capture_output=True,
        timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert len(server.messages) == 1


def test_no_bar_for_a_small_message_on_a_terminal(server, private_rc,
                                                  tmp_path, ca_file):
    private_rc(verified(server.port, ca_file))
    attachment = big_file(tmp_path / "report.pdf", MIB)
    code, shown = on_terminal("-s", "report", "-a", str(attachment), TO)
    assert code == 0, shown
    assert shown == b""
    assert len(server.messages) == 1


def hang_up_during_data(tls: ssl.SSLSocket, stopping: threading.Event) -> None:
    """A relay that takes a megabyte of the message, then hangs up."""
    reader = tls.makefile("rb")
    tls.sendall(b"220 ready\r\n")
    while line := reader.readline():
        if line.upper().startswith(b"DATA"):
            tls.sendall(b"354 go on\r\n")
            reader.read(MIB)
            return
        tls.sendall(b"250 ok\r\n")


def test_bar_ends_its_line_when_the_upload_fails(cert, private_rc, home,
                                                 tmp_path, ca_file):
    relay = StreamServer(cert, hang_up_during_data)
    private_rc(verified(relay.port, ca_file, auth=False))
    attachment = big_file(tmp_path / "backup.tar", 20 * MIB)
    try:
        code, shown = on_terminal("-s", "backup", "-a", str(attachment), TO)
    finally:
        relay.stop()
    assert code == 75, shown
    # The bar stops where the relay hung up; the error has its own line.
    [bar, said, after] = seen(shown).split(b"\r\n")
    assert bar.startswith(b"\rpymail: sending 27.4 MiB  [")
    assert b"100%" not in bar
    assert said.startswith(b"pymail: ")
    assert said.endswith(b"message saved in %s" % bytes(home / "dead.letter"))
    assert after == b""
    assert (home / "dead.letter").stat().st_size > 20 * MIB


def test_no_bar_under_v(server, private_rc, tmp_path, ca_file):
    """-v shows the SMTP dialogue, which would cut through a bar."""
    private_rc(verified(server.port, ca_file))
    attachment = big_file(tmp_path / "backup.tar", 5 * MIB)
    code, shown = on_terminal("-v", "-s", "backup", "-a", str(attachment), TO)
    assert code == 0, shown
    assert b">>> DATA" in shown
    assert b"sending" not in shown


# The sendmail entry: stdin held in a file ---------------------------------------

def until_dot(data: bytes) -> bytes:
    """What sendmail reads without -i: the lines up to a lone dot."""
    kept = []
    for line in io.BytesIO(data):
        if line.rstrip(b"\r\n") == b".":
            break
        kept.append(line)
    return b"".join(kept)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x",
                                      b"..", b"a long line"]),
                     max_size=30).map(b"".join),
       points=st.lists(st.integers(0, 100), max_size=8),
       block=st.sampled_from([6, 7, 1 << 16]))
def test_a_lone_dot_ends_the_message_whatever_the_chunks(
        data: bytes, points: list[int], block: int) -> None:
    with mock.patch.object(lines, "BLOCK", block):
        read = b"".join(sendmail._until_dot(cut(data, points)))
    assert read == until_dot(data)


def test_spooled_holds_a_small_message_in_memory() -> None:
    held = files.spooled([b"a\n", b"b\n"])
    assert isinstance(held, io.BytesIO)
    assert held.read() == b"a\nb\n"


def test_spooled_puts_a_big_message_in_a_file() -> None:
    pieces = [bytes([n]) * 100_000 for n in range(30)]
    with files.spooled(pieces) as held:
        assert not isinstance(held, io.BytesIO)
        assert held.read() == b"".join(pieces)


def test_spooled_without_room_for_the_file(monkeypatch) -> None:
    """The temporary file fails midway: what stdin gave is not lost."""
    written = []

    def full(fd: int, data: bytes) -> None:
        if written:
            os.write(fd, data[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(data)
        os.write(fd, data)

    monkeypatch.setattr(files, "write_all", full)
    pieces = [bytes([n]) * 700_000 for n in range(5)]
    held = files.spooled(pieces)
    assert isinstance(held, io.BytesIO)
    assert held.read() == b"".join(pieces)


def test_spooled_without_a_temporary_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    pieces = [bytes([n]) * 700_000 for n in range(3)]
    assert files.spooled(pieces).read() == b"".join(pieces)


def mime_message(size: int) -> bytes:
    """What a script builds and pipes to sendmail: LF line ends."""
    data = random.Random(size).randbytes(size)
    return (b"From: backup@example.org\nTo: ops@example.org\n"
            b"Subject: dump\nMIME-Version: 1.0\n"
            b"Content-Type: application/octet-stream\n"
            b"Content-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(data))


def run_sendmail(monkeypatch, capsys, *args: str, input: bytes) -> Result:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(input)))
    try:
        sendmail.main(list(args), program="sendmail")
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return Result(code, out, err)


def test_big_mime_message_through_sendmail(server, mailrc, monkeypatch,
                                           capsys) -> None:
    mailrc(recipe(server.port))
    data = mime_message(3 * MIB)
    result = run_sendmail(monkeypatch, capsys, "-i", TO, input=data)
    assert result.code == 0, result.err
    [received] = server.messages
    head, _, body = received.data.partition(b"\r\n\r\n")
    assert body == data.partition(b"\n\n")[2].replace(b"\n", b"\r\n")
    assert b"Content-Transfer-Encoding: base64" in head


def test_big_message_kept_before_it_was_built(server, mailrc, monkeypatch,
                                              capsys, run, home) -> None:
    """`To: nobody` resolves to no address: kept as it came, then built
    and sent by --resend once the alias exists."""
    mailrc(recipe(server.port))
    data = mime_message(2 * MIB).replace(b"To: ops@example.org",
                                         b"To: nobody")
    result = run_sendmail(monkeypatch, capsys, "-t", "-i", input=data)
    assert result.code == 65, result.err
    [raw] = entries_of((home / "dead.letter").read_bytes())
    assert read_back(raw).message == data.replace(b"\n", b"\r\n")
    mailrc(recipe(server.port, extra=f"alias nobody {TO}\n"))
    resent = run("--resend")
    assert resent.code == 0, resent.err
    [received] = server.messages
    assert received.rcpt_tos == [TO]
    body = received.data.partition(b"\r\n\r\n")[2]
    assert body == data.partition(b"\n\n")[2].replace(b"\n", b"\r\n")


def test_removing_from_a_file_moved_away_meanwhile_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --resend while someone moved dead.letter away: nothing to rewrite.
    logs.configure(logs.WARNING)  # as the command line does
    deadletter.remove_entries(tmp_path / "moved.dead.letter", [(10, "0" * 64)])
    assert not (tmp_path / "moved.dead.letter").exists()
    assert "went away while --resend ran" in capsys.readouterr().err
