"""The command line: options, recipients, configuration sources, exit
statuses, dead.letter, and pymail run as a real process (pipe and terminal)."""

from __future__ import annotations

import email
import email.policy
import os
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

import pymail
from conftest import Result, recipe
from pymail import settings as settings_module
from servers import PASSWORD, USER, Received, Server, free_port

Run = Callable[..., Result]
MailRc = Callable[[str], Path]

BODY = b"disk /var is 97% full\n"
TO = "ops@example.org"
TIMEOUT = "set socket-connect-timeout=2\n"


def parse(received: Received) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def addrs(message: EmailMessage, name: str) -> list[str]:
    return [a.addr_spec for a in message[name].addresses]


def without(text: str, line: str) -> str:
    """The recipe minus one of its lines (which must be there)."""
    assert line + "\n" in text
    return text.replace(line + "\n", "")


def dead_letter(home: Path) -> bytes:
    path = home / "dead.letter"
    return path.read_bytes() if path.exists() else b""


@pytest.fixture
def relay(server: Server, mailrc: MailRc) -> Server:
    mailrc(recipe(server.port, extra=TIMEOUT))
    return server


@pytest.fixture
def no_relay(mailrc: MailRc) -> Path:
    """A mail.rc with everything of the recipe but `smtp`."""
    lines = recipe(1, extra=TIMEOUT).splitlines()
    return mailrc("".join(line + "\n" for line in lines
                          if not line.startswith("set smtp=")))


# Usage, version, help --------------------------------------------------------


def test_no_recipient_is_a_usage_error(relay: Server, run: Run) -> None:
    result = run("-s", "nobody", input=BODY)
    assert result.code == 64
    assert "Usage:" in result.err
    assert "pymail" in result.err
    assert result.out == ""
    assert relay.messages == []


def test_unknown_option(relay: Server, run: Run) -> None:
    result = run("-x", TO, input=BODY)
    assert result.code == 64
    assert "-x" in result.err
    assert relay.messages == []


def test_option_without_its_value(relay: Server, run: Run) -> None:
    result = run(TO, "-s", input=BODY)
    assert result.code == 64
    assert "-s" in result.err
    assert relay.messages == []


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(run: Run, flag: str) -> None:
    result = run(flag)
    assert result.code == 0
    assert pymail.__version__ in result.out
    assert result.out.strip() == f"pymail {pymail.__version__}"


def test_help(run: Run) -> None:
    result = run("--help")
    assert result.code == 0
    assert "-s" in result.out
    assert "SUBJECT" in result.out
    assert "Usage:" in result.out


# Recipients on the command line --------------------------------------------


