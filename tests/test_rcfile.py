"""The mail.rc language: heirloom mailx 12.5 syntax as pymail reads it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pymail.errors import ConfigError
from pymail.rcfile import Interpreter, Line, RcState, logical_lines, split_words


def load(tmp_path: Path, text: str | bytes, *, terminal: bool = False,
         name: str = "mail.rc") -> tuple[RcState, Interpreter, Path]:
    """Write text to a file under tmp_path and run it through an Interpreter."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    state = RcState()
    interpreter = Interpreter(state, terminal=terminal)
    interpreter.load_file(path)
    return state, interpreter, path


def load_error(tmp_path: Path, text: str, **kwargs: bool) -> tuple[str, Path]:
    """Load text that must fail; return the error message and the file path."""
    path = tmp_path / "mail.rc"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    return info.value.message, path


# set / unset -------------------------------------------------------------


def test_set_value_and_boolean_on_one_line(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set a=b c\n")
    assert state.variables == {"a": "b", "c": ""}


def test_set_plain_and_empty(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set x\nset y=\n")
    assert state.variables["x"] == ""
    assert state.variables["y"] == ""


def test_set_no_prefix_removes(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set x=1 save\nset nox\n")
    assert "x" not in state.variables
    assert "save" in state.variables


def test_unset_removes(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set x=1 y=2 z\nunset x z\n")
    assert state.variables == {"y": "2"}


def test_set_nosave_unsets_save(tmp_path: Path) -> None:
    state = RcState()
    state.assign("save", "", "default")
    path = tmp_path / "mail.rc"
    path.write_text("set nosave\n")
    Interpreter(state, terminal=False).load_file(path)
    assert "save" not in state.variables
    assert state.origins["save"] == f"{path}:1"


def test_later_set_wins_and_origin_is_recorded(tmp_path: Path) -> None:
    state, _, path = load(tmp_path, "set smtp=a\n\nset smtp=b\n")
    assert state.variables["smtp"] == "b"
    assert state.origins["smtp"] == f"{path}:3"


def test_abbreviations(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "se a=1 b=2\nuns b\n")
    assert state.variables == {"a": "1"}


def test_snail_modifiers_are_dropped(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "wysh set a='x y'\nlocal wysh set b=2\n")
    assert state.variables == {"a": "x y", "b": "2"}


# Quoting -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ('set smtp-auth-password="pa ss"word', "smtp-auth-password", "pa ssword"),
        ("set 'from=Bot <b@x.org>'", "from", "Bot <b@x.org>"),
        ('set "from"=x', "from", "x"),
        ('set a="x\\"y"', "a", 'x"y'),
        ("set a='x\\'y'", "a", "x'y"),
        ("set a='\\q'", "a", "\\q"),
        ('set a="\\q"', "a", "\\q"),
        ("set a=b\\ c", "a", "b c"),
        ("set a=\\\"b", "a", '"b'),
        ("set a=b\\\\c", "a", "b\\c"),
        ("set a=''", "a", ""),
        ("set a=\"it's\"", "a", "it's"),
        ("set a='say \"hi\"'", "a", 'say "hi"'),
        ("set indentprefix=\"> \"", "indentprefix", "> "),
        ("set a=b#c", "a", "b#c"),
        ("set a=b\t#c", "a", "b"),
    ],
)
def test_quoting(tmp_path: Path, line: str, name: str, value: str) -> None:
    state, _, _ = load(tmp_path, line + "\n")
    assert state.variables[name] == value


def test_hash_after_blank_is_a_separate_word(tmp_path: Path) -> None:
    # `#` is not a comment after the command: it starts another variable.
    state, _, _ = load(tmp_path, "set a=b #c\n")
    assert state.variables == {"a": "b", "#c": ""}


def test_split_words_directly() -> None:
    assert split_words("set  a=b\t c ", "w") == ["set", "a=b", "c"]
    assert split_words("x'a b'\"c d\"e", "w") == ["xa bc de"]
    assert split_words("", "w") == []
    assert split_words("'' \"\"", "w") == ["", ""]


@pytest.mark.parametrize("text", ["set a='b", 'set a="b', "set a=\"b\\\""])
def test_split_words_unterminated(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_words(text, "somefile:7")
    assert info.value.message.startswith("somefile:7:")
    assert "unterminated" in info.value.message


# Comments ----------------------------------------------------------------


def test_comments_only_at_start_of_line(tmp_path: Path) -> None:
    text = "# set a=1\n   # set b=2\n\t# set c=3\nset d=4#5\n\n   \n"
    state, _, _ = load(tmp_path, text)
    assert state.variables == {"d": "4#5"}


def test_comment_with_odd_quotes_is_ignored(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "# don't do this: set x\nset y\n")
    assert state.variables == {"y": ""}


# Continuation lines ------------------------------------------------------


def test_backslash_continues_line(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set a=1 \\\nb=2\n")
    assert state.variables == {"a": "1", "b": "2"}


def test_backslash_newline_becomes_a_space(tmp_path: Path) -> None:
    # heirloom replaces the pair by a space: `a=x\` + `y` are two words.
    state, _, _ = load(tmp_path, "set a=x\\\ny\n")
    assert state.variables == {"a": "x", "y": ""}


def test_continuation_inside_quotes_keeps_the_space(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set a='x\\\ny'\n")
    assert state.variables["a"] == "x y"


def test_continuation_over_several_lines(tmp_path: Path) -> None:
    text = "set a=1 \\\n  b=2 \\\n  c=3 \\\n  d\nset e=5\n"
    state, _, path = load(tmp_path, text)
    assert state.variables == {"a": "1", "b": "2", "c": "3", "d": "", "e": "5"}
    assert state.origins["d"] == f"{path}:1"
    assert state.origins["e"] == f"{path}:5"


def test_continued_comment_swallows_the_next_line(tmp_path: Path) -> None:
    # As in heirloom, the line is joined first and then read as a comment.
    state, _, _ = load(tmp_path, "# comment \\\nset hidden\nset shown\n")
    assert state.variables == {"shown": ""}


def test_escaped_backslash_at_end_does_not_continue(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set a=b\\\\\nset c\n")
    assert state.variables == {"a": "b\\", "c": ""}


def test_three_backslashes_continue_the_line(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set a=b\\\\\\\nc=d\n")
    assert state.variables == {"a": "b\\", "c": "d"}


def test_error_on_continued_line_names_first_line(tmp_path: Path) -> None:
    text = "set a=1\n\nset b=2 \\\n  c=3 \\\n  d='oops\n"
    message, path = load_error(tmp_path, text)
    assert f"{path}:3" in message


def test_logical_lines_directly() -> None:
    lines = list(logical_lines("a\\\nb\nc\n\\\nd\\", "f"))
    assert [(line.text, line.where) for line in lines] == [
        ("a b", "f:1"), ("c", "f:3"), (" d ", "f:4"),
    ]


def test_crlf_line_endings(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, b"set a=1\r\nset b=x \\\r\nc\r\n")
    assert state.variables == {"a": "1", "b": "x", "c": ""}


@pytest.mark.parametrize("separator", ["\x0c", "\u2028", "\x1e"])
def test_only_newline_ends_a_line(tmp_path: Path, separator: str) -> None:
    state, _, path = load(tmp_path, f"set a=x{separator}y\nset b\n")
    assert state.variables["a"] == f"x{separator}y"
    assert state.origins["b"] == f"{path}:2"


# Distribution files ------------------------------------------------------

CENTOS7_HEIRLOOM = """\
# This is the configuration file for Heirloom mailx (formerly
# known under the name "nail".
# See mailx(1) for further options.
# This file is not overwritten when 'make install' is run in
# the mailx build process again.

# Sccsid @(#)nail.rc	2.11 (gritter) 8/2/08

# Do not forward to mbox by default since this is likely to be
# irritating for most users today.
set hold

# Append rather than prepend when writing to mbox automatically.
# This has no effect unless 'hold' is unset again.
set append

# Ask for a message subject.
set ask

# Assume a CRT-like terminal and invoke a pager.
set crt

# Messages may be terminated by a dot.
set dot

# Do not remove empty mail folders in the spool directory.
# This may be relevant for privacy since other users could
# otherwise create them with weaker permissions.
set keep

# Do not remove empty private mail folders.
set emptybox

# Quote the original message in replies by "> " as usual on the Internet.
set indentprefix="> "

# Automatically quote the text of the message that is responded to.
set quote

# Outgoing messages are sent in ISO-8859-1 if all their characters are
# representable in it, otherwise in UTF-8.
set sendcharsets=iso-8859-1,utf-8

# Display sender's real names in header summaries.
set showname

# Display the recipients of messages sent by the user himself in
# header summaries.
set showto

# Automatically check for new messages at each prompt, but avoid polling
# of IMAP servers or maildir folders.
set newmail=nopoll

# If threaded mode is activated, automatically collapse thread.
set autocollapse

# Mark messages that have been answered.
set markanswered

# Hide some header fields which are uninteresting for most human readers.
ignore received in-reply-to message-id references
ignore mime-version content-transfer-encoding

# Only include selected header fields when forwarding messages.
fwdretain subject date from to

# For Linux and BSD, this should be set.
set bsdcompat
"""

DEBIAN_BSD_MAILX = (
    "set ask askcc append dot save crt\n"
    "ignore Received Message-Id Resent-Message-Id Status Mail-From Return-Path"
    " Via Delivered-To\n"
)

# A representative excerpt of Debian's /etc/s-nail.rc: plain settings, a
# retain list, and commented-out examples that use s-nail's `\command`
# prefix, `if` expressions and backslash continuations inside comments.
SNAIL_EXCERPT = """\
#@ s-nail.rc
#@ Configuration file for S-nail(1) v14.9.24
#@ See s-nail(1) for the full documentation.

## Variables

# If threaded mode is activated, automatically collapse thread.
set autocollapse

# Append rather than prepend when writing to mbox automatically.
set append

# Confirm sending of messages.
set asksend

# Assume a CRT-like terminal and invoke a pager.
set crt

# Ask for the subject and the recipients in the compose mode.
set editheaders

# Start interactive mode even with an empty mailbox.
set emptystart

set fullnames

# Persist the history.
set history-gabby=all history-gabby-persist

# Do not move read messages to mbox.
set hold

# Quote with "> ".
set indentprefix="> "

set followup-to-honour=ask-yes
set markanswered
set mime-counter-evidence=0b1111
set keep
set keepsave
set quote
set recipients-in-cc
set reply-to-honour=ask-yes
set sendcharsets=utf-8,iso-8859-1
set showname
set showto

## Commands

#\\charsetalias iso-8859-1 latin1  latin1 cp1252

retain date sender from to cc subject message-id mail-followup-to reply-to
#\\headerpick type retain from_ date sender from to cc subject \\
#   message-id mail-followup-to reply-to
#\\if "$features" =@ ,+regex,
#  \\headerpick save ignore '^Original-.*$' '^X-.*$'
#\\end

#\\wysh set pipe-application/pdf='?=&@\\
#   trap "rm -f \\"${MAILX_FILENAME_TEMPORARY}\\"" EXIT;\\
#   mupdf "${MAILX_FILENAME_TEMPORARY}"'

#\\filetype \\
#   bz2 'bzip2 -dc' 'bzip2 -zc' \\
#   gz 'gzip -dc' 'gzip -c' \\
#   zst 'zstd -dc' 'zstd -19 -zc'

#\\if ! terminal && "$LOGNAME" == root
#   \\set mime-force-sendout
#\\endif
"""


def check_distribution_file(tmp_path: Path, text: str,
                            capsys: pytest.CaptureFixture[str],
                            caplog: pytest.LogCaptureFixture) -> RcState:
    with caplog.at_level(logging.INFO):
        state, _, _ = load(tmp_path, text)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    return state


def test_centos7_heirloom_mail_rc(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  caplog: pytest.LogCaptureFixture) -> None:
    state = check_distribution_file(tmp_path, CENTOS7_HEIRLOOM, capsys, caplog)
    assert state.variables["sendcharsets"] == "iso-8859-1,utf-8"
    assert state.variables["indentprefix"] == "> "
    assert state.variables["newmail"] == "nopoll"
    for name in ("hold", "append", "ask", "crt", "dot", "keep", "emptybox",
                 "quote", "showname", "showto", "autocollapse", "markanswered",
                 "bsdcompat"):
        assert state.variables[name] == "", name
    assert state.aliases == {}
    assert len(state.variables) == 16


def test_debian_bsd_mailx_mail_rc(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  caplog: pytest.LogCaptureFixture) -> None:
    state = check_distribution_file(tmp_path, DEBIAN_BSD_MAILX, capsys, caplog)
    assert state.variables == {name: "" for name in
                               ("ask", "askcc", "append", "dot", "save", "crt")}


def test_debian_snail_excerpt(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              caplog: pytest.LogCaptureFixture) -> None:
    state = check_distribution_file(tmp_path, SNAIL_EXCERPT, capsys, caplog)
    assert state.variables["history-gabby"] == "all"
    assert state.variables["history-gabby-persist"] == ""
    assert state.variables["sendcharsets"] == "utf-8,iso-8859-1"
    assert state.variables["mime-counter-evidence"] == "0b1111"
    assert state.variables["indentprefix"] == "> "
    assert "mime-force-sendout" not in state.variables
    assert not any(name.startswith("pipe-") for name in state.variables)


@pytest.mark.skipif(not Path("/etc/s-nail.rc").is_file(),
                    reason="no /etc/s-nail.rc on this machine")
def test_installed_snail_rc(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            caplog: pytest.LogCaptureFixture) -> None:
    text = Path("/etc/s-nail.rc").read_bytes().decode("utf-8", "surrogateescape")
    state = check_distribution_file(tmp_path, text, capsys, caplog)
    assert state.variables  # it sets things, and none of it is an error


# Conditions --------------------------------------------------------------


def test_if_send_and_receive(tmp_path: Path) -> None:
    text = """\
if s
  set in-send
else
  set in-send-else
endif
if r
  set in-receive
else
  set in-receive-else
endif
"""
    state, _, _ = load(tmp_path, text)
    assert set(state.variables) == {"in-send", "in-receive-else"}


def test_long_condition_names(tmp_path: Path) -> None:
    text = "if send\nset a\nendif\nif receive\nset b\nendif\n"
    state, _, _ = load(tmp_path, text)
    assert set(state.variables) == {"a"}


@pytest.mark.parametrize(("terminal", "expected"), [(False, "no"), (True, "yes")])
def test_if_terminal(tmp_path: Path, terminal: bool, expected: str) -> None:
    text = "if t\nset term=yes\nelse\nset term=no\nendif\n"
    state, _, _ = load(tmp_path, text, terminal=terminal)
    assert state.variables["term"] == expected


def test_negated_condition(tmp_path: Path) -> None:
    text = "if !r\nset a\nendif\nif !s\nset b\nendif\n"
    state, _, _ = load(tmp_path, text)
    assert set(state.variables) == {"a"}


def test_negation_as_separate_word(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "if ! terminal\nset x\nendif\n", terminal=True)
    assert "x" not in state.variables


def test_negated_unknown_expression_is_false(tmp_path: Path) -> None:
    text = 'if ! terminal && "$LOGNAME" == root\nset mime-force-sendout\nendif\n'
    state, _, _ = load(tmp_path, text)
    assert "mime-force-sendout" not in state.variables


def test_nested_conditions(tmp_path: Path) -> None:
    text = """\
if r
  if s
    set a
  else
    set b
  endif
  frobnicate whatever
else
  if s
    set c
  endif
endif
"""
    state, _, _ = load(tmp_path, text)
    assert set(state.variables) == {"c"}


def test_inactive_branch_is_not_parsed_for_commands(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "if r\nnot-a-command at all\nendif\nset x\n")
    assert set(state.variables) == {"x"}


def test_variable_condition(tmp_path: Path) -> None:
    text = "set a\nif $a\nset from-a\nendif\nif $b\nset from-b\nendif\n"
    state, _, _ = load(tmp_path, text)
    assert set(state.variables) == {"a", "from-a"}


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        ("set a\nif s\nset b\n", 2),  # the `if` that has no endif
        ("set a\nelse\n", 2),
        ("endif\n", 1),
        ("set a\n\nif\nendif\n", 3),
    ],
)
def test_condition_errors(tmp_path: Path, text: str, bad_line: int) -> None:
    message, path = load_error(tmp_path, text)
    assert f"{path}:{bad_line}" in message


# account / define --------------------------------------------------------


ACCOUNTS = """\
set from=default@example.org
account work {
  set from=me@work.example smtp=smtps://mail.work.example
  # a comment inside the block
  set smtp-auth-user=me
}
account home {
  set from=me@home.example
}
"""


def test_account_blocks_are_stored_not_run(tmp_path: Path) -> None:
    state, _, path = load(tmp_path, ACCOUNTS)
    assert state.variables == {"from": "default@example.org"}
    assert set(state.accounts) == {"work", "home"}
    assert all(isinstance(line, Line) for line in state.accounts["work"])
    assert state.accounts["work"][0].where == f"{path}:3"


def test_apply_account(tmp_path: Path) -> None:
    state, interpreter, path = load(tmp_path, ACCOUNTS)
    interpreter.apply_account("work")
    assert state.variables == {
        "from": "me@work.example",
        "smtp": "smtps://mail.work.example",
        "smtp-auth-user": "me",
    }
    assert state.origins["smtp-auth-user"] == f"{path}:5"


def test_apply_unknown_account(tmp_path: Path) -> None:
    _, interpreter, _ = load(tmp_path, ACCOUNTS)
    with pytest.raises(ConfigError) as info:
        interpreter.apply_account("nope")
    assert "nope" in info.value.message


def test_account_errors_show_when_applied(tmp_path: Path) -> None:
    state, interpreter, path = load(tmp_path, "set a\naccount bad {\n  bogus\n}\n")
    assert set(state.accounts) == {"bad"}
    with pytest.raises(ConfigError) as info:
        interpreter.apply_account("bad")
    assert f"{path}:3" in info.value.message


def test_account_without_block_is_ignored(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "account work\nset x\n")
    assert state.variables == {"x": ""}
    assert state.accounts == {}


def test_unclosed_account_block(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "account work {\nset a\n")
    assert str(path) in message
    assert "work" in message


def test_define_is_skipped(tmp_path: Path) -> None:
    text = """\
define mymacro {
  set inside-macro
  this-is-no-command
  echo hello
}
set after
"""
    state, _, _ = load(tmp_path, text)
    assert state.variables == {"after": ""}
    assert state.accounts == {}


def test_account_in_inactive_branch(tmp_path: Path) -> None:
    text = "if r\naccount x {\nset a\n}\nendif\nset b\n"
    state, _, _ = load(tmp_path, text)
    assert state.accounts == {}
    assert state.variables == {"b": ""}


# alias -------------------------------------------------------------------


def test_alias_accumulates(tmp_path: Path) -> None:
    text = "alias team a@b c@d\nalias team e@f\ngroup ops o@p\na solo s@t\n"
    state, _, _ = load(tmp_path, text)
    assert state.aliases == {
        "team": ["a@b", "c@d", "e@f"],
        "ops": ["o@p"],
        "solo": ["s@t"],
    }


def test_alias_listing_forms_do_nothing(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "alias\nalias team\n")
    assert state.aliases == {}


def test_unalias(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "alias a x@y\nalias b z@y\nunalias a\n")
    assert state.aliases == {"b": ["z@y"]}


def test_alias_with_quoted_full_name(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "alias boss 'Big Boss <boss@x.org>'\n")
    assert state.aliases == {"boss": ["Big Boss <boss@x.org>"]}


# source ------------------------------------------------------------------


def test_source(tmp_path: Path) -> None:
    extra = tmp_path / "extra.rc"
    extra.write_text("set from=sourced@x.org\nalias s s@x.org\n")
    text = f"set from=first@x.org\nsource {extra}\nset after\n"
    state, _, _ = load(tmp_path, text)
    assert state.variables == {"from": "sourced@x.org", "after": ""}
    assert state.origins["from"] == f"{extra}:1"
    assert state.aliases == {"s": ["s@x.org"]}


def test_source_with_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "more.rc").write_text("set tilde\n")
    state, _, _ = load(tmp_path, "so ~/more.rc\n")
    assert state.variables == {"tilde": ""}


def test_source_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.rc"
    message, path = load_error(tmp_path, f"set a\n\nsource {missing}\n")
    assert f"{path}:3" in message
    assert str(missing) in message


def test_error_in_sourced_file_names_that_file(tmp_path: Path) -> None:
    extra = tmp_path / "extra.rc"
    extra.write_text("set a\nbogus-command\n")
    message, _ = load_error(tmp_path, f"source {extra}\n")
    assert f"{extra}:2" in message


def test_source_loop_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mail.rc"
    message, _ = load_error(tmp_path, f"source {path}\n")
    assert "nested" in message


def test_source_needs_one_name(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "source a b\n")
    assert f"{path}:1" in message


# Errors ------------------------------------------------------------------


def test_unterminated_quote_names_file_and_line(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "set a=1\n# x\nset b='open\n")
    assert f"{path}:3" in message


def test_unknown_command_names_file_and_line(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "set a=1\n\nfrobnicate now\n")
    assert f"{path}:3" in message
    assert "frobnicate" in message


def test_set_without_name(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "set =x\n")
    assert f"{path}:1" in message


def test_receive_side_commands_are_accepted(tmp_path: Path) -> None:
    text = ("ignore received\nretain from to\nalternates me@x.org\n"
            "fwdretain subject\ncommandalias x set y\nset z\n")
    state, _, _ = load(tmp_path, text)
    assert state.variables == {"z": ""}


# Encoding ----------------------------------------------------------------


def test_invalid_utf8_loads(tmp_path: Path) -> None:
    data = b"set realname=Jos\xe9 from=a@b.org\nset b\xff\xfe=ok\nset after\n"
    state, _, _ = load(tmp_path, data)
    assert state.variables["from"] == "a@b.org"
    assert state.variables["realname"].startswith("Jos")
    assert state.variables["realname"] != "Jos"
    assert "after" in state.variables
    # The stray bytes survive the round trip.
    raw = state.variables["realname"].encode("utf-8", "surrogateescape")
    assert raw == b"Jos\xe9"


def test_utf8_value(tmp_path: Path) -> None:
    state, _, _ = load(tmp_path, "set realname='José Müller'\n")
    assert state.variables["realname"] == "José Müller"
