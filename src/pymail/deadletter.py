"""Where undelivered messages are kept: dead.letter, in mbox format, with
their envelope, so that `pymail --resend` can send them again."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pymail import lines, logs
from pymail.errors import DeadLetterError
from pymail.files import open_regular, to_stderr, write_all

log = logs.Logger(__name__)

FROM_LINE = re.compile(rb">*From ")
FROM_AFTER_LF = re.compile(rb"\n(?=>*From )")
QUOTED_FROM = re.compile(rb">(>*From )")
QUOTED_FROM_AFTER_LF = re.compile(rb"\n>(>*From )")
# The envelope goes in front of the message's own headers in dead.letter;
# --resend reads these lines back and removes them before sending.
ENVELOPE_FROM = b"X-Pymail-Envelope-From: "
ENVELOPE_TO = b"X-Pymail-Envelope-To: "
# Always the last envelope line: what follows is the message, even when
# it begins with lines like these (a message kept as it came must not add
# recipients or attachments to its own envelope).
ERROR_HEADER = b"X-Pymail-Error: "
# A message kept before pymail could build it (a bad address, an unknown
# name): --resend builds it then. "1" and "t" (kept by the sendmail entry,
# perhaps followed by JSON with -F's name): as the sendmail entry does, "t"
# meaning that its To, Cc and Bcc headers are recipients too; "mailx " and
# JSON (kept by pymail): as the command line recorded in the JSON would
# (see pymail.unbuilt).
REBUILD_HEADER = b"X-Pymail-Rebuild: "
COMMAND_LINE = "mailx "  # what the rebuild line of pymail's own starts with
# An attachment (its absolute path) of a message kept unbuilt: --resend
# attaches the file as it is then.
ATTACH_HEADER = b"X-Pymail-Attach: "
# What the envelope's first line becomes in an entry resent that could not
# be removed from its file (see remove_entries): as long as ENVELOPE_FROM.
SENT_FROM = b"X-Pymail-Resent-Before: "
# The account (-A) the message was sent with: --resend uses it too.
ACCOUNT_HEADER = b"X-Pymail-Account: "
# The most of a kept message read to find its header.
HEAD = 1 << 20
# The most of an envelope line read: recipients as given on a command line
# fit; the rest of a long X-Pymail-Error line (a relay's reply of 100
# lines) is skipped. An entry with a longer envelope line is not resent.
ENVELOPE_LINE = 1 << 20


@dataclass(repr=False, eq=False)
class Kept:
    """A message read back from dead.letter."""

    sender: str | None
    recipients: list[str]
    # The message afresh at each call: CRLF line ends, envelope lines and
    # mboxrd quoting removed.
    chunks: Callable[[], Iterator[bytes]]
    rebuild: str | None = None  # see REBUILD_HEADER
    attachments: list[str] = field(default_factory=list)  # see ATTACH_HEADER
    account: str | None = None  # see ACCOUNT_HEADER
    cut: bool = False  # an envelope line longer than ENVELOPE_LINE
    resent: bool = False  # marked sent where it is (see SENT_FROM)

    @property
    def resendable(self) -> bool:
        if self.cut:
            return False
        if self.rebuild:
            return bool(self.recipients) or self.rebuild == "t" or \
                self.rebuild.startswith("t ") or self.by_command_line
        return self.sender is not None and bool(self.recipients)

    @property
    def by_command_line(self) -> bool:
        """Kept unbuilt by pymail, with its command line (see unbuilt)."""
        return bool(self.rebuild and self.rebuild.startswith(COMMAND_LINE))

    @property
    def message(self) -> bytes:
        """The whole message, in memory."""
        return b"".join(self.chunks())

    def head(self) -> bytes:
        """The message's header, up to the empty line (at most HEAD bytes
        of it: the rest of a message without an empty line is not read)."""
        data = bytearray()
        for chunk in self.chunks():
            data += chunk
            if b"\r\n\r\n" in data or len(data) > HEAD:
                break
        return bytes(data).split(b"\r\n\r\n", 1)[0][:HEAD]


def envelope_lines(sender: str, recipients: list[str],
                   error: str | None = None, rebuild: str | None = None,
                   attachments: list[str] | None = None,
                   account: str | None = None) -> bytes:
    """The envelope (and the last error) as header lines, LF-terminated."""
    def clean(text: str) -> bytes:
        return " ".join(text.split()).encode("utf-8", "replace")

    lines = [ENVELOPE_FROM + b"<" + clean(sender) + b">"]
    lines += [ENVELOPE_TO + b"<" + clean(r) + b">" for r in recipients]
    if account:
        lines.append(ACCOUNT_HEADER + clean(account))
    if rebuild:
        lines.append(REBUILD_HEADER + rebuild.encode())
        lines += [ATTACH_HEADER + os.fsencode(a).replace(b"%", b"%25")
                  .replace(b"\n", b"%0A") for a in attachments or []]
    text = " ".join((error or "not recorded").split())
    lines.append(ERROR_HEADER + text.encode("utf-8", "replace"))
    return b"".join(line + b"\n" for line in lines)


def mbox_entry(sender: str, chunks: Iterable[bytes], *,
               recipients: list[str] | None = None,
               error: str | None = None, rebuild: str | None = None,
               attachments: list[str] | None = None,
               account: str | None = None) -> Iterator[bytes]:
    """One mbox entry, in pieces: the From_ line, the envelope when known,
    the message (see mbox_text), then a blank line."""
    stamp = time.asctime(time.gmtime())
    head = f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode()
    if recipients or rebuild:
        head += envelope_lines(sender, recipients or [], error, rebuild,
                               attachments, account)
    yield head
    yield from mbox_text(chunks)
    yield b"\n"


def mbox_text(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The message with LF line ends and mboxrd quoting (a `>` more before
    each line that begins with `>`s and `From `), ending with a line end;
    written piece by piece, whatever the chunks."""
    ended = False  # what was written ends with a line end
    for piece, at_start in lines.line_pieces(chunks):
        text = FROM_AFTER_LF.sub(b"\n>", piece.replace(b"\r\n", b"\n"))
        if at_start and FROM_LINE.match(text):
            text = b">" + text
        ended = text.endswith(b"\n")
        yield text
    if not ended:
        yield b"\n"