def test_options_after_addresses(relay: Server, run: Run) -> None:
    result = run(TO, "-s", "t", input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == [TO]
    assert parse(received)["Subject"] == "t"


def test_options_between_addresses(relay: Server, run: Run) -> None:
    result = run(TO, "-s", "between", "second@example.org", "-c",
                 "cc@example.org", input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == [TO, "second@example.org", "cc@example.org"]
    message = parse(received)
    assert addrs(message, "To") == [TO, "second@example.org"]
    assert message["Subject"] == "between"


def test_cc_and_bcc_repeatable_and_lists(relay: Server, run: Run) -> None:
    result = run("-s", "lists",
                 "-c", "c1@example.net, c2@example.net", "-c", "c3@example.net",
                 "-b", "b1@example.net,b2@example.net", "-b", "b3@example.net",
                 TO, input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == [
        TO, "c1@example.net", "c2@example.net", "c3@example.net",
        "b1@example.net", "b2@example.net", "b3@example.net"]
    message = parse(received)
    assert addrs(message, "Cc") == ["c1@example.net", "c2@example.net",
                                    "c3@example.net"]
    assert "Bcc" not in message
    assert b"b1@" not in received.data


def test_to_list_in_one_argument(relay: Server, run: Run) -> None:
    result = run("-s", "list", "a@example.org, b@example.org", input=BODY)
    assert result.code == 0, result.err
    assert relay.messages[0].rcpt_tos == ["a@example.org", "b@example.org"]


def test_display_name_on_the_command_line(relay: Server, run: Run) -> None:
    result = run("-s", "named", "Ops Team <team@example.org>", input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == ["team@example.org"]
    (to,) = parse(received)["To"].addresses
    assert to.display_name == "Ops Team"
    assert to.addr_spec == "team@example.org"


def test_invalid_address(relay: Server, run: Run, home: Path) -> None:
    result = run("-s", "bad", "bad addr@x", input=b"keep me 3141\n")
    assert result.code == 65
    assert "bad addr@x" in result.err
    assert relay.messages == []
    assert relay.handler.logins == []
    assert b"keep me 3141" in dead_letter(home)


def test_invalid_address_among_good_ones(relay: Server, run: Run,
                                         home: Path) -> None:
    result = run("-s", "bad", TO, "-c", "bad addr@x", input=b"keep me 2718\n")
    assert result.code == 65
    assert "bad addr@x" in result.err
    assert relay.messages == []
    assert b"keep me 2718" in dead_letter(home)


def test_bare_name_not_an_alias(relay: Server, run: Run, home: Path) -> None:
    result = run("-s", "who", "nosuchalias", input=b"keep me 1618\n")
    assert result.code == 65
    assert "nosuchalias" in result.err
    assert relay.messages == []
    assert b"keep me 1618" in dead_letter(home)


def test_quoted_name_with_a_comma_is_one_recipient(relay: Server,
                                                   run: Run) -> None:
    result = run("-s", "q", '"Doe, John" <john@example.org>', input=BODY)
    assert result.code == 0, result.err
    received = relay.messages[0]
    assert received.rcpt_tos == ["john@example.org"]
    (to,) = parse(received)["To"].addresses
    assert to.display_name == "Doe, John"


@pytest.mark.parametrize("address", ["用户@example.org", "ops@例子.中国"])
def test_non_ascii_address_is_not_an_internal_error(
        relay: Server, run: Run, home: Path, address: str) -> None:
    result = run("-s", "intl", address, input=b"keep me 8128\n")
    assert result.code != 70, result.err
    if result.code == 0:  # delivered, e.g. with the domain in punycode
        assert len(relay.messages) == 1
    else:
        assert address in result.err
        assert relay.messages == []
        assert b"keep me 8128" in dead_letter(home)


def test_alias_expands(server: Server, run: Run, mailrc: MailRc) -> None:
    mailrc(recipe(server.port, extra=TIMEOUT +
                  "alias ops a@example.org b@example.org\n"))
    result = run("-s", "alias", "ops", input=BODY)
    assert result.code == 0, result.err
    received = server.messages[0]
    assert received.rcpt_tos == ["a@example.org", "b@example.org"]
    assert addrs(parse(received), "To") == ["a@example.org", "b@example.org"]


# Empty bodies ----------------------------------------------------------------


def test_E_with_empty_stdin_sends_nothing(relay: Server, run: Run,
                                          home: Path) -> None:
    result = run("-E", "-s", "empty", TO, input=b"")
    assert result.code == 0, result.err
    assert relay.messages == []
    assert relay.handler.logins == []
    assert dead_letter(home) == b""


def test_E_with_a_body_sends(relay: Server, run: Run) -> None:
    result = run("-E", "-s", "not empty", TO, input=BODY)
    assert result.code == 0, result.err
    assert len(relay.messages) == 1


def test_empty_body_without_E_is_sent(relay: Server, run: Run) -> None:
    result = run("-s", "empty", TO, input=b"")
    assert result.code == 0, result.err
    assert len(relay.messages) == 1
    message = parse(relay.messages[0])
    assert message["Subject"] == "empty"
    content = message.get_content()
    assert isinstance(content, str)
    assert content.strip() == ""


# Configuration sources -----------------------------------------------------


def test_n_skips_the_system_mail_rc(server: Server, run: Run, mailrc: MailRc,
                                    tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system-mail.rc"
    # A password for this host beats the user's plain smtp-auth-password,
    # so only skipping this file lets the right one through.
    system.write_text("set smtp-auth-password-127.0.0.1=wrong\n")
    monkeypatch.setattr(settings_module, "SYSTEM_RC", system)
    mailrc(recipe(server.port, extra=TIMEOUT))

    failed = run("-s", "with system", TO, input=BODY)
    assert failed.code == 77, failed.err
    assert server.messages == []

    result = run("-n", "-s", "without system", TO, input=BODY)
    assert result.code == 0, result.err
    assert len(server.messages) == 1
    assert parse(server.messages[0])["Subject"] == "without system"


def test_system_mail_rc_is_read(server: Server, run: Run, mailrc: MailRc,
                                tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart: without -n the system file supplies what is missing."""
    system = tmp_path / "system-mail.rc"
    system.write_text(f"set smtp=smtps://127.0.0.1:{server.port}\n")
    monkeypatch.setattr(settings_module, "SYSTEM_RC", system)
    lines = recipe(server.port, extra=TIMEOUT).splitlines()
    mailrc("".join(line + "\n" for line in lines
                   if not line.startswith("set smtp=")))
    assert run("-s", "sys", TO, input=BODY).code == 0
    assert len(server.messages) == 1
    result = run("-n", "-s", "nosys", TO, input=BODY)
    assert result.code == 78
    assert len(server.messages) == 1


def test_S_beats_the_files(relay: Server, run: Run) -> None:
    result = run("-S", "smtp-auth-password=not-it-7731", "-s", "pw", TO,
                 input=BODY)
    assert result.code == 77, result.err
    assert relay.messages == []
    assert relay.handler.logins[-1] == (USER, "not-it-7731")
    assert "not-it-7731" not in result.err


def test_password_from_the_environment(server: Server, run: Run,
                                       mailrc: MailRc,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    mailrc(without(recipe(server.port, extra=TIMEOUT),
                   f"set smtp-auth-password={PASSWORD}"))
    monkeypatch.setenv("PYMAIL_SMTP_AUTH_PASSWORD", PASSWORD)
    result = run("-s", "env", TO, input=BODY)
    assert result.code == 0, result.err
    assert len(server.messages) == 1
    assert server.handler.logins == [(USER, PASSWORD)]


def test_no_password_anywhere(server: Server, run: Run, mailrc: MailRc,
                              home: Path) -> None:
    mailrc(without(recipe(server.port, extra=TIMEOUT),
                   f"set smtp-auth-password={PASSWORD}"))
    result = run("-s", "nopw", TO, input=b"keep 1414\n")
    assert result.code == 78
    assert "PYMAIL_SMTP_AUTH_PASSWORD" in result.err
    assert server.messages == []
    assert b"keep 1414" in dead_letter(home)


# No relay, and dead.letter -------------------------------------------------


def test_no_smtp(no_relay: Path, run: Run, home: Path) -> None:
    result = run("-s", "lost", TO, input=b"keep me 6022\n")
    assert result.code == 78
    assert "set smtp=" in result.err
    assert str(home / "dead.letter") in result.err
    assert b"keep me 6022" in dead_letter(home)


def test_no_configuration_at_all(run: Run, home: Path) -> None:
    result = run("-s", "lost", TO, input=b"keep me 1729\n")
    assert result.code == 78
    assert "set smtp=" in result.err
    assert b"keep me 1729" in dead_letter(home)


def test_mailrc_naming_a_missing_file_is_said(run: Run, home: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    missing = tmp_path / "typo.rc"
    monkeypatch.setenv("MAILRC", str(missing))
    result = run("-v", "-s", "lost", TO, input=b"keep me\n")
    assert result.code == 78
    assert f"MAILRC names {missing}, which does not exist" in result.err
    # The hint names the file that is read, not ~/.mailrc.
    assert f"to {missing} or /etc/mail.rc" in result.err


def test_dead_letter_is_private_mbox_and_appended(no_relay: Path, run: Run,
                                                  home: Path) -> None:
    old = os.umask(0)
    try:
        first = run("-s", "one", TO, input=b"first body\n")
        second = run("-s", "two", TO, input=b"From the second body\n")
    finally:
        os.umask(old)
    assert first.code == second.code == 78
    path = home / "dead.letter"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"From ")
    lines = data.split(b"\n")
    assert sum(1 for line in lines if line.startswith(b"From ")) == 2
    assert data.index(b"first body") < data.index(b"the second body")
    # mbox quoting: a body line starting with "From " is escaped.
    assert b"\n>From the second body\n" in data
    message = email.message_from_bytes(data.split(b"\n", 1)[1].split(
        b"\nFrom ")[0], policy=email.policy.default)
    assert message["Subject"] == "one"


def test_nosave(mailrc: MailRc, run: Run, home: Path) -> None:
    mailrc("set nosave\n")
    result = run("-s", "lost", TO, input=b"gone\n")
    assert result.code == 78
    assert not (home / "dead.letter").exists()
    assert list(home.iterdir()) == [home / ".mailrc"]


def test_dead_names_another_file(no_relay: Path, run: Run, home: Path,
                                 tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.letter"
    monkeypatch.setenv("DEAD", str(other))
    result = run("-s", "lost", TO, input=b"keep me 4669\n")
    assert result.code == 78
    assert b"keep me 4669" in other.read_bytes()
    assert str(other) in result.err
    assert not (home / "dead.letter").exists()


def test_dead_letter_cannot_be_written(no_relay: Path, run: Run, home: Path,
                                       tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("DEAD", str(blocker / "dead.letter"))
    result = run("-s", "lost", TO, input=b"the precious body 5772\n")
    assert result.code == 73
    assert "the precious body 5772" in result.err
    assert str(blocker / "dead.letter") in result.err
    assert not (home / "dead.letter").exists()


# pymail as a process ---------------------------------------------------------


def console_script() -> str:
    bindir = Path(sys.executable).parent
    found = shutil.which("pymail", path=str(bindir)) or shutil.which("pymail")
    assert found, "the pymail console script is not installed"
    return found


def process_env(home: Path, rc: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYMAIL_")}
    env.update(HOME=str(home), MAILRC=str(rc))
    env.pop("DEAD", None)
    return env


@pytest.fixture
def rc_file(server: Server, tmp_path: Path) -> Path:
    path = tmp_path / "recipe.rc"
    path.write_text(recipe(server.port, extra=TIMEOUT))
    return path


@pytest.mark.parametrize("how", ["module", "script"])
def test_runs_as_a_process(server: Server, rc_file: Path, home: Path,
                           how: str) -> None:
    argv = ([sys.executable, "-m", "pymail"] if how == "module"
            else [console_script()])
    proc = subprocess.run(
        [*argv, "-n", "-s", f"via {how}", TO], input=BODY,
        capture_output=True, env=process_env(home, rc_file), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert len(server.messages) == 1
    message = parse(server.messages[0])
    assert message["Subject"] == f"via {how}"
    assert server.messages[0].rcpt_tos == [TO]


def test_process_exit_status_on_failure(tmp_path: Path, home: Path) -> None:
    rc = tmp_path / "empty.rc"
    rc.write_text("")
    proc = subprocess.run(
        [console_script(), "-n", "-s", "x", TO], input=BODY,
        capture_output=True, env=process_env(home, rc), timeout=30)
    assert proc.returncode == 78
    assert b"set smtp=" in proc.stderr


def run_at_terminal(rc: Path, home: Path, typed: bytes
                    ) -> subprocess.CompletedProcess[bytes]:
    """Run the console script with stdin on a pty and type into it."""
    master, slave = os.openpty()
    proc = None
    try:
        proc = subprocess.Popen(
            [console_script(), "-n", "-s", "typed", TO], stdin=slave,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=process_env(home, rc))
        os.close(slave)
        slave = -1
        os.write(master, typed)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            # Drain the echo so the terminal never blocks the child.
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    os.read(master, 4096)
                except OSError:
                    break
        try:
            # The terminal closes as pymail exits, a moment before its status
            # can be collected.
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail("pymail did not finish reading the terminal")
        out, err = proc.communicate(timeout=10)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_terminal_dot_ends_the_body(server: Server, tmp_path: Path,
                                    home: Path) -> None:
    rc = tmp_path / "dot.rc"
    rc.write_text(recipe(server.port, extra=TIMEOUT + "set dot\n"))
    # What follows the lone dot is never read: the dot ended the message.
    proc = run_at_terminal(rc, home, b"line one\n.\nnot this\n")
    assert proc.returncode == 0, proc.stderr
    assert len(server.messages) == 1
    content = parse(server.messages[0]).get_content()
    assert content.replace("\r\n", "\n") == "line one\n"


def test_terminal_eof_ends_the_body(server: Server, rc_file: Path,
                                    home: Path) -> None:
    proc = run_at_terminal(rc_file, home,
                           b"line one\n.\nline three\n\x04")
    assert proc.returncode == 0, proc.stderr
    assert len(server.messages) == 1
    content = parse(server.messages[0]).get_content()
    assert content.replace("\r\n", "\n") == "line one\n.\nline three\n"


@pytest.mark.parametrize("command", [["pymail", "--queue"],
                                     ["pymail-sendmail", "-bp"]])
def test_listing_into_a_closed_pipe_ends_quietly(tmp_path, home, command):
    """`pymail --queue | head -1`: the reader goes away; pymail stops as a
    tool killed by SIGPIPE would, without a traceback or "internal error"."""
    queue = tmp_path / "queue"
    rc = tmp_path / "mail.rc"
    rc.write_text(f"set smtp=smtps://127.0.0.1:{free_port()}\n"
                  f"set pymail-queue={queue}\nset socket-connect-timeout=2\n")
    env = {**os.environ, "MAILRC": str(rc), "HOME": str(home)}
    scripts = Path(sys.executable).parent
    sent = subprocess.run([str(scripts / "pymail"), "-s", "x", "a@example.org"],
                          input=b"queued\n", env=env, capture_output=True,
                          timeout=60)
    assert b"queued as" in sent.stderr
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails with EPIPE
    try:
        listing = subprocess.run([str(scripts / command[0]), *command[1:]],
                                 stdout=write, stderr=subprocess.PIPE,
                                 env=env, timeout=60)
    finally:
        os.close(write)
    assert listing.returncode == 141
    assert listing.stderr == b""
