"""Where undelivered messages are kept: dead.letter, in mbox format, with
their envelope, so that `pymail --resend` can send them again."""

from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pymail.errors import DeadLetterError
from pymail.files import open_regular, write_all

FROM_LINE = re.compile(rb"^>*From ")
QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
# The envelope goes in front of the message's own headers in dead.letter;
# --resend reads these lines back and removes them before sending.
ENVELOPE_FROM = b"X-Pymail-Envelope-From: "
ENVELOPE_TO = b"X-Pymail-Envelope-To: "
ERROR_HEADER = b"X-Pymail-Error: "
# A message kept before pymail could build it (a bad address, an unknown
# name): --resend builds it as the sendmail entry does, "t" meaning that
# its To, Cc and Bcc headers are recipients too.
REBUILD_HEADER = b"X-Pymail-Rebuild: "


@dataclass(repr=False, eq=False)
class Kept:
    """A message read back from dead.letter."""

    sender: str | None
    recipients: list[str]
    message: bytes  # CRLF line ends, envelope lines removed
    rebuild: str | None = None  # see REBUILD_HEADER

    @property
    def resendable(self) -> bool:
        if self.rebuild:
            return bool(self.recipients) or self.rebuild == "t"
        return self.sender is not None and bool(self.recipients)


def envelope_lines(sender: str, recipients: list[str],
                   error: str | None = None, rebuild: str | None = None
                   ) -> bytes:
    """The envelope (and the last error) as header lines, LF-terminated."""
    def clean(text: str) -> bytes:
        return " ".join(text.split()).encode("utf-8", "replace")

    lines = [ENVELOPE_FROM + b"<" + clean(sender) + b">"]
    lines += [ENVELOPE_TO + b"<" + clean(r) + b">" for r in recipients]
    if rebuild:
        lines.append(REBUILD_HEADER + rebuild.encode())
    if error:
        text = " ".join(error.split())
        lines.append(ERROR_HEADER + text.encode("utf-8", "replace"))
    return b"".join(line + b"\n" for line in lines)


def mbox_entry(sender: str, chunks: Iterable[bytes], *,
               recipients: list[str] | None = None,
               error: str | None = None, rebuild: str | None = None) -> bytes:
    """One mbox entry: the From_ line, the envelope when known, the message
    with LF line ends and mboxrd quoting of lines that begin with `From `,
    then a blank line."""
    stamp = time.asctime(time.gmtime())
    data = b"".join(chunks).replace(b"\r\n", b"\n")
    lines = [b">" + line if FROM_LINE.match(line) else line
             for line in data.split(b"\n")]
    body = b"\n".join(lines)
    if not body.endswith(b"\n"):
        body += b"\n"
    head = f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode()
    if recipients or rebuild:
        head += envelope_lines(sender, recipients or [], error, rebuild)
    return head + body + b"\n"


def append_private(path: Path, data: bytes) -> None:
    """Append to path, creating it with mode 0600 whatever the umask.

    The lock is the one --resend takes while it rewrites the file; after
    waiting for it, a file that was replaced meanwhile is opened anew.
    """
    while True:
        try:
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                              os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)
        except FileExistsError:
            # A FIFO here would block forever: regular files only.
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                write_all(fd, data)
                os.fsync(fd)
                return
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def keep(path: Path | None, sender: str, chunks: Iterable[bytes], *,
         recipients: list[str] | None = None, error: str | None = None,
         rebuild: str | None = None) -> str:
    """Save a message that was not delivered; returns where it went.

    When dead.letter cannot be written, the message goes to stderr so that it
    is not lost, and DeadLetterError (exit 73) is raised.
    """
    entry = mbox_entry(sender, chunks, recipients=recipients, error=error,
                       rebuild=rebuild)
    if path is None:
        return "not saved (nosave is set)"
    try:
        append_private(path, entry)
    except OSError as exc:
        sys.stderr.buffer.write(entry)
        sys.stderr.flush()
        raise DeadLetterError(f"cannot write {path}: {exc.strerror or exc}; "
                              "the message was printed on stderr") from exc
    return f"message saved in {path}"


# Reading dead.letter back --------------------------------------------------

def raw_entries(data: bytes) -> list[bytes]:
    """The entries of an mbox file, each with its From_ line."""
    entries: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"From ") or not entries:
            entries.append(line)
        else:
            entries[-1] += line
    return [e for e in entries if e.startswith(b"From ")]


def read_entry(entry: bytes) -> Kept:
    """Parse one raw entry: the From_ line, envelope lines, then the message
    (mboxrd-unquoted, CRLF line ends, without the blank line mbox adds)."""
    sender: str | None = None
    recipients: list[str] = []
    rebuild = None
    lines = entry.split(b"\n")
    index = 1
    while index < len(lines):
        line = lines[index]
        if line.startswith(ENVELOPE_FROM):
            sender = _bracketed(line[len(ENVELOPE_FROM):])
        elif line.startswith(ENVELOPE_TO):
            recipients.append(_bracketed(line[len(ENVELOPE_TO):]))
        elif line.startswith(REBUILD_HEADER):
            rebuild = line[len(REBUILD_HEADER):].decode("ascii", "replace")
        elif not line.startswith(ERROR_HEADER):
            break
        index += 1
    body = b"\n".join(lines[index:])
    if body.endswith(b"\n\n"):
        body = body[:-1]
    body = QUOTED_FROM.sub(rb"\1", body)
    return Kept(sender, recipients, body.replace(b"\n", b"\r\n"),
                rebuild.strip() if rebuild else None)


def _bracketed(value: bytes) -> str:
    return value.strip().decode("utf-8", "replace").strip("<>")


def remove_entries(path: Path, done: list[bytes]) -> None:
    """Remove these raw entries from path, under the lock appenders take;
    entries appended meanwhile stay. An emptied file is removed."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(path, "rb") as stream:
            entries = raw_entries(stream.read())
        for entry in done:
            if entry in entries:
                entries.remove(entry)
        if not entries:
            os.unlink(path)
            return
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(out, 0o600)
            write_all(out, b"".join(entries))
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(temporary, path)
    finally:
        os.close(fd)