def append_private(path: Path, pieces: Iterable[bytes]) -> None:
    """Append the pieces to path, creating it with mode 0600 whatever the
    umask. When writing fails (or the pieces do: an attachment that cannot
    be read again), the file is cut back to its length before, so that
    what it holds is not followed by half an entry.

    The lock is the one --resend takes while it rewrites the file; after
    waiting for it, a file that was replaced meanwhile is opened anew.
    """
    path = _link_target(path)
    while True:
        try:
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                              os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)
        except FileExistsError:
            # A FIFO here would block forever: regular files only.
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                _append(fd, pieces)
                return
        finally:
            os.close(fd)


def _link_target(path: Path) -> Path:
    """Where a symbolic link of this user's that points to nothing yet (no
    file, no other link) leads, for the file to be made there, as mailx
    does; anyone else's link is never followed to make a file (the open
    fails instead), nor a chain of links."""
    try:
        link = os.lstat(path)
        if not stat.S_ISLNK(link.st_mode) or link.st_uid != os.geteuid():
            return path
        target = path.parent / os.readlink(path)
    except OSError:
        return path
    return path if os.path.lexists(target) else target


def _append(fd: int, pieces: Iterable[bytes]) -> None:
    """Write every piece and sync, or leave the file as it was."""
    length = os.fstat(fd).st_size
    try:
        for piece in pieces:
            write_all(fd, piece)
        os.fsync(fd)
    except BaseException:
        # The error that stopped the writing is the one to report.
        with suppress(OSError):
            os.ftruncate(fd, length)
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def keep(path: Path | None, sender: str,
         chunks: Callable[[], Iterable[bytes]], *,
         recipients: list[str] | None = None, error: str | None = None,
         rebuild: str | None = None, attachments: list[str] | None = None,
         account: str | None = None, spill: bool = True) -> str:
    """Save a message that was not delivered; returns where it went.
    `chunks` gives the message afresh each time it is called.

    When dead.letter cannot be written, DeadLetterError (exit 73) is raised,
    after the message went to stderr so that it is not lost (unless spill is
    false: the caller still holds it).
    """
    if path is None:
        return "not saved (nosave is set)"

    def entry() -> Iterator[bytes]:
        return mbox_entry(sender, chunks(), recipients=recipients,
                          error=error, rebuild=rebuild,
                          attachments=attachments, account=account)

    try:
        append_private(path, entry())
    except OSError as exc:
        if not spill:
            raise DeadLetterError(
                f"cannot write {path}: {exc.strerror or exc}") from exc
        shown = to_stderr(entry())
        raise DeadLetterError(
            f"cannot write {path}: {exc.strerror or exc}; " +
            ("the message was printed on stderr" if shown else
             "stderr cannot take it either: the message is lost")) from exc
    return f"message saved in {path}"


