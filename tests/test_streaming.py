"""Big messages: the size told to the relay before sending, dead.letter
written as a stream, and the progress bar on a terminal."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymail.addresses import Mailbox
from pymail.message import BASE64_LINE, BASE64_SLICE, Attachment, Draft, Message
from pymail.sendmail import Options, rebuild
from pymail.settings import resolve_variables
from servers import USER

TO = "ops@example.org"


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
    built, _ = rebuild(settings, Options(recipients=[TO]), data, ())
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
    from pymail.errors import NoInputError

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
