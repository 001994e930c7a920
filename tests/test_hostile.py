"""Hostile input, from a tester's attack on pymail: each case once crashed
(exit 70), lost the message, injected a header, printed a password or
hung. Each now ends in one clear line, a sysexits code, and nothing lost."""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import recipe
from servers import PASSWORD, StreamServer, free_port

BODY = b"the body that must not be lost 4711\n"
TO = "ops@example.org"


def kept(home: Path) -> bytes:
    path = home / "dead.letter"
    return path.read_bytes() if path.exists() else b""




# Nothing lost -------------------------------------------------------------

@pytest.mark.parametrize("args", [[""], ["-c", ""], [","], ["", "-b", " "]])
def test_empty_recipient_is_not_a_silent_success(server, mailrc, run, home,
                                                 args):
    mailrc(recipe(server.port))
    result = run("-s", "alert", *args, input=BODY)
    assert result.code == 64
    assert "no recipients" in result.err
    assert server.messages == [] and server.handler.logins == []
    assert BODY in kept(home)


def test_unreadable_attachment_keeps_the_body(server, mailrc, run, home):
    mailrc(recipe(server.port))
    # A regular file by stat, but reading it fails (EIO).
    result = run("-s", "x", "-a", "/proc/self/mem", TO, input=BODY)
    assert result.code == 66
    assert "/proc/self/mem" in result.err
    assert server.messages == []
    assert BODY in kept(home)


def test_closed_stdin(server, mailrc, run, monkeypatch):
    import sys

    mailrc(recipe(server.port))
    monkeypatch.setattr(sys, "stdin", None)
    from pymail.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["-s", "closed", TO])
    assert exit_info.value.code == 0
    assert len(server.messages) == 1


# No header injection ----------------------------------------------------------

def encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


@pytest.mark.parametrize("field", ["In-Reply-To", "References"])
def test_encoded_line_break_in_a_structured_header(server, mailrc, run,
                                                   field):
    mailrc(recipe(server.port))
    value = "<a@b.c>" + encoded("\r\nBcc: evil@x.org\r\nX-Injected: 1")
    result = run("-C", f"{field}: {value}", "-s", "x", TO, input=BODY)
    if result.code == 0:
        data = server.messages[0].data
        assert b"\r\nBcc:" not in data and b"\r\nX-Injected" not in data
        assert server.messages[0].rcpt_tos == [TO]
    else:
        assert result.code == 65


def test_double_encoded_injection_through_t(server, mailrc, run):
    mailrc(recipe(server.port))
    inner = encoded("\r\nBcc: evil@x.org")
    value = encoded("<a@b.c>" + inner)
    result = run("-t", input=f"To: {TO}\nIn-Reply-To: {value}\n\nhi\n"
                 .encode())
    for message in server.messages:
        assert b"\r\nBcc:" not in message.data
        assert message.rcpt_tos == [TO]
    assert result.code in (0, 65)


def test_content_headers_cannot_be_added(server, mailrc, run):
    mailrc(recipe(server.port))
    result = run("-C", "Content-Disposition: ??:=?utf-8?q?a=0Ab?=;", "-s", "x",
                 TO, input=BODY)
    assert result.code == 64
    assert server.messages == []


# No crash (exit 70) -------------------------------------------------------------

@pytest.mark.parametrize("header", [
    "Reply-To: :;[", "Message-ID: <ä@x>", "Resent-From: " + "x" * 90 + '"'])
def test_headers_the_email_package_chokes_on(server, mailrc, run, home,
                                             header):
    mailrc(recipe(server.port))
    result = run("-t", input=f"To: {TO}\n{header}\n\n".encode() + BODY)
    assert result.code == 65, result.err
    assert BODY in kept(home)


def test_non_ascii_password(server, mailrc, run, home):
    mailrc(recipe(server.port, extra="set smtp-auth-password=pässwörd\n"))
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 78
    assert "ASCII" in result.err and "pässwörd" not in result.err
    assert BODY in kept(home)


@pytest.mark.parametrize("hostname", ["héllo", "a b", "x\u2028y"])
def test_bad_hostname(server, mailrc, run, hostname):
    mailrc(recipe(server.port) + f"set 'hostname={hostname}'\n")
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 78
    assert "hostname" in result.err


def test_challenge_that_is_not_base64(raw_tls, mailrc, run):
    srv = raw_tls(["220 hi", "250-hi\r\n250 AUTH LOGIN PLAIN", "334 a", "221 bye"])
    mailrc(recipe(srv.port))
    result = run("-S", "smtp-auth=login", "-s", "x", TO, input=BODY)
    assert result.code == 76
    assert "not base64" in result.err


