"""Opening the files pymail reads and appends to, without blocking.

A FIFO or a device named where a file is expected (an attachment, -q, a
mail.rc, a .env file, dead.letter, the log) would block pymail forever or
feed it without end; only regular files are opened.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


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
