"""The console scripts: tune the garbage collector around an entry point.

A cold start allocates hundreds of thousands of objects (modules, classes,
functions) and frees almost none, so the collector's default gen-0 threshold
of 700 makes it scan them over and over and find no cycles (~3 ms of CPU).
A higher threshold, set before anything heavy is imported, keeps it out of
the way at startup and still collects cycles in a long --flush.

At exit the interpreter collects again while it tears the modules down,
scanning every object once more (~10 ms). Freezing them first skips that:
what pymail writes is closed by then, and the OS releases the rest.

Tests call the main() functions in-process, so this is done here only.
"""

import gc

GEN0_THRESHOLD = 50_000


def _run(module: str) -> None:
    """Call `module`'s main() with the collector tuned around it."""
    gc.set_threshold(GEN0_THRESHOLD)
    main = __import__(module, fromlist=["main"]).main
    try:
        main()
    finally:
        gc.freeze()


def pymail() -> None:
    """The pymail command."""
    _run("pymail.cli")


def sendmail() -> None:
    """The pymail-sendmail command."""
    _run("pymail.sendmail")
