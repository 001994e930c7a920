"""The mail.rc language, as heirloom-mailx 12.5 reads it.

Only the commands that matter for sending change anything (set, unset, alias,
account, source, if/else/endif); the many receive-side commands found in
distribution files are accepted and ignored. Every error names the file and
the line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from pymail import logs
from pymail.errors import ConfigError
from pymail.files import read_regular

log = logs.Logger(__name__)

# Commands of heirloom-mailx and s-nail that only matter when reading mail,
# displaying it, or editing interactively. They are valid in a mail.rc and
# have no effect on sending.
IGNORED_COMMANDS = frozenset(
    """
    alternates alt unalternates ignore discard retain unignore undiscard
    unretain fwdignore fwdretain unfwdignore unfwdretain saveignore
    saveretain unsaveignore unsaveretain shortcut unshortcut headerpick
    unheaderpick mimetype unmimetype commandalias uncommandalias ghost
    unghost colour color uncolour uncolor bind unbind charsetalias
    uncharsetalias filetype unfiletype mlist unmlist mlsubscribe
    unmlsubscribe echo echon echoerr echoerrn environ setenv unsetenv
    localopts call xcall call_if undefine unaccount newmail sort unsort
    retain unretain customhdr uncustomhdr digmsg read readall readctl
    """.split()
)

# Abbreviations heirloom accepts for the commands pymail acts on.
ABBREVIATIONS = {
    "se": "set",
    "uns": "unset",
    "a": "alias",
    "g": "alias",
    "group": "alias",
    "so": "source",
    "acc": "account",
    "elif": "elif",
    "elseif": "elif",
}

# s-nail's command modifiers: `wysh set x=y` means `set x=y` for us.
MODIFIERS = frozenset({"wysh", "vput", "local", "ignerr", "u", "scope"})

MAX_SOURCE_DEPTH = 10


class Line(NamedTuple):
    """One logical line of a file: its text and where it came from."""

    text: str
    where: str


class RcState:
    """What the files said: variables, aliases and account blocks."""

    def __init__(self) -> None:
        self.variables: dict[str, str] = {}
        self.origins: dict[str, str] = {}
        self.aliases: dict[str, list[str]] = {}
        self.accounts: dict[str, list[Line]] = {}
        # (source, variable) for every password set: a file's path, "-S" or
        # "environment"; for the permission and command-line warnings.
        self.secrets: list[tuple[str, str]] = []

    def assign(self, name: str, value: str | None, where: str,
               source: str | None = None) -> None:
        """Set a variable, or unset it when value is None."""
        # Popped first, so that the order of variables is the order of
        # their last assignments (of smtp and mta, the later one counts).
        self.variables.pop(name, None)
        if value is not None:
            self.variables[name] = value
            if is_secret(name, value):
                self.secrets.append((source or where, name))
        self.origins[name] = where


def is_secret(name: str, value: str) -> bool:
    """Does this variable hold a password (also inside an smtp/mta URL)?"""
    if name in ("smtp-auth-password", "password") or name.startswith(
            ("smtp-auth-password-", "password-")):
        return bool(value)
    if name in ("smtp", "mta") and "://" in value:
        userinfo = value.split("://", 1)[1].split("/", 1)[0]
        return "@" in userinfo and ":" in userinfo.rpartition("@")[0]
    return False


def split_words(text: str, where: str) -> list[str]:
    """Split a command line into words with heirloom's quoting rules.

    Quotes (single or double) may surround any part of a word and are
    removed. Outside quotes, a backslash makes the next character literal.
    Inside quotes, a backslash followed by the quote character gives that
    character; before any other character the backslash is kept.
    """
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        i += 1
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and i < len(text):
                nxt = text[i]
                i += 1
                if nxt != quote:
                    current.append("\\")
                current.append(nxt)
            else:
                current.append(c)
        elif c in "\"'":
            quote = c
            in_word = True
        elif c == "\\":
            if i < len(text):
                current.append(text[i])
                i += 1
            in_word = True
        elif c in " \t":
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
        else:
            current.append(c)
            in_word = True
    if quote:
        raise ConfigError(f"{where}: unterminated {quote} quote")
    if in_word:
        words.append("".join(current))
    return words


def logical_lines(text: str, name: str) -> Iterator[Line]:
    """Yield the file's lines, joined where a line ends in a backslash."""
    pending: list[str] = []
    start = 0
    # Only a newline ends a line: form feeds and Unicode separators are data.
    raws = text.split("\n")
    if raws[-1] == "":
        raws.pop()
    for number, raw in enumerate(raws, start=1):
        raw = raw.removesuffix("\r")
        if not pending:
            start = number
        trailing = len(raw) - len(raw.rstrip("\\"))
        if trailing % 2:
            # heirloom replaces the backslash-newline pair by a space.
            pending.append(raw[:-1] + " ")
            continue
        pending.append(raw)
        yield Line("".join(pending), f"{name}:{start}")
        pending = []
    if pending:
        yield Line("".join(pending), f"{name}:{start}")


