"""Opening the files pymail reads and appends to, without blocking.

A FIFO or a device named where a file is expected (an attachment, -q, a
mail.rc, a .env file, dead.letter, the log) would block pymail forever or
feed it without end; only regular files are opened.

Also where a message read once (from stdin) is held: see spooled().
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from itertools import chain
from pathlib import Path
from typing import BinaryIO

# A message up to this size is held in memory; a bigger one in a file.
IN_MEMORY = 1 << 20


def open_regular(path: str | Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses anything but a regular file (ENODEV-style
    OSError with a clear strerror), without waiting on a FIFO."""
    fd = os.open(path, flags | os.O_NONBLOCK, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_regular(path: str | Path) -> bytes:
    """The whole of a regular file."""
    fd = open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


def spooled(pieces: Iterable[bytes]) -> BinaryIO:
    """The pieces in a file to read from the start: in memory when they
    are few, else in an unnamed temporary file (0600, in $TMPDIR)."""
    held = io.BytesIO()
    rest = iter(pieces)
    for piece in rest:
        held.write(piece)
        if held.tell() > IN_MEMORY:
            return _on_disk(chain([held.getvalue()], rest))
    held.seek(0)
    return held


def _on_disk(pieces: Iterator[bytes]) -> BinaryIO:
    """The pieces in a temporary file. What was read from stdin cannot be
    read again: when that file cannot be written (no room), they are held
    in memory after all."""
    # Imported here: most messages are small, and start-up time counts.
    import tempfile

    try:
        # The file is handed to the caller open: no `with` here.
        disk = tempfile.TemporaryFile()  # noqa: SIM115
    except OSError:
        return _in_memory(io.BytesIO(), pieces)
    written = 0
    for piece in pieces:
        try:
            write_all(disk.fileno(), piece)
        except OSError:
            with disk:
                disk.seek(0)
                held = io.BytesIO(disk.read(written))
            held.seek(0, os.SEEK_END)
            return _in_memory(held, chain([piece], pieces))
        written += len(piece)
    disk.seek(0)
    return disk


def _in_memory(held: io.BytesIO, pieces: Iterable[bytes]) -> BinaryIO:
    for piece in pieces:
        held.write(piece)
    held.seek(0)
    return held


# stderr ---------------------------------------------------------------------
#
# cron and daemons may start pymail with stderr closed, on /dev/null or on a
# full disk. What pymail says there must never fail the command, change its
# exit status, or land in stdout or in a file opened later as fd 2.

class _Forgiving(io.RawIOBase):
    """A file descriptor whose write errors are dropped."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.failed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        try:
            return os.write(self.fd, data)
        except OSError:
            self.failed = True
            return len(data)


def steady_streams() -> None:
    """Open fds 0-2 on /dev/null where they are closed, and make stderr a
    stream whose failures are dropped; for the command's entry points."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free fd
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(_Forgiving(2)), errors="backslashreplace",
        line_buffering=True)


def sync_directory(path: str | Path) -> None:
    """fsync a directory: the names just made or renamed in it last."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def try_lock(path: Path, *, optional: bool = False) -> Iterator[bool]:
    """Hold an exclusive flock on the file path (made 0600 if missing);
    yields False, at once, when another process holds it. Optional, a lock
    file that cannot be made holds nothing (yields True)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        if not optional:
            raise
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def stdout_gone() -> int:
    """The reader of stdout went away (`pymail --queue | head`): what is
    still buffered goes to /dev/null, so that exit is quiet; returns the
    status of a tool killed by SIGPIPE, 141, as the shell reports it."""
    with suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return 128 + 13  # SIGPIPE


def to_stderr(pieces: Iterable[bytes]) -> bool:
    """Write the pieces to stderr; False when they cannot be read there
    (no stderr, stderr is /dev/null, or writing failed)."""
    stream = sys.stderr
    if stream is None:
        return False
    try:
        mode = os.fstat(stream.fileno())
        null = os.stat(os.devnull)
        if stat.S_ISCHR(mode.st_mode) and mode.st_rdev == null.st_rdev:
            return False
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a file descriptor: a test's capture
    try:
        stream.flush()
        for piece in pieces:
            stream.buffer.write(piece)
        stream.buffer.flush()
    except (OSError, ValueError, AttributeError):
        return False
    return not getattr(getattr(stream.buffer, "raw", None), "failed", False)
