"""Opening the files pymail reads and appends to, without blocking.

A FIFO or a device named where a file is expected (an attachment, -q, a
mail.rc, a .env file, dead.letter, the log) would block pymail forever or
feed it without end; only regular files are opened.

Also where a message read once (from stdin) is held: see spooled().
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterable, Iterator
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