class Interpreter:
    """Runs mail.rc lines against an RcState."""

    def __init__(self, state: RcState, *, terminal: bool | None = None) -> None:
        self.state = state
        if terminal is None:
            terminal = sys.stdin is not None and sys.stdin.isatty()
        self.terminal = terminal
        self.depth = 0
        self.sources: list[str] = []
        self.current: str | None = None  # the file being read

    def load_file(self, path: Path) -> None:
        """Read and run one file; errors name the file and line."""
        if self.depth >= MAX_SOURCE_DEPTH:
            raise ConfigError(f"{path}: source nested more than "
                              f"{MAX_SOURCE_DEPTH} deep")
        data = read_regular(path)
        # Configuration files are UTF-8; a stray byte must not stop mail.
        text = data.decode("utf-8", errors="surrogateescape")
        self.depth += 1
        outer, self.current = self.current, str(path)
        try:
            self.run(logical_lines(text, str(path)))
        finally:
            self.depth -= 1
            self.current = outer

    def run(self, lines: Iterator[Line] | list[Line]) -> None:
        """Run lines, keeping track of if/else and of account blocks."""
        # Each entry: (this branch is active, some branch was already taken,
        # where the `if` is).
        conditions: list[tuple[bool, bool, str]] = []
        block: tuple[str, str, list[Line]] | None = None
        block_where = ""
        for line in lines:
            stripped = line.text.strip()
            if block is not None:
                if stripped == "}":
                    self._close_block(*block)
                    block = None
                else:
                    block[2].append(line)
                continue
            if not stripped or stripped.startswith("#"):
                continue
            if "\0" in stripped:
                raise ConfigError(f"{line.where}: a NUL byte in the line")
            words = split_words(stripped, line.where)
            while words and words[0] in MODIFIERS:
                words = words[1:]
            if not words:
                continue
            command = ABBREVIATIONS.get(words[0], words[0])
            if command in ("if", "elif", "else", "endif"):
                self._condition(command, words[1:], conditions, line.where)
                continue
            if not all(active for active, _, _ in conditions):
                continue
            if command in ("account", "define") and words[-1] == "{":
                if len(words) < 3:
                    raise ConfigError(f"{line.where}: {command} needs a name")
                block = (command, words[1], [])
                block_where = line.where
                continue
            self.execute(command, words[1:], line.where)
        if block is not None:
            raise ConfigError(f"{block_where}: {block[0]} {block[1]} "
                              "has no closing }")
        if conditions:
            raise ConfigError(f"{conditions[-1][2]}: if without endif")

    def _close_block(self, kind: str, name: str, lines: list[Line]) -> None:
        if kind == "account":
            self.state.accounts[name] = lines
        # `define` makes a macro; macros only run interactively or on hooks.

    def _condition(self, command: str, args: list[str],
                   stack: list[tuple[bool, bool, str]], where: str) -> None:
        if command == "if":
            value = self._test(args, where)
            stack.append((value, value, where))
            return
        if not stack:
            raise ConfigError(f"{where}: {command} without if")
        active, taken, opened = stack[-1]
        if command == "endif":
            stack.pop()
        elif command == "else":
            stack[-1] = (not taken, True, opened)
        else:
            value = not taken and self._test(args, where)
            stack[-1] = (value, taken or value, opened)

    def _test(self, args: list[str], where: str) -> bool:
        """Evaluate a condition: heirloom's r, s, t and their long names."""
        words = list(args)
        negate = False
        # `!` may stand alone (s-nail) or be glued to the word (heirloom).
        while words and words[0].startswith("!"):
            negate = not negate
            words[0] = words[0][1:]
            if not words[0]:
                words.pop(0)
        if not words:
            raise ConfigError(f"{where}: if needs a condition")
        word = words[0]
        if len(words) > 1:
            word = ""  # an expression: see below
        if word.lower() in ("r", "receive"):
            value = False
        elif word.lower() in ("s", "send"):
            value = True
        elif word.lower() in ("t", "term", "terminal"):
            value = self.terminal
        elif word.startswith("$"):
            value = word[1:].strip("{}") in self.state.variables
        else:
            # s-nail's richer expressions compare values pymail does not
            # keep; the branch is skipped whatever its negation.
            log.debug("%s: condition %r read as false", where, " ".join(args))
            return False
        return value != negate

    def execute(self, command: str, args: list[str], where: str) -> None:
        """Run one command."""
        if command == "set":
            for word in args:
                self.set_word(word, where)
        elif command == "unset":
            for name in args:
                self.state.assign(name, None, where)
        elif command == "alias":
            if len(args) < 2:
                # `alias` alone lists, `alias name` shows one: no effect here.
                return
            self.state.aliases.setdefault(args[0], []).extend(args[1:])
        elif command == "unalias":
            for name in args:
                self.state.aliases.pop(name, None)
        elif command == "source":
            if len(args) != 1:
                raise ConfigError(f"{where}: source needs one file name")
            self._source(args[0], where)
        elif command == "account":
            # `account NAME` alone switches accounts interactively.
            return
        elif command not in IGNORED_COMMANDS:
            # Only the name: `smtp-auth-password=...` without `set` must
            # not show the password.
            name = command.partition("=")[0][:40]
            hint = f"did you mean `set {name}=...`?" if "=" in command \
                else None
            raise ConfigError(f"{where}: unknown command '{name}'", hint=hint)

    def set_word(self, word: str, where: str, source: str | None = None
                 ) -> None:
        name, eq, value = word.partition("=")
        if not name:
            # The value is not shown: it may be the rest of a password.
            raise ConfigError(f"{where}: a word of `set` has a value but no "
                              "variable name",
                              hint="a value with spaces needs quotes: "
                              "set name=\"a b\"")
        source = source or self.current
        if eq:
            self.state.assign(name, value, where, source)
        elif name.startswith("no") and len(name) > 2:
            self.state.assign(name[2:], None, where, source)
        else:
            self.state.assign(name, "", where, source)

    def _source(self, name: str, where: str) -> None:
        path = Path(os.path.expanduser(name))
        try:
            self.load_file(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"{where}: cannot source {path}: {reason}") from exc

    def apply_account(self, name: str) -> None:
        """Run the lines of an `account NAME { ... }` block."""
        if name not in self.state.accounts:
            raise ConfigError(f"no account named '{name}' in the mail.rc files")
        self.run(self.state.accounts[name])
