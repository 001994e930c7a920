"""Settings: where each variable comes from, and what the relay needs."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import pytest

import pymail.settings as settings_module
from pymail.errors import EX_CONFIG, ConfigError
from pymail.settings import (
    DEFAULT_TIMEOUT,
    Settings,
    home_dir,
    parse_url,
    resolve_variables,
    user_env_file,
    user_rc,
)


@dataclass
class Places:
    """The files resolve_variables reads, all under tmp_path."""

    system_rc: Path
    system_env: Path
    home: Path
    cwd: Path

    @property
    def user_rc(self) -> Path:
        return self.home / ".mailrc"

    @property
    def user_env(self) -> Path:
        return self.home / ".config" / "pymail" / "pymail.env"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    # A directory of its own, so that other fixtures' files cannot collide.
    root = tmp_path / "settings-places"
    etc = root / "etc"
    home = root / "home"
    cwd = root / "cwd"
    for directory in (etc, home, cwd):
        directory.mkdir(parents=True)
    monkeypatch.setattr(settings_module, "SYSTEM_RC", etc / "mail.rc")
    monkeypatch.setattr(settings_module, "SYSTEM_ENV", etc / "pymail.env")
    monkeypatch.setenv("HOME", str(home))
    for name in ("MAILRC", "XDG_CONFIG_HOME", "PYMAIL_ENV_FILE", "DEAD"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("PYMAIL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(cwd)
    return Places(etc / "mail.rc", etc / "pymail.env", home, cwd)


def resolve(*assignments: str, read_system: bool = True,
            account: str | None = None) -> Settings:
    return resolve_variables(read_system=read_system, assignments=list(assignments),
                             account=account)


def make(**variables: str) -> Settings:
    """Settings from keyword arguments; underscores become dashes."""
    values = {name.replace("_", "-"): value for name, value in variables.items()}
    return Settings(values, {name: f"test:{name}" for name in values}, {})


# Precedence --------------------------------------------------------------


def test_full_precedence_chain(places: Places, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    letters = "abcdefg"
    write(places.system_rc, "set " + " ".join(f"{x}=sysrc" for x in letters) + "\n")
    write(places.user_rc, "set " + " ".join(f"{x}=userrc" for x in letters[1:]) + "\n")
    write(places.system_env,
          "".join(f"PYMAIL_{x.upper()}=sysenv\n" for x in letters[2:]))
    write(places.user_env,
          "".join(f"PYMAIL_{x.upper()}=userenv\n" for x in letters[3:]))
    named = write(tmp_path / "named.env",
                  "".join(f"PYMAIL_{x.upper()}=named\n" for x in letters[4:]))
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(named))
    monkeypatch.setenv("PYMAIL_F", "environ")
    monkeypatch.setenv("PYMAIL_G", "environ")

    result = resolve("g=cli")

    assert {x: result.get(x) for x in letters} == {
        "a": "sysrc", "b": "userrc", "c": "sysenv", "d": "userenv",
        "e": "named", "f": "environ", "g": "cli",
    }
    assert result.origin("a") == f"{places.system_rc}:1"
    assert result.origin("b") == f"{places.user_rc}:1"
    assert result.origin("c") == f"{places.system_env} PYMAIL_C"
    assert result.origin("d") == f"{places.user_env} PYMAIL_D"
    assert result.origin("e") == f"{named} PYMAIL_E"
    assert result.origin("f") == "environment PYMAIL_F"
    assert result.origin("g") == "-S g"
    assert result.notes == []


def test_environment_password(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    write(places.user_rc, "set smtp-auth-password=fromrc\n")
    monkeypatch.setenv("PYMAIL_SMTP_AUTH_PASSWORD", "s3cret")
    result = resolve()
    assert result.get("smtp-auth-password") == "s3cret"
    assert result.auth()[2] == "s3cret"


def test_environment_upper_case_names(places: Places,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMAIL_ORGANIZATION", "ACME")
    monkeypatch.setenv("PYMAIL_DEAD", "~/failed")
    result = resolve()
    assert result.get("ORGANIZATION") == "ACME"
    assert result.get("DEAD") == "~/failed"


def test_pymail_env_file_variable_is_not_a_setting(
        places: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = write(tmp_path / "x.env", "PYMAIL_FROM=a@b.org\n")
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(named))
    result = resolve()
    assert result.get("env-file") is None
    assert result.get("from") == "a@b.org"


def test_cli_beats_environment(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMAIL_SMTP", "env.example")
    result = resolve("smtp=cli.example")
    assert result.relay().host == "cli.example"
    assert result.relay().where == "-S smtp"


def test_cli_can_unset(places: Places) -> None:
    write(places.user_rc, "set from=a@b.org\n")
    result = resolve("nofrom", "nosave", "dot")
    assert result.get("from") is None
    assert not result.flag("save")
    assert result.flag("dot")


def test_user_rc_unsets_system_value(places: Places) -> None:
    write(places.system_rc, "set smtp=sys.example from=sys@x.org\n")
    write(places.user_rc, "unset smtp\n")
    result = resolve()
    assert result.get("smtp") is None
    assert result.get("from") == "sys@x.org"


def test_save_is_set_by_default(places: Places) -> None:
    assert resolve().flag("save")


def test_mailrc_replaces_home_mailrc(places: Places, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(places.user_rc, "set from=home@x.org only-home\n")
    other = write(tmp_path / "other.rc", "set from=other@x.org\n")
    monkeypatch.setenv("MAILRC", str(other))
    result = resolve()
    assert result.get("from") == "other@x.org"
    assert not result.flag("only-home")


def test_mailrc_tilde_is_expanded(places: Places,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write(places.home / "rc" / "mine", "set from=tilde@x.org\n")
    monkeypatch.setenv("MAILRC", "~/rc/mine")
    assert resolve().get("from") == "tilde@x.org"


def test_missing_user_files_are_silent(places: Places) -> None:
    result = resolve()  # no ~/.mailrc, no pymail.env: nothing to say
    assert result.notes == []
    assert set(result.variables) == {"save"}


def test_mailrc_naming_a_missing_file_is_noted(
        places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shown under -v: a typo in MAILRC would otherwise pass unseen.
    missing = places.home / "missing.rc"
    monkeypatch.setenv("MAILRC", str(missing))
    result = resolve()
    assert result.notes == [f"MAILRC names {missing}, which does not exist"]
    assert set(result.variables) == {"save"}


def test_xdg_config_home(places: Places, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    write(places.user_env, "PYMAIL_FROM=dotconfig@x.org\n")
    xdg = tmp_path / "xdg"
    write(xdg / "pymail" / "pymail.env", "PYMAIL_FROM=xdg@x.org\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert user_env_file() == xdg / "pymail" / "pymail.env"
    assert resolve().get("from") == "xdg@x.org"


def test_dot_config_without_xdg(places: Places) -> None:
    write(places.user_env, "PYMAIL_FROM=dotconfig@x.org\n")
    assert user_env_file() == places.user_env
    assert resolve().get("from") == "dotconfig@x.org"


def test_account_applied_after_user_rc(places: Places) -> None:
    write(places.system_rc, "account work {\nset from=work@x.org\n}\n")
    write(places.user_rc, "set from=me@x.org smtp=mail.x.org\n")
    assert resolve().get("from") == "me@x.org"
    result = resolve(account="work")
    assert result.get("from") == "work@x.org"
    assert result.get("smtp") == "mail.x.org"


def test_unknown_account(places: Places) -> None:
    with pytest.raises(ConfigError):
        resolve(account="nope")


def test_rc_error_propagates(places: Places) -> None:
    write(places.user_rc, "set a\nbogus\n")
    with pytest.raises(ConfigError) as info:
        resolve()
    assert f"{places.user_rc}:2" in info.value.message


# System files ------------------------------------------------------------


def test_read_system_false_skips_system_rc(places: Places) -> None:
    write(places.system_rc, "set from=sys@x.org sys-only\n")
    write(places.user_rc, "set smtp=user.example\n")
    result = resolve(read_system=False)
    assert result.get("from") is None
    assert not result.flag("sys-only")
    assert result.get("smtp") == "user.example"
    assert resolve(read_system=True).get("from") == "sys@x.org"


def test_unreadable_system_rc_is_a_note(places: Places) -> None:
    places.system_rc.mkdir()
    write(places.user_rc, "set from=me@x.org\n")
    result = resolve()
    assert result.get("from") == "me@x.org"
    assert len(result.notes) == 1
    assert str(places.system_rc) in result.notes[0]


def test_unreadable_system_env_is_a_note(places: Places) -> None:
    places.system_env.mkdir()
    write(places.user_env, "PYMAIL_FROM=me@x.org\n")
    result = resolve()
    assert result.get("from") == "me@x.org"
    assert len(result.notes) == 1
    assert str(places.system_env) in result.notes[0]


def test_notes_list_is_filled_in(places: Places) -> None:
    places.system_rc.mkdir()
    notes: list[str] = ["earlier"]
    result = resolve_variables(read_system=True, assignments=[], notes=notes)
    assert result.notes is notes
    assert notes[0] == "earlier"
    assert len(notes) == 2


# HOME --------------------------------------------------------------------


def test_home_unset_uses_password_database(places: Places,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOME")
    pw_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert home_dir() == pw_home
    assert user_rc() == pw_home / ".mailrc"
    assert user_env_file() == pw_home / ".config" / "pymail" / "pymail.env"
    assert make(save="").dead_letter() == pw_home / "dead.letter"


def test_home_set_is_used(places: Places) -> None:
    assert home_dir() == places.home
    assert user_rc() == places.user_rc


# .env files --------------------------------------------------------------


def test_dollar_is_literal(places: Places) -> None:
    write(places.system_env,
          "PYMAIL_SMTP_AUTH_PASSWORD=pa$HOME${HOME}x\n"
          "PYMAIL_SMTP_AUTH_USER='u$ser'\n"
          'PYMAIL_FROM="${HOME}@x.org"\n')
    result = resolve()
    assert result.get("smtp-auth-password") == "pa$HOME${HOME}x"
    assert result.get("smtp-auth-user") == "u$ser"
    assert result.get("from") == "${HOME}@x.org"


def test_current_directory_env_is_never_read(places: Places) -> None:
    write(places.cwd / ".env", "PYMAIL_SMTP=evil\nPYMAIL_FROM=evil@x.org\n")
    write(places.cwd / "pymail.env", "PYMAIL_SMTP=evil\n")
    write(places.user_rc, "set smtp=good.example\n")
    result = resolve()
    assert result.get("smtp") == "good.example"
    assert result.relay().host == "good.example"
    assert result.get("from") is None


def test_named_env_file_missing(places: Places, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "absent.env"
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(missing))
    with pytest.raises(ConfigError) as info:
        resolve()
    assert str(missing) in info.value.message


def test_named_env_file_unreadable(places: Places, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "adir"
    directory.mkdir()
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(directory))
    with pytest.raises(ConfigError) as info:
        resolve()
    assert str(directory) in info.value.message


def test_missing_system_and_user_env_are_silent(places: Places) -> None:
    assert resolve().notes == []


@pytest.mark.parametrize("value", ["0", "no", "false", "off", "OFF", " 0 "])
def test_boolean_false_unsets(places: Places, value: str) -> None:
    write(places.user_rc, "set smtp-use-starttls\n")
    write(places.system_env, f"PYMAIL_SMTP_USE_STARTTLS='{value}'\n")
    assert not resolve().flag("smtp-use-starttls")


@pytest.mark.parametrize("value", ["1", "yes", "true", "on"])
def test_boolean_true_sets_empty(places: Places, value: str) -> None:
    write(places.system_env, f"PYMAIL_SMTP_USE_STARTTLS={value}\n")
    result = resolve()
    assert result.flag("smtp-use-starttls")
    assert result.get("smtp-use-starttls") == ""


def test_boolean_from_environment(places: Places,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write(places.system_env, "PYMAIL_SMTP_USE_STARTTLS=1\n")
    monkeypatch.setenv("PYMAIL_SMTP_USE_STARTTLS", "0")
    assert not resolve().flag("smtp-use-starttls")
    monkeypatch.setenv("PYMAIL_SMTP_USE_STARTTLS", "1")
    assert resolve().flag("smtp-use-starttls")


def test_non_boolean_zero_is_a_value(places: Places) -> None:
    write(places.system_env, "PYMAIL_SOCKET_CONNECT_TIMEOUT=0\n")
    assert resolve().get("socket-connect-timeout") == "0"


def test_env_file_ignores_other_keys(places: Places) -> None:
    write(places.system_env, "SMTP=other.example\nPATH=/nowhere\nPYMAIL_FROM=a@b.c\n")
    result = resolve()
    assert result.get("smtp") is None
    assert result.get("path") is None
    assert result.get("from") == "a@b.c"


def test_env_file_with_invalid_utf8(places: Places) -> None:
    places.system_env.write_bytes(b"PYMAIL_SMTP_AUTH_PASSWORD=p\xe9ss\nPYMAIL_X=y\n")
    result = resolve()
    assert result.get("x") == "y"
    password = result.get("smtp-auth-password")
    assert password is not None
    assert password.encode("utf-8", "surrogateescape") == b"p\xe9ss"


# relay() -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host", "port", "implicit", "starttls"),
    [
        ("mail.example.org", "mail.example.org", 25, False, False),
        ("mail.example.org:2525", "mail.example.org", 2525, False, False),
        ("smtp://mail.example.org", "mail.example.org", 25, False, False),
        ("smtp://mail.example.org:587", "mail.example.org", 587, False, False),
        ("smtps://mail.example.org", "mail.example.org", 465, True, False),
        ("smtps://mail.example.org:4650", "mail.example.org", 4650, True, False),
        ("submission://mail.example.org", "mail.example.org", 587, False, True),
        ("submissions://mail.example.org", "mail.example.org", 465, True, False),
        ("mail.example.org:465", "mail.example.org", 465, True, False),
        ("smtp://mail.example.org:465", "mail.example.org", 465, True, False),
        ("SMTPS://Mail.Example.ORG", "mail.example.org", 465, True, False),
        ("smtps://u:p@mail.example.org", "mail.example.org", 465, True, False),
        ("[2001:db8::1]:2525", "2001:db8::1", 2525, False, False),
    ],
)
def test_relay_forms(value: str, host: str, port: int, implicit: bool,
                     starttls: bool) -> None:
    relay = make(smtp=value).relay()
    assert (relay.host, relay.port, relay.implicit_tls, relay.starttls) == (
        host, port, implicit, starttls)
    assert relay.where == "test:smtp"


def test_relay_address() -> None:
    assert make(smtp="smtps://h.example").relay().address == "h.example:465"
    assert make(smtp="[::1]:25").relay().address == "[::1]:25"


@pytest.mark.parametrize(
    ("value", "starttls"),
    [("mail.example.org", True), ("submission://mail.example.org", True),
     ("smtps://mail.example.org", False), ("mail.example.org:465", False)],
)
def test_smtp_use_starttls(value: str, starttls: bool) -> None:
    relay = make(smtp=value, smtp_use_starttls="").relay()
    assert relay.starttls is starttls
    assert relay.implicit_tls is not starttls


def test_of_mta_and_smtp_the_one_set_last_wins() -> None:
    relay = make(smtp="smtp.example", mta="smtps://mta.example").relay()
    assert (relay.host, relay.where) == ("mta.example", "test:mta")
    relay = make(mta="smtps://mta.example", smtp="smtp.example").relay()
    assert (relay.host, relay.where) == ("smtp.example", "test:smtp")
    # An mta that names a program (s-nail's default) is no relay.
    relay = make(smtp="smtp.example", mta="/usr/sbin/sendmail").relay()
    assert relay.host == "smtp.example"


def test_s_smtp_beats_a_files_mta(places: Places) -> None:
    write(places.user_rc, "set mta=smtps://old.example:465\n")
    relay = resolve("smtp=smtps://new.example:465").relay()
    assert relay.host == "new.example"


def test_smtp_use_starttls_applies_to_mta() -> None:
    relay = make(mta="smtp://mta.example", smtp_use_starttls="").relay()
    assert relay.starttls


def test_mta_program_falls_back_to_smtp() -> None:
    relay = make(mta="/usr/sbin/sendmail", smtp="smtp.example").relay()
    assert relay.host == "smtp.example"


def test_mta_program_alone_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        make(mta="/usr/sbin/sendmail").relay()
    assert info.value.code == EX_CONFIG
    assert info.value.hint


@pytest.mark.parametrize("variables", [{}, {"smtp": ""}, {"mta": ""}])
def test_no_relay(variables: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(variables, {}, {}).relay()
    assert info.value.code == EX_CONFIG == 78
    assert info.value.hint
    assert "smtp" in info.value.hint
    assert "hint:" in info.value.line()


def test_bad_scheme_names_where(places: Places) -> None:
    write(places.user_rc, "set from=a@b.org\nset smtp=imap://mail.example.org\n")
    with pytest.raises(ConfigError) as info:
        resolve().relay()
    assert f"{places.user_rc}:2" in info.value.message
    assert "imap" in info.value.message


@pytest.mark.parametrize("value", ["mail.example.org:abc",
                                   "smtps://u:secret@mail.example.org:99999"])
def test_bad_port_names_where(places: Places, value: str) -> None:
    write(places.system_env, f"PYMAIL_SMTP={value}\n")
    with pytest.raises(ConfigError) as info:
        resolve().relay()
    assert f"{places.system_env} PYMAIL_SMTP" in info.value.message
    assert "secret" not in info.value.message


def test_bad_value_from_cli_names_option(places: Places) -> None:
    with pytest.raises(ConfigError) as info:
        resolve("smtp=ftp://x.example").relay()
    assert "-S smtp" in info.value.message


def test_bad_mta_names_where(places: Places) -> None:
    write(places.system_rc, "set smtp=ok.example\n\nset mta=gopher://x.example\n")
    with pytest.raises(ConfigError) as info:
        resolve().relay()
    assert f"{places.system_rc}:3" in info.value.message


def test_no_host_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        make(smtp="smtps://:465").relay()
    assert "test:smtp" in info.value.message


def test_port_zero_is_an_error() -> None:
    try:
        relay = parse_url("mail.example.org:0", "w")
    except ConfigError:
        return
    raise AssertionError(f"port 0 accepted as {relay.port}")


# auth() ------------------------------------------------------------------


def test_auth_from_variables() -> None:
    result = make(smtp="smtps://h.example", smtp_auth_user="me@x.org",
                  smtp_auth_password="pw", smtp_auth="LOGIN")
    assert result.auth() == ("login", "me@x.org", "pw")


def test_auth_defaults() -> None:
    assert make(smtp="h.example").auth() == (None, None, None)


def test_auth_from_url() -> None:
    result = make(smtp="smtps://user%40x.org:p%2Bw+d@mail.example.org")
    assert result.auth() == (None, "user@x.org", "p+w+d")
    assert result.relay().host == "mail.example.org"


def test_auth_from_mta_url() -> None:
    result = make(smtp="smtps://x:y@h.example", mta="submission://bob:pw@mta.example")
    assert result.auth()[1:] == ("bob", "pw")


def test_auth_url_set_after_the_variables_beats_them() -> None:
    result = make(smtp_auth_user="varuser", smtp_auth_password="varpw",
                  smtp="smtps://urluser:urlpw@h.example")
    assert result.auth()[1:] == ("urluser", "urlpw")


def test_auth_variables_beat_url() -> None:
    result = make(smtp="smtps://urluser:urlpw@h.example",
                  smtp_auth_user="varuser", smtp_auth_password="varpw")
    assert result.auth()[1:] == ("varuser", "varpw")


def test_auth_url_password_goes_only_with_the_url_user() -> None:
    result = make(smtp="smtps://urluser:urlpw@h.example", smtp_auth_user="varuser")
    assert result.auth()[1:] == ("varuser", None)  # no password: exit 78
    result = make(smtp_auth_user="varuser", smtp_auth_password="varpw",
                  smtp="smtps://urluser@h.example")
    assert result.auth()[1:] == ("urluser", "varpw")  # as in s-nail
    # -v names where the password came from: here, the URL.
    result = make(smtp_auth_password="varpw", smtp="smtps://u:pw@h.example")
    assert result.credentials()[2:] == ("pw", "smtp")


def test_s_password_beats_a_files_smtp_auth_password(places: Places) -> None:
    write(places.user_rc, "set smtp=h.example smtp-auth-user=u@x.org "
          "smtp-auth-password=WRONG\n")
    settings = resolve("password=RIGHT", "user=v@x.org")
    assert settings.auth()[1:] == ("v@x.org", "RIGHT")
    assert settings.credentials()[3] == "password"


def test_auth_old_names() -> None:
    result = make(smtp="h.example", user="old", password="oldpw")
    assert result.auth()[1:] == ("old", "oldpw")


def test_auth_password_from_environment(places: Places,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write(places.user_rc, "set smtp=smtps://me%40x.org:urlpw@h.example\n")
    monkeypatch.setenv("PYMAIL_SMTP_AUTH_PASSWORD", "envpw")
    assert resolve().auth()[1:] == ("me@x.org", "envpw")


# verify_mode() -----------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "mode"),
    [
        ({}, "strict"),
        ({"tls-verify": "strict"}, "strict"),
        ({"tls-verify": "ask"}, "strict"),
        ({"tls-verify": "warn"}, "warn"),
        ({"tls-verify": "ignore"}, "ignore"),
        ({"tls-verify": "WARN"}, "warn"),
        ({"ssl-verify": "ignore"}, "ignore"),
        ({"ssl-verify": "ask"}, "strict"),
        ({"tls-verify": "warn", "ssl-verify": "ignore"}, "warn"),
        ({"tls-verify": "strict", "ssl-verify": "ignore"}, "strict"),
    ],
)
def test_verify_mode(variables: dict[str, str], mode: str) -> None:
    assert Settings(variables, {}, {}).verify_mode() == mode


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"tls-verify": "maybe"}, "tls-verify"),
        ({"ssl-verify": "maybe"}, "ssl-verify"),
        ({"tls-verify": "maybe", "ssl-verify": "warn"}, "tls-verify"),
    ],
)
def test_verify_mode_invalid(variables: dict[str, str], named: str) -> None:
    origins = {name: f"file-for-{name}:9" for name in variables}
    with pytest.raises(ConfigError) as info:
        Settings(variables, origins, {}).verify_mode()
    assert f"{named}=maybe" in info.value.message
    assert f"file-for-{named}:9" in info.value.message


# timeout() ---------------------------------------------------------------


def test_timeout_default() -> None:
    assert DEFAULT_TIMEOUT == 30
    assert make().timeout() == 30
    assert make(socket_connect_timeout="").timeout() == 30


@pytest.mark.parametrize(("value", "seconds"), [("5", 5), ("0.5", 0.5), ("120", 120)])
def test_timeout_value(value: str, seconds: float) -> None:
    assert make(socket_connect_timeout=value).timeout() == seconds


@pytest.mark.parametrize("value", ["abc", "0", "-5", "5s"])
def test_timeout_invalid(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(socket_connect_timeout=value).timeout()
    assert "test:socket-connect-timeout" in info.value.message


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_timeout_not_finite(value: str) -> None:
    try:
        seconds = make(socket_connect_timeout=value).timeout()
    except ConfigError:
        return
    raise AssertionError(f"socket-connect-timeout={value} gave {seconds}")


# dead_letter() -----------------------------------------------------------


def test_dead_letter_default(places: Places) -> None:
    assert resolve().dead_letter() == places.home / "dead.letter"


def test_dead_letter_variable(places: Places) -> None:
    write(places.user_rc, "set DEAD=~/mail/failed\n")
    assert resolve().dead_letter() == places.home / "mail" / "failed"


def test_dead_letter_environment(places: Places, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEAD", str(tmp_path / "env.dead"))
    assert resolve().dead_letter() == tmp_path / "env.dead"


def test_dead_letter_variable_beats_environment(
        places: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEAD", str(tmp_path / "env.dead"))
    write(places.user_rc, f"set DEAD={tmp_path / 'rc.dead'}\n")
    assert resolve().dead_letter() == tmp_path / "rc.dead"


def test_dead_letter_nosave(places: Places) -> None:
    write(places.user_rc, "set DEAD=~/x\nset nosave\n")
    assert resolve().dead_letter() is None


def test_dead_letter_nosave_from_cli(places: Places) -> None:
    assert resolve("nosave").dead_letter() is None


def test_dead_letter_save_from_env_file(places: Places) -> None:
    write(places.system_rc, "set nosave\n")
    write(places.system_env, "PYMAIL_SAVE=yes\n")
    assert resolve().dead_letter() == places.home / "dead.letter"


# Small accessors ---------------------------------------------------------


def test_get_text_flag_origin() -> None:
    result = Settings({"a": "", "b": "x"}, {"b": "here:1"}, {})
    assert result.get("a") == ""
    assert result.text("a") is None
    assert result.text("a", "b") is None
    assert result.get("missing", "b") == "x"
    assert result.flag("a")
    assert not result.flag("missing")
    assert result.origin("b") == "here:1"
    assert result.origin("a") == "the configuration"


def test_hostname() -> None:
    assert make(hostname="me.example").hostname() == "me.example"
    assert make().hostname()


def test_an_empty_password_is_none(places: Places,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # An unset secret in docker or CI often comes as an empty variable.
    write(places.user_rc, "set smtp=smtps://u%40x.org:@h.example "
          "smtp-auth-password=filepw\n")
    monkeypatch.setenv("PYMAIL_SMTP_AUTH_PASSWORD", "")
    assert resolve().auth()[1:] == ("u@x.org", "filepw")
    monkeypatch.setenv("PYMAIL_PASSWORD", "")
    assert resolve("smtp-auth-password=").auth()[2] is None
