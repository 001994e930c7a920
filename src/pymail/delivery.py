"""What happens to an outcome: delivered, queued, or kept in dead.letter;
the line the user sees, the delivery log, and the exit status.

Also the bounds of one attempt: a deadline for the whole delivery, and
SIGTERM, SIGINT and SIGHUP turned into a temporary failure so that the
message is kept before pymail exits.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType

from pymail import deadletter, logs, notices
from pymail.errors import (
    EX_OK,
    Interrupted,
    NoInputError,
    PymailError,
    Stopped,
    is_temporary,
)
from pymail.relay import Envelope, Outcome
from pymail.settings import Settings

log = logs.Logger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Sent:
    """What is needed to keep or record one message."""

    def __init__(self, envelope: Envelope,
                 chunks: Callable[..., Iterable[bytes]], message_id: str,
                 relay: str, account: str | None = None) -> None:
        self.envelope = envelope
        self.chunks = chunks  # a fresh stream each call
        self.message_id = message_id
        self.relay = relay
        self.account = account


def settle_failure(settings: Settings, error: PymailError, sent: Sent) -> int:
    """Nothing was delivered: queue or keep, print one line, log it."""
    code, where = keep_or_queue(settings, error, sent,
                                sent.envelope.recipients)
    print(f"pymail: {error.line()}; {where}", file=sys.stderr)
    log.debug("details", exc_info=error)
    journal(settings, sent, "queued" if where.startswith("queued as")
            else "failed", code, error.line())
    return code


def settle_outcome(settings: Settings, outcome: Outcome, sent: Sent) -> int:
    """The relay took the message for some or all recipients."""
    refused = outcome.refused
    if not refused:
        log.info("delivered %s: %s", sent.message_id, outcome.reply)
        journal(settings, sent, "delivered", EX_OK, outcome.reply or "")
        return EX_OK
    code = EX_OK
    notes = []
    never = [r for r, e in refused.items() if not is_temporary(e)]
    later = [r for r, e in refused.items() if is_temporary(e)]
    for group in (never, later):
        if not group:
            continue
        error = refused[group[0]]
        if len(group) > 1:
            error = type(error)("; ".join(refused[r].message for r in group))
        group_code, where = keep_or_queue(settings, error, sent, group)
        notes.append(f"{error.line()}; for {', '.join(group)}: {where}")
        code = code or group_code
    if outcome.reply:
        notes.append(f"delivered to {', '.join(outcome.accepted)}")
    print("pymail: " + "; ".join(notes), file=sys.stderr)
    journal(settings, sent, "partial" if outcome.reply else "failed", code,
            "; ".join(notes))
    return code


def keep_or_queue(settings: Settings, error: PymailError, sent: Sent,
                  recipients: list[str]) -> tuple[int, str]:
    """(exit status, where the message went): the queue for a temporary
    failure when it is on, else dead.letter."""
    with held_signals():
        return _keep_or_queue(settings, error, sent, recipients)


def _keep_or_queue(settings: Settings, error: PymailError, sent: Sent,
                   recipients: list[str]) -> tuple[int, str]:
    directory = settings.queue_dir()
    if directory is not None and is_temporary(error):
        from pymail.spool import Spool

        try:
            entry = Spool(directory).store(
                sent.envelope.sender, recipients, sent.chunks(),
                relay=sent.relay, error=error.line(),
                message_id=sent.message_id, utf8=sent.envelope.utf8,
                eight_bit=sent.envelope.eight_bit,
                account=sent.account)
        except OSError as exc:
            log.warning("cannot queue in %s: %s", directory,
                        exc.strerror or exc)
        except NoInputError as exc:
            # An attachment changed: dead.letter keeps what can be read.
            log.warning("cannot queue in %s: %s", directory, exc.line())
        else:
            # Killed mid-send, pymail says so even when the message is
            # safe in the queue: whoever stopped it may need to know.
            code = error.code if isinstance(error, Interrupted) else EX_OK
            return code, (f"queued as {entry.id} in {directory}; "
                          "`pymail --flush` retries it")
    keep = partial(deadletter.keep, settings.dead_letter(),
                   sent.envelope.sender, recipients=recipients,
                   error=error.line(), account=sent.account)
    try:
        where = keep(sent.chunks)
    except NoInputError:
        # An attachment cannot be read again: keep the rest.
        where = keep(partial(sent.chunks, False)) + \
            " (without the attachments)"
    return error.code, where


def journal(settings: Settings, sent: Sent, result: str, code: int,
            detail: str) -> None:
    """One line per delivery attempt to `pymail-log` (syslog or a file).
    It names the message, envelope, relay and result: never a secret."""
    recipients = ",".join(sent.envelope.recipients)
    notices.record(settings, f"id={sent.message_id} from=<"
                   f"{sent.envelope.sender}> to=<{recipients}> "
                   f"relay={sent.relay} result={result} exit={code} "
                   f"detail={' '.join(detail.split())!r}",
                   warning=code != EX_OK)


@contextmanager
def bounded(deadline: float) -> Iterator[None]:
    """Raise Stopped when the deadline passes or a signal comes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(number: int, frame: FrameType | None) -> None:
        raise Stopped(f"delivery took longer than {deadline:g}s",
                      hint="a slow or stuck relay; pymail-deadline sets the "
                      "limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        with interruptible("the message was not sent"):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def interruptible(then: str) -> Iterator[None]:
    """Raise Interrupted (saying `then`) when SIGTERM, SIGINT or SIGHUP
    comes, so that the caller can settle what it was doing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(number: int, frame: FrameType | None) -> None:
        # One stop is enough: another signal must not cut the way out
        # short (where what was done is written down).
        for other in SIGNALS:  # (not SIG_IGN: Python reports a signal
            signal.signal(other, _ignored)  # already on its way to it)
        raise Interrupted(f"interrupted by {signal.Signals(number).name}; "
                          f"{then}")

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _ignored(number: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing."""


@contextmanager
def held_signals() -> Iterator[None]:
    """Let a signal that comes while a message is being kept wait until it
    is kept; then act on it as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []  # signal numbers, raised again later

    def hold(number: int, frame: FrameType | None) -> None:
        pending.append(number)

    previous = {s: signal.signal(s, hold) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for number in pending:
            signal.raise_signal(number)
