"""The sample mail.rc files in examples/: each loads with pymail's own parser,
names a relay and a sender, keeps the password out of the file, and, pointed
at the local test server, delivers a message. Also the cron example."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result
from pymail import settings
from pymail.rcfile import Interpreter, RcState, is_secret
from servers import PASSWORD, USER, Server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLES = sorted(EXAMPLES.glob("*.mail.rc")) + [EXAMPLES / "mail.rc.sample"]
PROVIDERS = ("qq", "163", "aliyun-directmail", "gmail", "office365",
             "starttls-relay")

# The one active relay line of a sample: `set smtp=...` or `set mta=...`.
RELAY_LINE = re.compile(r"^(\s*set\s+(?:smtp|mta)=)(\S+)\s*$", re.MULTILINE)
# Five time fields (or @reboot and friends), then the command.
CRON_LINE = re.compile(r"^(?:@\w+|(?:\S+\s+){5})(?P<command>.*)$")

Run = Callable[..., Result]


def load(path: Path) -> RcState:
    state = RcState()
    Interpreter(state, terminal=False).load_file(path)
    return state


def settings_of(state: RcState) -> settings.Settings:
    return settings.Settings(state.variables, state.origins, state.aliases)


def ids(paths: list[Path]) -> list[str]:
    return [path.name for path in paths]


def test_every_provider_has_a_sample() -> None:
    names = {path.name for path in SAMPLES}
    for provider in PROVIDERS:
        assert f"{provider}.mail.rc" in names


@pytest.mark.parametrize("path", SAMPLES, ids=ids(SAMPLES))
def test_sample_loads_and_names_a_relay(path: Path) -> None:
    state = load(path)
    config = settings_of(state)
    assert config.text("smtp") or config.text("mta")
    relay = config.relay()
    assert relay.host and 0 < relay.port < 65536
    # Port 465 is implicit TLS; anything else here must say STARTTLS, since
    # every sample logs in or may log in.
    assert relay.implicit_tls or relay.starttls
    assert config.text("from")
    assert config.verify_mode() == "strict"
    assert len(RELAY_LINE.findall(path.read_text())) == 1


@pytest.mark.parametrize("path", SAMPLES, ids=ids(SAMPLES))
def test_sample_keeps_the_password_out(path: Path) -> None:
    state = load(path)
    assert state.secrets == []
    for name, value in state.variables.items():
        assert not is_secret(name, value), name
    _, _, password = settings_of(state).auth()
    assert password is None
    # And no active line names one, whatever the spelling.
    for line in path.read_text().splitlines():
        if not line.lstrip().startswith("#"):
            assert "password=" not in line or "password-command" in line, line


@pytest.mark.parametrize("path", SAMPLES, ids=ids(SAMPLES))
def test_sample_tells_where_the_password_goes(path: Path) -> None:
    text = path.read_text()
    assert "PYMAIL_SMTP_AUTH_PASSWORD" in text
    assert "/etc/pymail.env" in text
    assert "chmod 600" in text


@pytest.mark.parametrize("path", SAMPLES, ids=ids(SAMPLES))
def test_sample_delivers_through_the_test_server(
        path: Path, server: Server, mailrc: Callable[[str], Path], run: Run,
        ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, count = RELAY_LINE.subn(
        lambda m: f"{m.group(1)}smtps://{server.host}:{server.port}",
        path.read_text())
    assert count == 1
    mailrc(text + f"""
unset smtp-use-starttls
set from={USER}
set smtp-auth-user={USER}
set ssl-ca-file={ca_file}
""")
    monkeypatch.setenv("PYMAIL_SMTP_AUTH_PASSWORD", PASSWORD)
    result = run("-s", "x", "ops@example.org", input=b"hi\n")
    assert result.code == 0, result.err
    assert len(server.messages) == 1
    message = server.messages[0]
    assert message.mail_from == USER
    assert message.rcpt_tos == ["ops@example.org"]
    assert server.handler.logins == [(USER, PASSWORD)]


# The cron example ------------------------------------------------------------

CRONTAB = EXAMPLES / "crontab"


def cron_entries() -> list[str]:
    """The commands of the crontab's job lines (not comments or settings)."""
    commands = []
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            continue
        match = CRON_LINE.match(line)
        assert match, line
        commands.append(match["command"])
    return commands


def test_crontab_lines() -> None:
    text = CRONTAB.read_text()
    assert re.search(r"^MAILTO=\S+@\S+$", text, re.MULTILINE)
    assert "PATH=/usr/bin:/bin" in text
    commands = cron_entries()
    assert "/usr/bin/pymail --flush" in commands
    piped = [c for c in commands if "| /usr/bin/pymail" in c]
    assert piped
    for command in commands:
        # cron turns a bare % into a newline.
        assert not re.search(r"(?<!\\)%", command), command
        # PATH=/usr/bin:/bin: pymail must be named by its full path.
        words = shlex.split(command.replace("|", " | "))
        for i, word in enumerate(words):
            if word.endswith("pymail") and (i == 0 or words[i - 1] == "|"):
                assert word == "/usr/bin/pymail", command
    for command in piped:
        after = shlex.split(command.split("|", 1)[1])
        assert "-E" in after and "-s" in after


def test_crontab_pipe_sends_nothing_for_empty_output(
        server: Server, mailrc: Callable[[str], Path], run: Run,
        ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The piped form, as the example writes it: -E sends nothing when the
    job prints nothing, and pymail prints nothing when it delivers, so cron
    has nothing to mail on top."""
    mailrc(f"""\
set from={USER}
set smtp=smtps://{server.host}:{server.port}
set smtp-auth-user={USER}
set ssl-ca-file={ca_file}
""")
    monkeypatch.setenv("PYMAIL_SMTP_AUTH_PASSWORD", PASSWORD)
    quiet = run("-E", "-s", "disk report", "ops@example.org", input=b"")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
    assert server.messages == []
    sent = run("-E", "-s", "disk report", "ops@example.org",
               input=b"/var 91% full\n")
    assert (sent.code, sent.out, sent.err) == (0, "", "")
    assert len(server.messages) == 1
