"""The queue on disk: messages kept after a temporary failure, and the flush
that delivers them later.

Each message is two files in the spool directory: ID.eml, the message as it
goes on the wire, and ID.json, its envelope and delivery state. Both are
written to tmp/ first, synced and renamed into place, the .json last: a
message is in the queue once its .json exists. No password is stored; a
flush takes the credentials from the configuration.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from pymail import deadletter, logs
from pymail.errors import (
    EX_NOINPUT,
    EX_SOFTWARE,
    DeadLetterError,
    NoInputError,
    PymailError,
    is_temporary,
)
from pymail.files import sync_directory, try_lock, write_all
from pymail.relay import Connection, Envelope, Outcome
from pymail.settings import Settings

log = logs.Logger(__name__)

READ_SIZE = 1 << 16
FIRST_RETRY = 60.0
LONGEST_WAIT = 3600.0
# A batch written before its replies are read: its messages, its bytes.
BATCH = 20
BATCH_BYTES = 4 << 20


@dataclass
class Entry:
    """One queued message: its envelope and how delivery went so far."""

    id: str
    created: float
    sender: str
    recipients: list[str]
    relay: str
    account: str | None = None
    message_id: str | None = None
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    size: int = 0
    utf8: bool = False
    eight_bit: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def back_off(self, error: str, now: float) -> None:
        """Count a failed attempt; wait twice as long before the next one."""
        self.attempts += 1
        self.last_error = error
        wait = min(FIRST_RETRY * 2 ** (self.attempts - 1), LONGEST_WAIT)
        self.next_attempt = now + wait


class Spool:
    """A spool directory (mode 0700) of queued messages."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _prepare(self) -> None:
        for path in (self.directory, self.directory / "tmp"):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)

    def store(self, sender: str, recipients: list[str], chunks: Iterable[bytes],
              *, relay: str, error: str, message_id: str | None = None,
              account: str | None = None, utf8: bool = False,
              eight_bit: bool = False) -> Entry:
        """Queue a message atomically; returns its entry."""
        self._prepare()
        now = time.time()
        ident = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        entry = Entry(ident, now, sender, list(recipients), relay, account,
                      message_id, utf8=utf8, eight_bit=eight_bit)
        entry.back_off(error, now)
        temporary = self.directory / "tmp" / f"{ident}.eml"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                for chunk in chunks:
                    write_all(fd, chunk)
                    entry.size += len(chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.directory / f"{ident}.eml")
            self.save(entry)
        except BaseException:
            # Nothing half-written stays behind (the caller keeps the
            # message elsewhere).
            for path in (temporary, self.directory / f"{ident}.eml"):
                with suppress(FileNotFoundError):
                    os.unlink(path)
            raise
        return entry

    def save(self, entry: Entry) -> None:
        """Write an entry's state atomically (its .json)."""
        temporary = self.directory / "tmp" / f"{entry.id}.json"
        data = json.dumps(asdict(entry), ensure_ascii=False).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.directory / f"{entry.id}.json")
        sync_directory(self.directory)

    def entries(self) -> list[Entry]:
        """Every queued message, oldest first."""
        if not self.directory.is_dir():
            return []
        result = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                result.append(Entry(**data))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable queue file %s: %s", path, exc)
        return sorted(result, key=lambda e: (e.created, e.id))

    def find(self, ident: str) -> Entry:
        for entry in self.entries():
            if entry.id == ident:
                return entry
        raise NoInputError(f"no message {ident} in the queue {self.directory}")

    def chunks(self, entry: Entry) -> Iterator[bytes]:
        """The queued message, read in blocks."""
        with open(self.directory / f"{entry.id}.eml", "rb") as stream:
            while block := stream.read(READ_SIZE):
                yield block

    def size(self, entry: Entry) -> int | None:
        """The queued message's length, for the relay's SIZE."""
        try:
            return (self.directory / f"{entry.id}.eml").stat().st_size
        except OSError:
            return None

    def remove(self, entry: Entry) -> None:
        """Take a message out of the queue: the .json first, so that a crash
        in between leaves no half-entry that a flush would send."""
        for suffix in (".json", ".eml"):
            with suppress(FileNotFoundError):
                os.unlink(self.directory / f"{entry.id}{suffix}")
        sync_directory(self.directory)

    @contextmanager
    def locked(self) -> Iterator[bool]:
        """Hold the flush lock; yields False when another flush holds it."""
        self._prepare()
        with try_lock(self.directory / ".lock") as ours:
            yield ours


