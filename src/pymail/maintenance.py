"""The commands that look after kept mail: --flush, --queue, --delete and
--resend."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pymail import deadletter, logs
from pymail.delivery import held_signals, interruptible
from pymail.errors import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_NOPERM,
    EX_OK,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    ConfigError,
    DeadLetterError,
    Interrupted,
    NoInputError,
    PymailError,
    TemporaryFailure,
    UsageError,
    graver,
    internal_error,
    is_temporary,
)
from pymail.files import open_regular, spooled, try_lock
from pymail.relay import Connection, Envelope
from pymail.settings import Settings
from pymail.spool import Flush, Spool

if TYPE_CHECKING:
    from pymail.message import Attachment

log = logs.Logger(__name__)


def spool_of(settings: Settings) -> Spool:
    directory = settings.queue_dir()
    if directory is None:
        raise ConfigError("the queue is off",
                          hint="`set pymail-queue` in the mail.rc turns it on "
                          "(optionally =DIRECTORY)")
    return Spool(directory)


def flush(settings: Settings, ids: list[str],
          settings_for: Callable[[str | None], Settings] | None = None,
          *, everything: bool = False) -> int:
    """Deliver what is due (or the messages named, now); a message queued
    for an account is sent with that account's settings. With the queue
    off there is nothing to flush: a cron line must not fail every run."""
    if settings.queue_dir() is None and not ids:
        log.info("the queue is off (set pymail-queue): nothing to flush")
        return EX_OK
    spool = spool_of(settings)
    with spool.locked() as ours:
        if not ours:
            log.info("another flush of %s is running", spool.directory)
            return EX_OK
        report = Flush(settings, spool, settings_for).run(ids, everything)
    summary = (f"flush: {report.delivered} delivered, {report.deferred} "
               f"deferred, {report.dead} moved to dead.letter")
    if ids:  # asked for by hand; from cron, silence unless -v
        print(summary)
    else:
        log.info("%s", summary)
    if report.failure:
        return report.failure
    return EX_UNAVAILABLE if report.dead else EX_OK


def list_queue(settings: Settings) -> int:
    """One line per queued message, oldest first."""
    if settings.queue_dir() is None:
        print("the queue is off (set pymail-queue to turn it on)")
        return EX_OK
    spool = spool_of(settings)
    entries = spool.entries()
    if not entries:
        print(f"the queue {spool.directory} is empty")
        return EX_OK
    now = time.time()
    for entry in entries:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
        wait = max(0, int(entry.next_attempt - now))
        print(f"{entry.id}  {created}  {entry.size} bytes  "
              f"<{entry.sender}> -> {', '.join(entry.recipients)}  "
              f"tries {entry.attempts}, next in {wait}s  "
              f"last: {entry.last_error or '-'}")
    return EX_OK


def delete(settings: Settings, ids: list[str]) -> int:
    """Remove queued messages by id."""
    if not ids:
        raise UsageError("--delete needs the ids of queued messages "
                         "(see pymail --queue)")
    spool = spool_of(settings)
    with spool.locked() as ours:
        if not ours:
            # The flush would write back the state of a message deleted
            # under it.
            raise TemporaryFailure(
                f"a flush of {spool.directory} is running",
                hint="run --delete again when it has finished")
        for ident in ids:
            spool.remove(spool.find(ident))
            print(f"deleted {ident}")
    return EX_OK


class Relays:
    """A connection per account, made when a message first needs it: a
    kept message goes with the account (-A) it was sent with, unless
    settings_for is None (an account chosen for the whole run)."""

    def __init__(self, settings: Settings,
                 settings_for: Callable[[str | None], Settings] | None
                 ) -> None:
        self.settings = settings
        self.settings_for = settings_for
        self.connections: dict[str | None, Connection] = {}

    def get(self, account: str | None) -> Connection:
        if self.settings_for is None or account is None:
            account = self.settings.account
        if account not in self.connections:
            settings = self.settings
            if account != settings.account and self.settings_for:
                settings = self.settings_for(account)
            self.connections[account] = Connection(settings)
        return self.connections[account]

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()

    def drop(self) -> None:
        """Hang up without another command (see Connection.close_quietly)."""
        for connection in self.connections.values():
            connection.close_quietly()


def resend(settings: Settings, files: list[str],
           settings_for: Callable[[str | None], Settings] | None = None
           ) -> int:
    """Send the messages kept in dead.letter files to their original
    envelopes (and accounts, given settings_for); each leaves the file only
    once the relay accepted it."""
    paths = [Path(f) for f in files] if files else [settings.dead_letter()
                                                     or Path("dead.letter")]
    code = EX_OK
    relays = Relays(settings, settings_for)
    try:
        with interruptible("what was not resent stays kept"):
            for given in paths:
                # By its real name: the lock and the rewrite are the file's,
                # and a symbolic link to it stays one.
                path = Path(os.path.realpath(given))
                linked = path != Path(os.path.abspath(given))
                with _resending(path) as ours:
                    if not ours:
                        print(f"pymail: {path}: another --resend is sending "
                              "from it; try again when it has finished",
                              file=sys.stderr)
                        code = graver(code, EX_TEMPFAIL)
                        continue
                    try:
                        status = _resend_file(relays, path, bool(files),
                                              linked)
                    except NoInputError as error:  # the other files go on
                        print(f"pymail: {error.line()}", file=sys.stderr)
                        status = error.code
                    code = graver(code, status)
    except Interrupted as error:
        relays.drop()  # in the middle of a message, perhaps
        print(f"pymail: {error.line()}", file=sys.stderr)
        return graver(code, error.code)
    finally:
        relays.close()
    return code


@contextmanager
def _resending(path: Path) -> Iterator[bool]:
    """Hold the lock of --resend runs on path (a hidden file beside it,
    left in place); yields False when another run holds it. Appenders
    take another lock (see deadletter.append_private): they never wait
    for this one. Where no lock file can be made, nothing is held."""
    with try_lock(path.with_name(f".{path.name}.resend-lock"),
                  optional=True) as ours:
        yield ours


def _prepared(settings: Settings, kept: deadletter.Kept,
              opened: list[Attachment]
              ) -> tuple[Envelope, Callable[[], Iterable[bytes]]]:
    """The envelope and bytes to send for a kept message; one kept before
    it was built is built now, as the sendmail entry builds messages, with
    its attachments (added to opened, for the caller to close)."""
    if kept.by_command_line:
        from pymail import unbuilt

        message, envelope = unbuilt.build(settings, kept, opened)
        return envelope, message.chunks
    if kept.rebuild:
        from pymail.message import Attachment
        from pymail.send import charsets
        from pymail.sendmail import options_of, rebuild

        for name in kept.attachments:
            opened.append(Attachment.open(name, charsets(settings)))

        options = options_of(kept.rebuild, kept.recipients,
                             kept.sender or None)
        message, envelope = rebuild(settings, options,
                                    spooled(kept.chunks()), charsets(settings),
                                    opened)
        return envelope, message.chunks
    envelope = Envelope(kept.sender or "", kept.recipients,
                        utf8=not kept.head().isascii(),
                        eight_bit=any(not chunk.isascii()
                                      for chunk in kept.chunks()))
    return envelope, kept.chunks


def _resend_file(relays: Relays, path: Path, named: bool,
                 linked: bool) -> int:
    """Resend the entries of one file, each read from it as it is sent;
    a file named on the command line must exist. A linked file (reached
    through a symbolic link) is emptied, never removed."""
    try:
        stream = os.fdopen(open_regular(path, os.O_RDONLY), "rb")
    except FileNotFoundError:
        if named:
            raise NoInputError(f"cannot read {path}: no such file") from None
        log.info("nothing to resend: %s does not exist", path)
        return EX_OK
    except OSError as exc:
        raise NoInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with stream:
        try:
            entries = deadletter.spans(stream)
        except OSError as exc:
            raise NoInputError(f"cannot read {path}: "
                               f"{exc.strerror or exc}") from exc
        done: list[tuple[int, str]] = []
        code, skipped, cleared = EX_OK, 0, 0
        try:
            code, skipped, cleared = _resend_entries(relays, path, stream,
                                                     entries, done)
        finally:
            # Even when interrupted: what was delivered leaves the file.
            if done:
                with held_signals():
                    try:
                        deadletter.remove_entries(path, done,
                                                  keep_file=linked)
                    except DeadLetterError as error:
                        print(f"pymail: {error.line()}", file=sys.stderr)
                        code = graver(code, error.code)
    if skipped:
        print(f"pymail: {path}: {skipped} message(s) without a recorded "
              "envelope were left as they are", file=sys.stderr)
    print(f"resent {len(done) - cleared} of {len(entries) - cleared} "
          f"message(s) from {path}" + (f"; removed {cleared} an earlier run "
                                       "had sent" if cleared else ""))
    return code


def _resend_entries(relays: Relays, path: Path, stream: BinaryIO,
                    entries: list[deadletter.Span],
                    done: list[tuple[int, str]]) -> tuple[int, int, int]:
    """Resend the entries, adding each one delivered to done; returns the
    exit status, the number skipped for want of an envelope and the number
    an earlier run had sent (marked so, now added to done)."""
    code = EX_OK
    skipped = cleared = 0
    # Attachments are read by the paths the file names: only from a file
    # of this user's (root resending /home/bob/dead.letter must not mail
    # bob the files bob names).
    owner = os.fstat(stream.fileno()).st_uid
    for span in entries:
        kept = deadletter.read_entry(stream, span)
        if kept.resent:  # sent by a run that could not remove it: now
            done.append(deadletter.fingerprint(stream, span))
            cleared += 1
            continue
        if _reads_files(kept) and owner != os.geteuid():
            print(f"pymail: {path}: a message names files to read, and "
                  "the file is another user's: left as it is",
                  file=sys.stderr)
            code = graver(code, EX_NOPERM)
            continue
        if kept.cut:
            print(f"pymail: {path}: a message with an envelope line over "
                  f"{deadletter.ENVELOPE_LINE} bytes was left as it is",
                  file=sys.stderr)
            code = graver(code, EX_DATAERR)
            continue
        if not kept.resendable:
            skipped += 1
            continue
        # Hashed before sending: once the relay has the message, only the
        # append below is left to do (a signal may come at any time).
        mark = deadletter.fingerprint(stream, span)
        sent, status = _resend(relays, path, kept)
        code = graver(code, status)
        if sent:
            done.append(mark)
    return code, skipped, cleared


def _reads_files(kept: deadletter.Kept) -> bool:
    """Whether building the message reads files by the paths it names
    (attachments, -q's file)."""
    if kept.by_command_line:
        from pymail import unbuilt

        return unbuilt.reads_files(kept)
    return bool(kept.attachments)


def _resend(relays: Relays, path: Path,
            kept: deadletter.Kept) -> tuple[bool, int]:
    """Send one kept message: (whether it leaves the file, exit status)."""
    opened: list[Attachment] = []
    connection = None
    try:
        try:
            connection = relays.get(kept.account)
            envelope, chunks = _prepared(connection.settings, kept, opened)
            if connection.session is None:
                connection.open()
            outcome = connection.send(envelope, chunks())
        except Interrupted:
            raise  # the whole run stops (see resend)
        except PymailError as error:
            print(f"pymail: {path}: {error.line()}; kept", file=sys.stderr)
            return False, error.code
        except Exception as exc:
            # A bug of pymail's, perhaps with this message only: it stays,
            # the connection (in an unknown state) is dropped, and the
            # others are sent.
            if connection is not None:
                connection.close_quietly()
            failure = internal_error("resending", exc)
            print(f"pymail: {path}: {failure.line()}; kept", file=sys.stderr)
            log.debug("details", exc_info=exc)
            return False, failure.code
        if not outcome.refused:
            return True, EX_OK
        lines = "; ".join(e.line() for e in outcome.refused.values())
        print(f"pymail: {path}: {lines}; kept", file=sys.stderr)
        # Refusals that may pass later are EX_TEMPFAIL, as for a send.
        code = EX_TEMPFAIL if all(is_temporary(e) for e in
                                  outcome.refused.values()) \
            else EX_UNAVAILABLE
        if not outcome.reply:
            return False, code
        # Delivered to the others: keep a copy for the refused only (on
        # stderr when the file cannot take it); the entry leaves the file
        # either way, so that no one gets the message twice.
        try:
            with held_signals():
                deadletter.keep(path, envelope.sender, chunks,
                                recipients=list(outcome.refused),
                                error=lines, account=kept.account)
        except DeadLetterError as error:
            print(f"pymail: {path}: {error.line()}", file=sys.stderr)
            return True, EX_CANTCREAT
        return True, code
    finally:
        for attachment in opened:
            attachment.close()