def test_endless_challenges(raw_tls, mailrc, run):
    srv = raw_tls(["220 hi", "250-hi\r\n250 AUTH LOGIN PLAIN"] + ["334 VXNlcg=="]
              * 20)
    mailrc(recipe(srv.port))
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 76
    assert "keeps asking" in result.err


@pytest.mark.parametrize("line, word", [
    ("set smtp=smtps://u:pw@[::1", "SMTP URL"),
    ("set smtp=smtps://a..b:465", "host name"),
    ("set socket-connect-timeout=1e10", "socket-connect-timeout"),
    ("set pymail-deadline=1e9d", "duration"),
])
def test_bad_values_are_configuration_errors(server, mailrc, run, line, word):
    mailrc(recipe(server.port) + line + "\n")
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 78, result.err
    assert word in result.err


def test_nul_in_mail_rc(mailrc, run, home):
    path = home / ".mailrc"
    path.write_bytes(b"set DEAD=/tmp/x\0y\n")
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 78
    assert f"{path}:1" in result.err and "NUL" in result.err


# No password shown -----------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "set smtp=ssl://bot:S3cr3tPW@127.0.0.1:465",
    "set smtp=smtps://bot:Sec#S3cr3tPW@127.0.0.1:465",
    "set mta=bot:S3cr3tPW@127.0.0.1",
    "smtp-auth-password=S3cr3tPW",
])
def test_password_not_shown(mailrc, run, tmp_path, line):
    log_file = tmp_path / "log"
    mailrc(f"set pymail-log={log_file}\n{line}\n")
    result = run("-v", "-s", "x", TO, input=BODY)
    assert result.code == 78
    assert "S3cr3tPW" not in result.err
    if log_file.exists():
        assert "S3cr3tPW" not in log_file.read_text()


def test_unparseable_env_line_names_file_and_line(server, mailrc, run,
                                                  tmp_path, monkeypatch):
    env_file = tmp_path / "bad.env"
    env_file.write_text("PYMAIL_FROM=a@b.c\nthis is not a pair\n")
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(env_file))
    mailrc(recipe(server.port))
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 78
    assert f"{env_file}:2" in result.err


# No hang -----------------------------------------------------------------------

def fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def test_fifo_attachment(server, mailrc, run, tmp_path, home):
    mailrc(recipe(server.port))
    result = run("-s", "x", "-a", str(fifo(tmp_path, "pipe")), TO, input=BODY)
    assert result.code == 66
    assert "not a regular file" in result.err
    assert BODY in kept(home)


def test_device_as_quote_file(server, mailrc, run):
    mailrc(recipe(server.port))
    result = run("-s", "x", "-q", "/dev/zero", TO, input=BODY)
    assert result.code == 66


def test_fifo_dead_letter(mailrc, run, tmp_path, capsys):
    mailrc(recipe(free_port()) + f"set DEAD={fifo(tmp_path, 'dead')}\n")
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 73
    assert BODY.decode() in result.err  # printed, not lost


def test_fifo_mail_rc_is_skipped(server, mailrc, run, tmp_path, monkeypatch):
    monkeypatch.setenv("MAILRC", str(fifo(tmp_path, "rc")))
    result = run("-v", "-S", f"smtp=smtps://127.0.0.1:{server.port}",
                 "-S", "ssl-verify=ignore", "-S", "from=bot@example.com",
                 "-s", "x", TO, input=BODY)
    assert "not a regular file" in result.err
    assert result.code == 0, result.err


def test_reply_without_end(mailrc, run, cert):
    def flood(tls: Any, stopping: threading.Event) -> None:
        while not stopping.is_set():
            tls.sendall(b"220-" + b"x" * 500 + b"\r\n")

    srv = StreamServer(cert, flood)
    mailrc(recipe(srv.port))
    started = time.monotonic()
    result = run("-s", "x", TO, input=BODY)
    srv.stop()
    assert result.code == 76
    assert "longer than" in result.err
    assert time.monotonic() - started < 10


def test_reply_line_too_long(raw_tls, mailrc, run):
    srv = raw_tls(["220 " + "x" * 9000])
    mailrc(recipe(srv.port))
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 76