# Reading dead.letter back ---------------------------------------------------
#
# A file is read by offsets, never whole: dead.letter may hold messages of
# hundreds of megabytes, and --resend sends each as a stream from the file.

class Span(NamedTuple):
    """Where one entry is in a file: its From_ line up to the next one."""

    start: int
    end: int


def spans(stream: BinaryIO) -> list[Span]:
    """The entries of an mbox file; what comes before the first From_
    line is not an entry."""
    starts: list[int] = []
    stream.seek(0)
    position = 0
    tail = b"\n"  # the file begins a line
    while block := stream.read(lines.BLOCK):
        data = tail + block
        found = data.find(b"\nFrom ")
        while found >= 0:
            starts.append(position - len(tail) + found + 1)
            found = data.find(b"\nFrom ", found + 1)
        # Too short to hold a whole match, so none is found twice.
        tail = data[-len(b"\nFrom ") + 1:]
        position += len(block)
    ends = [*starts[1:], position] if starts else []
    return [Span(start, end) for start, end in zip(starts, ends, strict=True)]


def read_entry(stream: BinaryIO, span: Span) -> Kept:
    """The From_ line and envelope lines of one entry; its message is read
    from the stream when it is sent (see Kept.chunks)."""
    stream.seek(span.start)
    position = span.start + _line_length(stream)
    sender: str | None = None
    recipients: list[str] = []
    rebuild = None
    attachments: list[str] = []
    account = None
    cut = False
    while position < span.end:
        line = stream.readline(ENVELOPE_LINE)
        length = len(line)
        if not line.endswith(b"\n"):
            length += _line_length(stream)
            cut = cut or (length > len(line) and
                          not line.startswith(ERROR_HEADER))
        line = line.rstrip(b"\n")
        if line.startswith(SENT_FROM) and sender is None and not recipients:
            return Kept(None, [], partial(iter, []), resent=True)
        if line.startswith(ENVELOPE_FROM):
            sender = _bracketed(line[len(ENVELOPE_FROM):])
        elif line.startswith(ENVELOPE_TO):
            recipients.append(_bracketed(line[len(ENVELOPE_TO):]))
        elif line.startswith(REBUILD_HEADER):
            rebuild = line[len(REBUILD_HEADER):].decode("ascii", "replace")
        elif line.startswith(ATTACH_HEADER):
            attachments.append(os.fsdecode(re.sub(
                rb"%(25|0A)", lambda m: b"%" if m[1] == b"25" else b"\n",
                line[len(ATTACH_HEADER):])))
        elif line.startswith(ACCOUNT_HEADER):
            account = line[len(ACCOUNT_HEADER):].decode("utf-8", "replace")
        elif line.startswith(ERROR_HEADER):
            position = min(position + length, span.end)
            break
        else:
            break
        position = min(position + length, span.end)
    end = span.end
    if end - position >= 2:
        stream.seek(end - 2)
        if stream.read(2) == b"\n\n":
            end -= 1  # the blank line that ends an mbox entry
    return Kept(sender, recipients, partial(_message, stream, position, end),
                rebuild.strip() if rebuild else None, attachments,
                account.strip() or None if account else None, cut)


def _line_length(stream: BinaryIO) -> int:
    """Read past one line, however long; returns its length."""
    length = 0
    while piece := stream.readline(lines.BLOCK):
        length += len(piece)
        if piece.endswith(b"\n"):
            break
    return length


