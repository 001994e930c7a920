"""A progress bar on stderr while a big message goes to the relay.

It is for a person at a terminal: only when stderr is one and the message
is big enough to take a while. Under cron, or with stderr a file or a
pipe, nothing at all is written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from pymail import logs

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

# Smaller messages go in a moment, where a bar would only flicker.
BIG = 4 << 20
# Redraw the bar this many times at most, however big the message.
STEPS = 500

Counter = Callable[[Iterable[bytes]], Iterable[bytes]]


@contextmanager
def shown(size: int) -> Iterator[Counter]:
    """A function that hands on the chunks of a message of `size` bytes,
    counting them on a bar as the relay takes them. The bar is drawn at
    the first chunk, and ends, its line too, with the block, whether the
    message went or not. Where no bar is wanted, nothing is drawn."""
    if not wanted(size):
        yield lambda chunks: chunks
        return
    with ExitStack() as stack:
        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            bar = None
            for chunk in chunks:
                if bar is None:
                    bar = stack.enter_context(_bar(size))
                yield chunk
                # The relay asks for the next chunk once this one is sent.
                bar.update(len(chunk))

        yield counted


def wanted(size: int) -> bool:
    """A big message, stderr a terminal, and no -v: the SMTP dialogue that
    -v shows would cut through the bar."""
    stream = sys.stderr
    if size < BIG or stream is None:
        return False
    if logs.Logger("pymail").isEnabledFor(logs.INFO):
        return False
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def _bar(size: int) -> ProgressBar[int]:
    # click is imported here, not at the top: most messages need no bar.
    import click

    return click.progressbar(length=size, file=sys.stderr,
                             label=f"pymail: sending {size / (1 << 20):.1f} MiB",
                             update_min_steps=max(1, size // STEPS))