# The raw bytes of Latin-1 ² and ¹ (smtplib reads replies as Latin-1), and
# more digits than int() takes.
@pytest.mark.parametrize("size", ["\udcb2", "1\udcb9", "9" * 5000])
def test_size_that_is_not_ascii_digits_is_no_limit(raw_tls, mailrc, run, home,
                                                   size):
    srv = raw_tls(["220 hi", "250-hi\r\n250 SIZE " + size,
                   "550 5.7.1 not from you", "221 bye"])
    mailrc(f"set smtp=smtps://127.0.0.1:{srv.port}\nset ssl-verify=ignore\n")
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 69, result.err
    assert "550 5.7.1 not from you" in result.err
    assert BODY in kept(home)


def test_a_bug_while_sending_keeps_the_message(server, mailrc, run, home,
                                               monkeypatch):
    # pymail's own code failing (not the relay): simulated by a broken
    # deliver, since no such bug is known.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")
    monkeypatch.setattr("pymail.send.deliver", broken)
    mailrc(recipe(server.port))
    result = run("-s", "x", TO, input=BODY)
    assert result.code == 70
    assert "internal error while sending (RuntimeError)" in result.err
    assert BODY in kept(home)


@pytest.mark.parametrize("header", [b"From: =?utf-8?b? a@[\n",
                                    b"Cc: undisclosed-recipients:; =?x?q?y?=\n"])
def test_t_headers_the_email_package_chokes_on(server, mailrc, run, home,
                                               header):
    mailrc(recipe(server.port))
    result = run("-t", input=b"To: " + TO.encode() + b"\n" + header + b"\n" +
                 BODY)
    assert result.code == 65, result.err
    assert "invalid address" in result.err
    assert BODY in kept(home)


# No line over 998 octets ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-r", "N" * 3000 + " <a@example.org>"],
    ["-C", "Message-ID: <" + "m" * 3000 + "@x>"],
    ["l" * 1500 + "@example.org"],
])
def test_overlong_lines_are_refused(server, mailrc, run, home, args):
    mailrc(recipe(server.port))
    result = run("-s", "x", *args, TO, input=BODY)
    assert result.code == 65, result.err
    assert server.messages == []
    assert BODY in kept(home)


# `--` ends the options ---------------------------------------------------------------

def test_double_dash_before_the_address(server, mailrc, run):
    mailrc(recipe(server.port))
    result = run("-s", "subject", "--", TO, input=BODY)
    assert result.code == 0, result.err
    assert server.messages[0].rcpt_tos == [TO]


def test_double_dash_after_the_address_still_takes_sendmail_options(
        server, mailrc, run):
    mailrc(recipe(server.port))
    result = run("-s", "x", TO, "--", "-f", "bounce@example.org", input=BODY)
    assert result.code == 0, result.err
    assert server.messages[0].mail_from == "bounce@example.org"


def test_password_is_hidden_even_in_the_recipe_error(mailrc, run):
    mailrc(recipe(free_port()).replace(PASSWORD, "p@ss:w0rd"))
    result = run("-v", "--debug", "-s", "x", TO, input=BODY)
    assert "p@ss:w0rd" not in result.err


# stderr that cannot be written, and dead.letter neither ----------------------

@pytest.mark.parametrize("stderr", ["closed", "/dev/full", "/dev/null"])
@pytest.mark.parametrize("program", ["pymail", "pymail-sendmail"])
def test_unwritable_stderr_and_dead_letter_still_exit_73(tmp_path, stderr,
                                                         program):
    """cron may start pymail with stderr closed or on a full disk: the exit
    status still says the message could not be kept, and nothing lands in
    stdout (nor, with fd 2 closed, in a file opened later)."""
    import os
    import subprocess
    import sys as system
    from pathlib import Path as P

    from servers import free_port
    rc = tmp_path / "mail.rc"
    rc.write_text(f"set smtp=smtp://127.0.0.1:{free_port()}\n"
                  "set from=cron@example.com\n")
    args = ["-s", "t", "a@example.org"] if program == "pymail" else \
        ["a@example.org"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MAILRC": str(rc),
           "DEAD": str(tmp_path / "missing" / "dead.letter")}
    if stderr == "closed":
        proc = subprocess.run([P(system.executable).parent / program, *args],
                              input=b"hello\n", capture_output=False,
                              stdout=subprocess.PIPE, env=env, timeout=60,
                              preexec_fn=lambda: os.close(2))
    else:
        with open(stderr, "wb") as sink:
            proc = subprocess.run(
                [P(system.executable).parent / program, *args],
                input=b"hello\n", stdout=subprocess.PIPE, stderr=sink,
                env=env, timeout=60)
    assert proc.returncode == 73
    assert proc.stdout == b""
