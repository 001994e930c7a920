"""Safe by default: secrets never leak, TLS is never silently weakened.
Against real servers on 127.0.0.1 with certificates from a test CA."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from conftest import Result, recipe
from servers import PASSWORD, USER, RawServer, free_port, start_server

BODY = b"certificate renewal report\n"
TO = "ops@example.org"


def send(run: Callable[..., Result], *args: str) -> Result:
    return run("-s", "tls", *args, TO, input=BODY)


def secret_forms(password: str = PASSWORD, user: str = USER) -> list[str]:
    """The password as it appears in AUTH PLAIN and AUTH LOGIN."""
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    login = base64.b64encode(password.encode()).decode()
    return [password, plain, login]


def assert_no_secret(text: str, password: str = PASSWORD) -> None:
    for form in secret_forms(password):
        assert form not in text


def verified_rc(port: int, ca_file: Path, host: str = "127.0.0.1",
                extra: str = "") -> str:
    return recipe(port, host=host, extra=extra).replace(
        "set ssl-verify=ignore", f"set ssl-ca-file={ca_file}")


# Secrets never appear in output ---------------------------------------------

@pytest.mark.parametrize("mechanism", ["login", "plain"])
def test_verbose_never_shows_the_password(server, mailrc, run, mechanism):
    mailrc(recipe(server.port).replace("smtp-auth=login",
                                       f"smtp-auth={mechanism}"))
    result = send(run, "-v", "--debug")
    assert result.code == 0, result.err
    assert f"AUTH {mechanism.upper()} ****" in result.err
    assert_no_secret(result.err + result.out)


def test_failed_login_never_shows_the_password(server, mailrc, run, home):
    mailrc(recipe(server.port, extra="set smtp-auth-password=S3cr3t-Wr0ng\n"))
    result = send(run, "-v", "--debug")
    assert result.code == 77
    assert_no_secret(result.err, "S3cr3t-Wr0ng")
    assert b"S3cr3t-Wr0ng" not in (home / "dead.letter").read_bytes()


def test_url_credentials_never_shown(mailrc, run, home):
    port = free_port()
    mailrc(f"set smtp=smtps://bot%40example.com:Url%2FS3cret@127.0.0.1:{port}\n"
           "set from=bot@example.com\n")
    result = send(run, "-v", "--debug")
    assert result.code == 75
    assert "Url%2FS3cret" not in result.err and "Url/S3cret" not in result.err
    assert b"S3cret" not in (home / "dead.letter").read_bytes()


def test_bad_url_error_hides_the_password(mailrc, run):
    mailrc("set smtp=smtps://bot:Url-S3cret@127.0.0.1:99999\n")
    result = send(run, "--debug")
    assert result.code == 78
    assert "bad port" in result.err
    assert "Url-S3cret" not in result.err and "****" in result.err


def test_unquoted_password_with_a_space_is_not_shown(mailrc, run, home):
    mailrc("set smtp=smtps://127.0.0.1:1\n"
           "set smtp-auth-password=Sekr1t =Pa$$word\n")
    result = run("-s", "x", "a@example.org", input=b"hi\n")
    assert result.code == 78
    assert "no variable name" in result.err and "quotes" in result.err
    assert "Pa$$word" not in result.err and "Sekr1t" not in result.err
    assert b"Pa$$word" not in (home / "dead.letter").read_bytes()


def test_nothing_kept_holds_the_password(mailrc, run, home, tmp_path):
    log_file = tmp_path / "log"
    queue = tmp_path / "queue"
    mailrc(recipe(free_port(), extra=f"set pymail-log={log_file}\n"
                  f"set pymail-queue={queue}\n"))
    assert send(run).code == 0
    mailrc(recipe(free_port(), extra=f"set pymail-log={log_file}\n"))
    assert send(run).code == 75
    kept = [log_file, home / "dead.letter", *queue.glob("*.*")]
    assert len(kept) == 4
    for path in kept:
        for form in secret_forms():
            assert form.encode() not in path.read_bytes(), path


# Where the password comes from -------------------------------------------------

def test_password_command(server, mailrc, run, tmp_path):
    vault = tmp_path / "vault"
    vault.write_text(PASSWORD + "\n")
    mailrc(recipe(server.port).replace(
        f"set smtp-auth-password={PASSWORD}",
        f"set pymail-password-command='cat {vault}'"))
    result = send(run, "-v")
    assert result.code == 0, result.err
    assert server.handler.logins == [(USER, PASSWORD)]
    assert_no_secret(result.err)


def test_failing_password_command(server, mailrc, run):
    mailrc(recipe(server.port).replace(
        f"set smtp-auth-password={PASSWORD}",
        "set pymail-password-command='echo vault locked >&2; exit 3'"))
    result = send(run)
    assert result.code == 78
    assert "exited 3: vault locked" in result.err
    assert server.handler.logins == []


def test_mail_rc_password_beats_the_command(server, mailrc, run):
    mailrc(recipe(server.port, extra="set pymail-password-command=false\n"))
    assert send(run).code == 0


def test_password_on_the_command_line_warns(server, mailrc, run):
    mailrc(recipe(server.port).replace(
        f"set smtp-auth-password={PASSWORD}\n", ""))
    os.chmod(Path(os.environ["HOME"]) / ".mailrc", 0o600)
    result = send(run, "-S", f"smtp-auth-password={PASSWORD}")
    assert result.code == 0
    assert "can be seen by other users in `ps`" in result.err
    assert "/etc/pymail.env" in result.err
    assert_no_secret(result.err)


# Permissions ------------------------------------------------------------------

def readable_rc(mailrc: Callable[[str], Path], port: int) -> Path:
    path = mailrc(recipe(port))
    os.chmod(path, 0o644)
    return path


def test_readable_password_file_warns_under_verbose(server, mailrc, run):
    path = readable_rc(mailrc, server.port)
    result = send(run, "-v")
    assert result.code == 0
    assert f"{path} holds a password" in result.err
    assert "mode 0644" in result.err
    assert f"chmod 600 {path}" in result.err
    assert "/etc/pymail.env" in result.err


def test_readable_password_file_is_quiet_for_cron(server, mailrc, run,
                                                 tmp_path):
    log_file = tmp_path / "log"
    path = readable_rc(mailrc, server.port)
    path.write_text(path.read_text() + f"set pymail-log={log_file}\n")
    result = send(run)
    assert result.code == 0
    assert result.err == ""
    assert f"{path} holds a password" in log_file.read_text()


def test_private_password_file_does_not_warn(server, mailrc, run):
    path = mailrc(recipe(server.port))
    os.chmod(path, 0o600)
    result = send(run, "-v")
    assert result.code == 0
    assert "holds a password" not in result.err


def password_in_env_file(mailrc: Any, port: int, tmp_path: Path,
                         monkeypatch: Any, rc_mode: int,
                         env_mode: int) -> tuple[Path, Path]:
    """A mail.rc without the password and a .env file holding it."""
    rc = mailrc(recipe(port).replace(
        f"set smtp-auth-password={PASSWORD}\n", ""))
    os.chmod(rc, rc_mode)
    env_file = tmp_path / "pymail.env"
    env_file.write_text(f"PYMAIL_SMTP_AUTH_PASSWORD={PASSWORD}\n")
    os.chmod(env_file, env_mode)
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(env_file))
    return rc, env_file


def test_readable_env_file_warns(server, mailrc, run, tmp_path, monkeypatch):
    rc, env_file = password_in_env_file(mailrc, server.port, tmp_path,
                                        monkeypatch, 0o644, 0o640)
    result = send(run, "-v")
    assert result.code == 0
    assert f"{env_file} holds a password" in result.err
    assert f"{rc} holds" not in result.err


def test_created_files_are_private_whatever_the_umask(mailrc, run, home,
                                                       tmp_path, server):
    log_file = tmp_path / "log"
    record = tmp_path / "sent.mbox"
    old = os.umask(0)
    try:
        mailrc(recipe(free_port(), extra=f"set pymail-log={log_file}\n"))
        assert send(run).code == 75
        mailrc(recipe(server.port, extra=f"set record={record}\n"))
        assert send(run).code == 0
    finally:
        os.umask(old)
    for path in (home / "dead.letter", log_file, record):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# TLS ---------------------------------------------------------------------------

def test_certificate_for_another_host_is_refused(ca, ca_file, mailrc, run):
    other = ca.issue_cert("mail.other.example")
    srv = start_server(cert=other)
    try:
        mailrc(verified_rc(srv.port, ca_file))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 76
    assert "not trusted" in result.err and "127.0.0.1" in result.err
    assert srv.handler.logins == []


def test_sni_is_sent(cert, ca_file, mailrc, run):
    names: list[str | None] = []
    srv = start_server(cert=cert, sni=names.append)
    try:
        mailrc(verified_rc(srv.port, ca_file, host="localhost"))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 0, result.err
    # The first handshake is the test server's own readiness check.
    assert names[-1] == "localhost"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
@pytest.mark.parametrize("verify", ["strict", "ignore"])
def test_old_tls_is_refused(cert, mailrc, run, verify):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL speak TLS 1.1
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    srv = RawServer(["220 an old relay", "250 hi", "235 ok"], context=context)
    try:
        mailrc(recipe(srv.port).replace("ssl-verify=ignore",
                                        f"ssl-verify={verify}"))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 76
    assert "TLS failed" in result.err
    assert srv.heard == []


def fingerprint_of(leaf: Any) -> str:
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("form", ["openssl", "lower-no-colons"])
def test_pinned_fingerprint_trusts_a_self_signed_relay(mailrc, run, form):
    leaf = trustme.CA().issue_cert("127.0.0.1")  # a CA nobody trusts
    digest = fingerprint_of(leaf)
    pin = digest if form == "lower-no-colons" else "SHA256 Fingerprint=" + \
        ":".join(digest.upper()[i:i + 2] for i in range(0, 64, 2))
    srv = start_server(cert=leaf)
    try:
        mailrc(recipe(srv.port).replace("set ssl-verify=ignore",
                                        f"set 'tls-fingerprint={pin}'"))
        result = send(run, "-v")
    finally:
        srv.stop()
    assert result.code == 0, result.err
    assert "matches tls-fingerprint" in result.err
    assert len(srv.messages) == 1


def test_wrong_fingerprint_is_refused_before_anything_is_sent(cert, mailrc,
                                                              run, home):
    srv = start_server(cert=cert)
    try:
        mailrc(recipe(srv.port).replace("set ssl-verify=ignore",
                                        "set tls-fingerprint=" + "ab" * 32))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 76
    assert "does not match tls-fingerprint" in result.err
    assert fingerprint_of(cert).upper()[:2] in result.err
    assert srv.handler.logins == []
    assert BODY in (home / "dead.letter").read_bytes()


def test_fingerprint_on_starttls(starttls_server, cert, mailrc, run):
    rc = recipe(starttls_server.port, scheme="smtp").replace(
        "#set smtp-use-starttls", "set smtp-use-starttls").replace(
        "set ssl-verify=ignore", f"set tls-fingerprint={fingerprint_of(cert)}")
    mailrc(rc)
    result = send(run)
    assert result.code == 0, result.err


def test_malformed_fingerprint_is_a_configuration_error(server, mailrc, run):
    mailrc(recipe(server.port, extra="set tls-fingerprint=12:34\n"))
    result = send(run)
    assert result.code == 78
    assert "64 hex digits" in result.err


def test_readable_env_file_fix_is_chmod(server, mailrc, run, tmp_path,
                                        monkeypatch):
    _, env_file = password_in_env_file(mailrc, server.port, tmp_path,
                                       monkeypatch, 0o600, 0o644)
    result = send(run, "-v")
    assert f"chmod 600 {env_file}" in result.err
    assert "so that the mail.rc can stay readable" not in result.err
