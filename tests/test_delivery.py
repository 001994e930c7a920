"""Relaying against real servers on 127.0.0.1: TLS, STARTTLS, AUTH and the
failures a relay produces, each with its exit status and what was kept."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Result, recipe
from servers import PASSWORD, USER, Recorder, free_port, start_server

BODY = b"disk /var is 97% full\n"


def send(run: Callable[..., Result], *args: str) -> Result:
    return run("-s", "alert", *args, "ops@example.org", input=BODY)


def dead_letter(home: Path) -> bytes:
    path = home / "dead.letter"
    return path.read_bytes() if path.exists() else b""


def assert_secret_hidden(text: str) -> None:
    encoded = [base64.b64encode(s.encode()).decode() for s in (
        PASSWORD, f"\0{USER}\0{PASSWORD}")]
    for secret in [PASSWORD, *encoded]:
        assert secret not in text




# The recipe, unchanged ---------------------------------------------------

def test_recipe_unchanged_delivers(server, mailrc, run):
    mailrc(recipe(server.port))
    result = send(run)
    assert result.code == 0, result.err
    assert result.err == ""
    [message] = server.messages
    assert message.mail_from == USER
    assert message.rcpt_tos == ["ops@example.org"]
    assert BODY.replace(b"\n", b"\r\n") in message.data
    assert server.handler.logins == [(USER, PASSWORD)]


def test_verbose_transcript_masks_credentials(server, mailrc, run):
    mailrc(recipe(server.port))
    result = send(run, "-v")
    assert result.code == 0
    assert "AUTH LOGIN ****" in result.err
    assert ">>> ****" in result.err
    assert "235" in result.err
    assert "nss-config-dir has no effect" in result.err
    assert "ssl-verify=ignore" in result.err
    assert_secret_hidden(result.err)


def test_certificate_verified_against_ca_file(server, mailrc, run, ca_file):
    text = recipe(server.port).replace("set ssl-verify=ignore",
                                       f"set ssl-ca-file={ca_file}")
    mailrc(text)
    result = send(run)
    assert result.code == 0, result.err
    assert len(server.messages) == 1


def test_tls_ca_file_name_of_snail(server, mailrc, run, ca_file):
    text = recipe(server.port).replace("set ssl-verify=ignore",
                                       f"set tls-ca-file={ca_file}")
    mailrc(text)
    assert send(run).code == 0


def test_untrusted_certificate_fails_and_keeps_message(rogue_cert, mailrc,
                                                      run, home, ca_file):
    srv = start_server(cert=rogue_cert, tls="implicit")
    try:
        mailrc(recipe(srv.port).replace("set ssl-verify=ignore",
                                        f"set ssl-ca-file={ca_file}"))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 76
    assert "not trusted" in result.err and "ssl-ca-file" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert srv.messages == []
    assert BODY in dead_letter(home)


def test_verification_on_by_default(rogue_cert, mailrc, run):
    srv = start_server(cert=rogue_cert, tls="implicit")
    try:
        mailrc(recipe(srv.port).replace("set ssl-verify=ignore\n", ""))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 76
    assert srv.messages == []


def test_ssl_verify_ask_means_strict(server, mailrc, run):
    mailrc(recipe(server.port).replace("ssl-verify=ignore", "ssl-verify=ask"))
    assert send(run).code == 76
    assert server.messages == []


def test_ssl_verify_warn_warns_and_delivers(rogue_cert, mailrc, run):
    srv = start_server(cert=rogue_cert, tls="implicit")
    try:
        mailrc(recipe(srv.port).replace("ssl-verify=ignore", "ssl-verify=warn"))
        result = send(run, "-v")
    finally:
        srv.stop()
    assert result.code == 0
    assert "not trusted" in result.err and "ssl-verify=warn" in result.err
    assert len(srv.messages) == 1


def test_host_name_is_checked(server, mailrc, run, ca_file):
    # The certificate names localhost and 127.0.0.1, not 127.0.0.2.
    text = recipe(server.port, host="127.0.0.2").replace(
        "set ssl-verify=ignore", f"set ssl-ca-file={ca_file}")
    mailrc(text)
    result = send(run)
    assert result.code in (75, 76)
    assert server.messages == []


# STARTTLS -----------------------------------------------------------------

def starttls_rc(port: int, ca_file: Path) -> str:
    return recipe(port, scheme="smtp").replace(
        "#set smtp-use-starttls", "set smtp-use-starttls").replace(
        "set ssl-verify=ignore", f"set ssl-ca-file={ca_file}")


def test_starttls_then_auth(starttls_server, mailrc, run, ca_file):
    mailrc(starttls_rc(starttls_server.port, ca_file))
    result = send(run, "-v")
    assert result.code == 0, result.err
    transcript = result.err
    # AUTH is offered only after STARTTLS; EHLO is sent again after it.
    assert transcript.index(">>> STARTTLS") < transcript.index("AUTH LOGIN")
    assert transcript.lower().count(">>> ehlo") == 2
    assert len(starttls_server.messages) == 1
    assert_secret_hidden(transcript)


def test_submission_url_means_starttls(starttls_server, mailrc, run, ca_file):
    mailrc(starttls_rc(starttls_server.port, ca_file).replace(
        "smtp://", "submission://").replace("set smtp-use-starttls", ""))
    assert send(run).code == 0
    assert len(starttls_server.messages) == 1


def test_starttls_not_offered_is_no_downgrade(cert, mailrc, run, ca_file):
    srv = start_server(cert=cert, tls="none", auth=False)
    try:
        mailrc(starttls_rc(srv.port, ca_file))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 76
    assert "does not offer STARTTLS" in result.err
    assert srv.messages == []


def test_password_never_sent_unencrypted(cert, mailrc, run, raw):
    srv = raw(["220 plain relay", "250 ok"])
    mailrc(recipe(srv.port, scheme="smtp"))
    result = send(run)
    assert result.code == 78
    assert "unencrypted" in result.err and "smtp-use-starttls" in result.err
    assert srv.heard == []


def test_smtp_without_credentials_and_without_tls(cert, mailrc, run):
    srv = start_server(cert=cert, tls="none", auth=False)
    try:
        mailrc(f"set smtp=127.0.0.1:{srv.port}\nset from=bot@example.com\n")
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 0, result.err
    assert len(srv.messages) == 1


# AUTH ---------------------------------------------------------------------

def test_auth_plain(server, mailrc, run):
    mailrc(recipe(server.port).replace("smtp-auth=login", "smtp-auth=plain"))
    assert send(run).code == 0
    assert server.handler.mechanisms == ["PLAIN"]


def test_auth_unset_picks_plain(server, mailrc, run):
    mailrc(recipe(server.port).replace("set smtp-auth=login\n", ""))
    assert send(run).code == 0
    assert server.handler.mechanisms == ["PLAIN"]


def test_login_refused_then_plain(cert, mailrc, run):
    # smtp-auth=login, but the relay offers only PLAIN: 504, then PLAIN.
    srv = start_server(cert=cert, tls="implicit", exclude=["LOGIN"])
    try:
        mailrc(recipe(srv.port))
        result = send(run, "-v")
    finally:
        srv.stop()
    assert result.code == 0, result.err
    assert "504" in result.err
    assert srv.handler.mechanisms == ["PLAIN"]
    assert len(srv.messages) == 1


def test_wrong_password_is_auth_failure(server, mailrc, run, home):
    mailrc(recipe(server.port))
    result = send(run, "-S", "smtp-auth-password=Wr0ngSecret")
    assert result.code == 77
    assert "535" in result.err and "app password" in result.err
    assert "Wr0ngSecret" not in result.err
    # The chosen mechanism, then the other one: never more than two tries.
    assert server.handler.mechanisms == ["LOGIN", "PLAIN"]
    assert server.messages == []
    assert BODY in dead_letter(home)


def test_missing_password_is_config_error(server, mailrc, run):
    mailrc(recipe(server.port).replace(
        f"set smtp-auth-password={PASSWORD}\n", ""))
    result = send(run)
    assert result.code == 78
    assert "PYMAIL_SMTP_AUTH_PASSWORD" in result.err
    assert server.handler.mechanisms == []


def test_server_without_auth_but_user_set(cert, mailrc, run):
    srv = start_server(cert=cert, tls="implicit", auth=False)
    try:
        mailrc(recipe(srv.port))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == 77
    assert "offers no AUTH" in result.err


# Failures of the connection ----------------------------------------------

def test_connection_refused_is_temporary(mailrc, run, home):
    mailrc(recipe(free_port()))
    result = send(run)
    assert result.code == 75
    assert "refused" in result.err
    assert "dead.letter" in result.err
    assert BODY in dead_letter(home)


def test_server_that_never_answers_times_out(mailrc, run, raw):
    srv = raw("silent")
    mailrc(recipe(srv.port, scheme="smtp").replace(
        "#set smtp-use-starttls", "set smtp-use-starttls"))
    result = send(run, "-S", "socket-connect-timeout=1")
    assert result.code == 75
    assert "no answer" in result.err and "1s" in result.err


def test_port_25_timeout_hints_at_blocked_port(mailrc, run, raw, monkeypatch):
    srv = raw("silent")
    import socket as socket_module

    real = socket_module.create_connection

    def to_test_server(address: Any, *args: Any, **kwargs: Any) -> Any:
        return real((srv.host, srv.port), *args, **kwargs)

    # Port 25 itself cannot be bound here; the socket goes to the test port.
    monkeypatch.setattr(socket_module, "create_connection", to_test_server)
    mailrc("set smtp=smtp://127.0.0.1:25\nset from=a@example.com\n")
    result = send(run, "-S", "socket-connect-timeout=1")
    assert result.code == 75
    assert "port 25 is probably blocked" in result.err


def test_unknown_host(mailrc, run, monkeypatch, home):
    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # Resolving a real name would leave loopback; make the resolver fail.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    mailrc(recipe(25, host="smtp.nowhere.example"))
    result = send(run)
    assert result.code == 68
    assert "smtp.nowhere.example" in result.err
    assert BODY in dead_letter(home)


def test_greeting_421_is_temporary(mailrc, run, raw_tls):
    srv = raw_tls(["421 4.3.2 too busy, try later"])
    mailrc(recipe(srv.port))
    result = send(run)
    assert result.code == 75
    assert "421 4.3.2 too busy" in result.err


def test_dropped_connection_is_temporary(mailrc, run, raw_tls):
    srv = raw_tls(["220 hello", None])
    mailrc(recipe(srv.port))
    result = send(run)
    assert result.code == 75
    assert "closed the connection" in result.err


def test_plain_smtp_on_tls_port(mailrc, run, raw):
    srv = raw(["220 plain smtp here", "250 ok"])
    mailrc(recipe(srv.port))
    result = send(run, "-S", "socket-connect-timeout=2")
    assert result.code == 76
    assert "smtp-use-starttls" in result.err


# Replies ------------------------------------------------------------------

@pytest.mark.parametrize("stage, reply, code", [
    ("mail", "451 4.3.0 try again later", 75),
    ("mail", "553 5.7.1 Mail from must equal authorized user", 69),
    ("rcpt", "450 4.2.1 mailbox busy", 75),
    ("rcpt", "550 5.1.1 no such user", 69),
    ("data", "554 5.7.1 message refused as spam", 69),
    ("data", "452 4.3.1 insufficient storage", 75),
])
def test_refusals(cert, mailrc, run, home, stage, reply, code):
    handler = Recorder()
    if stage == "mail":
        handler.mail_reply = reply
    elif stage == "rcpt":
        handler.rcpt_replies["ops@example.org"] = reply
    else:
        handler.data_reply = reply
    srv = start_server(cert=cert, tls="implicit", handler=handler)
    try:
        mailrc(recipe(srv.port))
        result = send(run)
    finally:
        srv.stop()
    assert result.code == code
    assert reply in result.err
    assert len(result.err.strip().splitlines()) == 1
    if "must equal" in reply:
        assert "set `from`" in result.err
    assert BODY in dead_letter(home)


def test_reply_in_gbk_is_readable(mailrc, run, raw_tls):
    refusal = "535 登录失败".encode("gbk").decode("utf-8", "surrogateescape")
    srv = raw_tls(["220 qq", "250-hi\r\n250 AUTH LOGIN PLAIN", refusal, refusal,
               "221 bye"])
    mailrc(recipe(srv.port))
    result = send(run)
    assert result.code == 77
    assert "登录失败" in result.err


def test_timeout_after_greeting_has_no_port_hint(mailrc, run, raw_tls):
    # Greets and answers EHLO, then goes silent in the middle of AUTH.
    srv = raw_tls(["220 hi", "250-hi\r\n250 AUTH LOGIN PLAIN", "334 VXNlcm5hbWU6"])
    mailrc(recipe(srv.port))
    result = send(run, "-S", "socket-connect-timeout=1")
    assert result.code == 75
    assert "no answer" in result.err
    assert "hint" not in result.err


def test_verbose_names_files_read_and_where_the_password_is(
        server, mailrc, run, tmp_path, monkeypatch):
    rc = mailrc(recipe(server.port).replace(
        f"set smtp-auth-password={PASSWORD}\n", ""))
    env_file = tmp_path / "secret.env"
    env_file.write_text(f"PYMAIL_SMTP_AUTH_PASSWORD={PASSWORD}\n")
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(env_file))
    result = send(run, "-v")
    assert result.code == 0, result.err
    assert f"read {rc}" in result.err
    assert f"read {env_file}" in result.err
    assert f"password comes from {env_file}" in result.err
    assert_secret_hidden(result.err)


def test_ssl_verify_ignore_is_said_at_a_terminal(server, mailrc, run,
                                                 monkeypatch):
    import sys

    mailrc(recipe(server.port))
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True,
                        raising=False)
    result = send(run)
    assert result.code == 0
    assert "ssl-verify=ignore" in result.err