@dataclass
class FlushReport:
    delivered: int = 0
    deferred: int = 0
    dead: int = 0
    failure: int = 0  # exit code of a failure that needs a person


def duration(seconds: float) -> str:
    """A time span for people: `3 days`, `5 hours`, `1 minute`."""
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    count = max(int(seconds), 1)
    return f"{count} second{'s' if count > 1 else ''}"


class Flush:
    """Deliver queued messages: oldest first, one connection per relay."""

    def __init__(self, settings: Settings, spool: Spool,
                 settings_for: Callable[[str | None], Settings] | None = None
                 ) -> None:
        self.settings = settings
        self.settings_for = settings_for
        self.spool = spool
        self.dead = settings.dead_letter()
        self.lifetime = settings.queue_lifetime()
        self.report = FlushReport()
        self.now = time.time()

    def run(self, ids: list[str], everything: bool = False) -> FlushReport:
        """Flush what is due, or the messages named by ids (or every
        message, as sendmail -q does) whatever their back-off."""
        entries = [self.spool.find(i) for i in ids] if ids else \
            self.spool.entries()
        live = [e for e in entries
                if self._whole(e) and not self._expired(e)]
        if not ids and not everything:
            live = [e for e in live if e.next_attempt <= self.now]
        groups: dict[tuple[str, str | None], list[Entry]] = {}
        for entry in live:
            groups.setdefault((entry.relay, entry.account), []).append(entry)
        for (relay, account), group in groups.items():
            settings = self.settings
            if account != settings.account and self.settings_for:
                settings = self.settings_for(account)
            self._flush_relay(settings, relay, group)
        return self.report

    def _whole(self, entry: Entry) -> bool:
        """An entry whose message file was removed behind pymail's back
        cannot be sent: it leaves the queue, said so."""
        if (self.spool.directory / f"{entry.id}.eml").exists():
            return True
        print(f"pymail: queued {entry.id} for {', '.join(entry.recipients)}: "
              "its message file is gone; removed from the queue",
              file=sys.stderr)
        self.spool.remove(entry)
        self.report.failure = EX_NOINPUT
        return False

    def _expired(self, entry: Entry) -> bool:
        """Past the queue's lifetime: moved to dead.letter (or, when that
        cannot be written, left queued and not sent)."""
        if self.now - entry.created <= self.lifetime:
            return False
        self._to_dead_letter(entry, entry.recipients,
                             f"gave up after {duration(self.now - entry.created)}"
                             " in the queue; last error: "
                             f"{entry.last_error}")
        return True

    def _flush_relay(self, settings: Settings, relay: str,
                     group: list[Entry]) -> None:
        connection = Connection(settings)
        if connection.relay.address != relay:
            log.info("queued for %s; sending through %s, the relay "
                     "configured now", relay, connection.relay.address)
        batch: list[Entry] = []
        held = 0
        try:
            for i, entry in enumerate(group):
                if connection.session is None and not self._open(
                        connection, group[i:]):
                    return
                size = self.spool.size(entry)
                if connection.batchable(size):
                    batch.append(entry)
                    held += size or 0
                    if len(batch) < BATCH and held < BATCH_BYTES:
                        continue
                    self._send_batch(connection, batch)
                    batch, held = [], 0
                    continue
                if batch:  # oldest first
                    self._send_batch(connection, batch)
                    batch, held = [], 0
                    if connection.session is None and not self._open(
                            connection, group[i:]):
                        return
                self._send(connection, entry)
            if batch:
                self._send_batch(connection, batch)
        finally:
            connection.close()

    def _send(self, connection: Connection, entry: Entry) -> None:
        envelope = Envelope(entry.sender, entry.recipients, entry.utf8,
                            entry.eight_bit)
        try:
            outcome = connection.send(envelope, self.spool.chunks(entry),
                                      self.spool.size(entry))
        except PymailError as error:
            self._settle(entry, error)
            return
        except Exception as exc:
            self._bug(connection, [entry], exc)
            return
        self._settle(entry, outcome)

    def _send_batch(self, connection: Connection, batch: list[Entry]) -> None:
        """Small messages in one write, their replies read after (see
        Connection.send_batch): one round trip for the lot."""
        try:
            results = connection.send_batch([
                (Envelope(e.sender, e.recipients, e.utf8, e.eight_bit),
                 self.spool.chunks(e),
                 self.spool.size(e)) for e in batch])
        except PymailError:
            raise
        except Exception as exc:
            self._bug(connection, batch, exc)
            return
        for entry, result in zip(batch, results, strict=True):
            self._settle(entry, result)

    def _bug(self, connection: Connection, entries: list[Entry],
             exc: Exception) -> None:
        """A bug of pymail's while sending: the messages stay queued (a
        bug must not wedge the queue or lose them), the connection, in an
        unknown state, is dropped, and the flush goes on."""
        connection.close_quietly()
        error = f"internal error while sending ({type(exc).__name__})"
        print(f"pymail: flush: {error} (run with --debug for details)",
              file=sys.stderr)
        log.debug("details", exc_info=exc)
        for entry in entries:
            self._defer(entry, error)
        self.report.failure = EX_SOFTWARE

    def _settle(self, entry: Entry, result: Outcome | PymailError) -> None:
        """Remove, defer or keep in dead.letter, by what the relay said."""
        if isinstance(result, PymailError):
            if is_temporary(result) or not self._to_dead_letter(
                    entry, entry.recipients, result.line()):
                self._defer(entry, result.line())
            return
        outcome = result
        later = [r for r, e in outcome.refused.items() if is_temporary(e)]
        never = [r for r, e in outcome.refused.items() if not is_temporary(e)]
        if outcome.reply:
            self.report.delivered += 1
            log.info("delivered queued %s to %s: %s", entry.id,
                     ", ".join(outcome.accepted), outcome.reply)
        kept = True
        if never:
            errors = "; ".join(outcome.refused[r].line() for r in never)
            kept = self._to_dead_letter(entry, never, errors,
                                        remove=not later)
        # Recipients refused for good stay queued when dead.letter could
        # not take the message; those who accepted it never get it twice.
        retry = later if kept else later + never
        if retry:
            entry.recipients = retry
            self._defer(entry, "; ".join(outcome.refused[r].line()
                                         for r in retry))
        elif not never:
            self.spool.remove(entry)

    def _open(self, connection: Connection, waiting: list[Entry]) -> bool:
        """Connect and log in. When the relay cannot be reached or refuses
        the login, the waiting messages stay queued; a refused login or a
        TLS failure needs a person."""
        try:
            connection.open()
        except PymailError as error:
            for entry in waiting:
                self._defer(entry, error.line())
            if not is_temporary(error):
                print(f"pymail: flush: {error.line()}", file=sys.stderr)
                self.report.failure = error.code
            return False
        return True

    def _defer(self, entry: Entry, error: str) -> None:
        entry.back_off(error, self.now)
        self.spool.save(entry)
        self.report.deferred += 1
        log.info("queued %s deferred (attempt %d): %s", entry.id,
                 entry.attempts, error)

    def _to_dead_letter(self, entry: Entry, recipients: list[str], error: str,
                        *, remove: bool = True) -> bool:
        """Keep a message that will not be delivered in dead.letter and take
        it out of the queue; False (the message stays queued, the flush
        goes on with the others) when dead.letter cannot be written."""
        try:
            where = deadletter.keep(self.dead, entry.sender,
                                    partial(self.spool.chunks, entry),
                                    recipients=recipients, error=error,
                                    account=entry.account, spill=False)
        except DeadLetterError as failure:
            print(f"pymail: queued {entry.id} for {', '.join(recipients)}: "
                  f"{error}; {failure.line()}; it stays in the queue",
                  file=sys.stderr)
            self.report.failure = failure.code
            return False
        print(f"pymail: queued {entry.id} for {', '.join(recipients)}: "
              f"{error}; {where}", file=sys.stderr)
        self.report.dead += 1
        if remove:
            self.spool.remove(entry)
        return True
