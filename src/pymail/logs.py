"""Loggers that import the logging module only when a record gets through.

A plain send (no -v) logs nothing below WARNING, and importing logging costs
~5 ms of a cold start. configure() records the level chosen for the "pymail"
logger, so that debug() and info() calls below it return at once; the first
record that passes imports logging and installs the handler. Before
configure() runs (a test, a library caller), every call goes to logging.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

DEBUG, INFO, WARNING = 10, 20, 30  # the values of logging.DEBUG and so on

# The level configure() chose, and whether its handler is yet to be set up.
_level: int | None = None
_pending = False


def configure(level: int) -> None:
    """Show records of LEVEL and above on stderr, prefixed "pymail: "."""
    global _level, _pending
    _level, _pending = level, True


def _logging() -> ModuleType:
    """The logging module, set up as configure() asked."""
    global _pending
    import logging

    if _pending:
        _pending = False
        logger = logging.getLogger("pymail")
        logger.handlers.clear()
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pymail: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(_level or WARNING)
        logger.propagate = False
    return logging


class Logger:
    """The part of logging.Logger that pymail uses:
    `log = logs.Logger(__name__)`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:
        if _level is not None:
            return level >= _level
        enabled: bool = _logging().getLogger(self.name).isEnabledFor(level)
        return enabled

    def debug(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(DEBUG, msg, args, kwargs)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(INFO, msg, args, kwargs)

    def warning(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(WARNING, msg, args, kwargs)

    def _log(self, level: int, msg: str, args: tuple[object, ...],
             kwargs: dict[str, Any]) -> None:
        if self.isEnabledFor(level):
            # stacklevel 3: the record names the caller of info(), not us.
            logger = _logging().getLogger(self.name)
            logger.log(level, msg, *args, stacklevel=3, **kwargs)