def _message(stream: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The message between two offsets: mboxrd quoting undone, CRLF line
    ends; in pieces of about lines.BLOCK bytes."""
    for piece, at_start in lines.line_pieces(lines.blocks(stream, start, end)):
        text = QUOTED_FROM_AFTER_LF.sub(rb"\n\1", piece)
        if at_start and QUOTED_FROM.match(text):
            text = text[1:]
        yield text.replace(b"\n", b"\r\n")


def _bracketed(value: bytes) -> str:
    """An address between < and >; only that pair is removed (a recipient
    kept as given may be `Name <a@b>`)."""
    text = value.strip().decode("utf-8", "replace")
    return text[1:-1] if text.startswith("<") and text.endswith(">") \
        else text


def fingerprint(stream: BinaryIO, span: Span) -> tuple[int, str]:
    """The length and SHA-256 of an entry, to find it again in a file that
    changed since (see remove_entries)."""
    import hashlib  # only --resend needs it

    digest = hashlib.sha256()
    for block in lines.blocks(stream, span.start, span.end):
        digest.update(block)
    return span.end - span.start, digest.hexdigest()


def remove_entries(path: Path, done: list[tuple[int, str]], *,
                   keep_file: bool = False) -> None:
    """Remove the entries with these fingerprints from path, under the lock
    appenders take; entries appended meanwhile stay, and so does whatever
    comes before the first entry (mail another program left there). An
    emptied file is removed (only emptied, with keep_file). The file is
    copied, never held whole; when the copy cannot be written (a full
    disk), the entries are marked as sent where they are instead, so that
    no one gets them twice.

    DeadLetterError when neither can be done."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # moved or removed meanwhile
        log.warning("%s went away while --resend ran: wherever it is now, "
                    "it still holds the %d message(s) resent", path, len(done))
        return
    except OSError as exc:
        raise _unremoved(path, len(done), exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(path, "rb") as stream:
            found = spans(stream)
            left, sent = _without(stream, found, Counter(done))
            if not sent:
                return
            if found and found[0].start:
                left.insert(0, Span(0, found[0].start))
            try:
                if left:
                    _rewrite(path, stream, left)
                elif keep_file:
                    os.ftruncate(fd, 0)
                else:
                    os.unlink(path)
            except OSError as exc:
                _mark_sent(fd, stream, sent, path, exc)
    finally:
        os.close(fd)


def _mark_sent(fd: int, stream: BinaryIO, sent: list[Span], path: Path,
               cause: OSError) -> None:
    """Rename the envelope line of each entry sent (same length, written in
    place: a full disk takes it), which leaves the entry without an
    envelope: --resend leaves such entries alone."""
    marked = 0
    try:
        for span in sent:
            stream.seek(span.start)
            at = span.start + _line_length(stream)
            if stream.read(len(ENVELOPE_FROM)) == ENVELOPE_FROM:
                os.pwrite(fd, SENT_FROM, at)
            marked += 1
    except OSError as exc:
        raise _unremoved(path, len(sent) - marked, cause) from exc
    log.warning("could not rewrite %s (%s): the %d message(s) resent stay "
                "in it, marked %s", path, cause.strerror or cause, len(sent),
                SENT_FROM.decode().strip())


def _unremoved(path: Path, count: int, exc: OSError) -> DeadLetterError:
    return DeadLetterError(
        f"cannot remove the {count} message(s) resent from {path}: "
        f"{exc.strerror or exc}",
        hint="remove them by hand, or the next --resend sends them again")


def _without(stream: BinaryIO, found: list[Span],
             done: Counter[tuple[int, str]]) -> tuple[list[Span], list[Span]]:
    """The spans whose entries are not among those done (each removed
    once), and those that are."""
    lengths = {length for length, _ in done}
    left, sent = [], []
    for span in found:
        if span.end - span.start in lengths:
            mark = fingerprint(stream, span)
            if done[mark] > 0:
                done[mark] -= 1
                sent.append(span)
                continue
        left.append(span)
    return left, sent


def _rewrite(path: Path, stream: BinaryIO, left: list[Span]) -> None:
    """Replace path by a copy of these entries of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(out, 0o600)
        for span in left:
            for block in lines.blocks(stream, span.start, span.end):
                write_all(out, block)
        os.fsync(out)
    except BaseException:
        # A full disk: path stays as it was, without a copy beside it.
        os.unlink(temporary)
        raise
    finally:
        os.close(out)
    os.replace(temporary, path)
