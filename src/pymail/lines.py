"""Messages as streams of bytes, cut again at line ends.

A message travels in chunks that may end anywhere (the queue and
dead.letter are read in blocks). What looks at lines (mbox quoting, line
end conversion, the dot that ends sendmail's input) must see the start of
each line whole; a long line is still never held whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

# Pieces are of about this size; a longer line is handed on in parts.
BLOCK = 1 << 16
CRLF = b"\r\n"
# Enough of a line to tell whether it is a From_ line (`>>From `).
LINE_START = len(b"From ")


def line_pieces(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """The bytes of chunks, cut so that each piece is whole lines, but for
    the last and the parts of a line longer than BLOCK; with each piece,
    whether it begins a line."""
    pending = b""  # the start of a line, not yet complete
    at_start = True  # pending begins a line (not the rest of a long one)
    for chunk in chunks:
        for offset in range(0, len(chunk), BLOCK):
            pending += chunk[offset:offset + BLOCK]
            cut = pending.rfind(b"\n") + 1
            if not cut:
                # No line end yet: hold the line, unless it is long and
                # its start shows whether it is a From_ line. A CR stays
                # with the rest, as it may be half of a CRLF.
                cut = len(pending) - pending.endswith(b"\r")
                if cut < BLOCK or len(pending.lstrip(b">")) < LINE_START:
                    continue
            yield pending[:cut], at_start
            at_start = pending[cut - 1:cut] == b"\n"
            pending = pending[cut:]
    if pending:
        yield pending, at_start


def crlf_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Every line end CRLF (LF and CRLF are line ends, a lone CR is data),
    and a line end after the last line."""
    ended = True
    for piece, _ in line_pieces(chunks):
        piece = piece.replace(CRLF, b"\n").replace(b"\n", CRLF)
        ended = piece.endswith(b"\n")
        yield piece
    if not ended:
        yield CRLF


def blocks(stream: BinaryIO, start: int = 0,
           end: int | None = None) -> Iterator[bytes]:
    """The bytes of a file from start to end (or its end), BLOCK at a time.
    It seeks before each read, so the file may be read elsewhere between."""
    position = start
    while end is None or position < end:
        stream.seek(position)
        want = BLOCK if end is None else min(BLOCK, end - position)
        block = stream.read(want)
        if not block:
            return
        position += len(block)
        yield block
