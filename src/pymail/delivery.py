"""What happens to a message that could not be delivered: dead.letter."""

from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from pymail.errors import DeadLetterError

FROM_LINE = re.compile(rb"^>*From ")


def mbox_entry(sender: str, chunks: Iterable[bytes]) -> bytes:
    """One mbox entry: the From_ line, the message with LF line ends and
    mboxrd quoting of lines that begin with `From `, then a blank line."""
    stamp = time.asctime(time.gmtime())
    data = b"".join(chunks).replace(b"\r\n", b"\n")
    lines = [b">" + line if FROM_LINE.match(line) else line
             for line in data.split(b"\n")]
    body = b"\n".join(lines)
    if not body.endswith(b"\n"):
        body += b"\n"
    head = f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode()
    return head + body + b"\n"


def append_private(path: Path, data: bytes) -> None:
    """Append to path, creating it with mode 0600 whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL,
                     0o600)
        os.fchmod(fd, 0o600)
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def keep(path: Path | None, sender: str, chunks: Iterable[bytes]) -> str:
    """Save a message that was not delivered; returns where it went.

    When dead.letter cannot be written, the message goes to stderr so that it
    is not lost, and DeadLetterError (exit 73) is raised.
    """
    entry = mbox_entry(sender, chunks)
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
