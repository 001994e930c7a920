"""One exception hierarchy: every failure pymail reports, with its exit code.

The codes follow sysexits.h, as msmtp uses them, so that scripts and cron
wrappers can tell a bad configuration from a relay that is down.
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOHOST = 68
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78


class PymailError(Exception):
    """A failure with a one-line message, an optional hint and an exit code."""

    code = EX_SOFTWARE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The message and its hint on one line, as shown on stderr."""
        text = " ".join(self.message.split())
        if self.hint:
            text += " (hint: " + " ".join(self.hint.split()) + ")"
        return text


class UsageError(PymailError):
    code = EX_USAGE


class DataError(PymailError):
    code = EX_DATAERR


class NoInputError(PymailError):
    code = EX_NOINPUT


class ConfigError(PymailError):
    code = EX_CONFIG


class DeadLetterError(PymailError):
    code = EX_CANTCREAT


class DeliveryError(PymailError):
    """A failure while talking to the relay; the message was not delivered."""

    code = EX_UNAVAILABLE


class HostNotFound(DeliveryError):
    code = EX_NOHOST


class PermanentFailure(DeliveryError):
    code = EX_UNAVAILABLE


class TemporaryFailure(DeliveryError):
    code = EX_TEMPFAIL


class Stopped(TemporaryFailure):
    """The attempt was stopped from outside (the deadline, a signal) at
    whatever point it had reached: the connection is in an unknown state."""


class Interrupted(Stopped):
    """A signal stopped the attempt; what it was sending is kept."""


class ProtocolFailure(DeliveryError):
    code = EX_PROTOCOL


class AuthFailure(DeliveryError):
    code = EX_NOPERM


def is_temporary(error: PymailError) -> bool:
    """Failures worth another try later; 5xx and configuration are not."""
    return isinstance(error, TemporaryFailure)


def graver(first: int, second: int) -> int:
    """Of two exit statuses, the one to report: a failure over success, and
    one that needs a person over EX_TEMPFAIL; the first of two alike."""
    def rank(code: int) -> int:
        return 0 if code == EX_OK else 1 if code == EX_TEMPFAIL else 2
    return second if rank(second) > rank(first) else first


def internal_error(doing: str, exc: Exception) -> PymailError:
    """A bug of pymail's met while `doing` something, as a failure that
    keeps the message like any other (exit 70)."""
    error = PymailError(f"internal error while {doing} ({type(exc).__name__})",
                        hint="run with --debug for details")
    error.__cause__ = exc
    return error
