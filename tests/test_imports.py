"""A cold start imports only what its path needs: no TLS and no email
package to print the version or the help, no click for the sendmail entry,
no python-dotenv without a .env file to read. Each run is a fresh Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import recipe
from servers import PASSWORD

# Runs an entry point the way its script does, then names every module
# loaded. With --isolated, /etc/mail.rc and /etc/pymail.env are not read.
PROBE = """\
import sys
args = sys.argv[1:]
if args[0] == "--isolated":
    from pathlib import Path
    from pymail import settings
    args = args[1:]
    settings.SYSTEM_RC = settings.SYSTEM_ENV = Path(args.pop(0))
if args[0] == "sendmail":
    from pymail.sendmail import main
else:
    from pymail.cli import main
try:
    main(args[1:])
except SystemExit:
    pass
sys.stderr.write("\\nmodules: " + " ".join(sorted(sys.modules)) + "\\n")
"""

TLS_AND_EMAIL = ("ssl", "_ssl", "smtplib", "email", "certifi", "dotenv")


def run_probe(*args: str, stdin: bytes = b"",
              isolated: Path | None = None) -> tuple[set[str], str]:
    """The modules a fresh `pymail ARGS` (or `sendmail ARGS`) imported, with
    the packages they are in, and what it wrote to stderr before."""
    prefix = ["--isolated", str(isolated)] if isolated else []
    result = subprocess.run([sys.executable, "-c", PROBE, *prefix, *args],
                            input=stdin, capture_output=True, check=True)
    err, _, last = result.stderr.decode().rstrip("\n").rpartition("\n")
    assert last.startswith("modules: "), result.stderr.decode()
    names = last.split()[1:]
    return {*names, *(name.partition(".")[0] for name in names)}, err


def loaded(*args: str, stdin: bytes = b"",
           isolated: Path | None = None) -> set[str]:
    """The modules a fresh `pymail ARGS` (or `sendmail ARGS`) imported."""
    return run_probe(*args, stdin=stdin, isolated=isolated)[0]


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_version_and_help_need_no_tls_and_no_email(option):
    modules = loaded("pymail", option)
    assert "click" in modules
    assert modules.isdisjoint(TLS_AND_EMAIL)
    assert modules.isdisjoint({"logging", "pymail.settings"})


def test_a_send_without_env_file_needs_no_dotenv(server, mailrc, ca_file,
                                                 tmp_path):
    mailrc(recipe(server.port).replace("set ssl-verify=ignore",
                                       f"set ssl-ca-file={ca_file}"))
    modules = loaded("pymail", "-s", "disk", "ops@example.org",
                     stdin=b"sda1 at 91%\n", isolated=tmp_path / "none")
    assert len(server.messages) == 1
    assert "dotenv" not in modules
    # certifi's bundle is found without running certifi; idna is for names
    # that are not plain ASCII; the queue is off.
    assert modules.isdisjoint({"certifi", "idna", "json", "pymail.spool"})
    # Nothing is logged without -v, so logging is not imported.
    assert "logging" not in modules


def test_a_warning_is_logged_with_logging_imported_then(server, mailrc,
                                                        tmp_path):
    record = tmp_path / "sent.mbox"
    record.mkdir()  # appending to a directory fails
    mailrc(recipe(server.port, extra=f"set record={record}\n"))
    modules, err = run_probe("pymail", "-s", "disk", "ops@example.org",
                             stdin=b"sda1 at 91%\n", isolated=tmp_path / "none")
    assert len(server.messages) == 1
    assert "logging" in modules
    assert f"pymail: delivered, but could not write record {record}" in err


def test_verbose_imports_logging_and_shows_the_dialogue(server, mailrc,
                                                        tmp_path):
    mailrc(recipe(server.port))
    modules, err = run_probe("pymail", "-v", "-s", "disk", "ops@example.org",
                             stdin=b"sda1 at 91%\n", isolated=tmp_path / "none")
    assert "logging" in modules
    assert "pymail: >>> MAIL FROM:" in err
    assert "pymail: <<< 250" in err


def test_an_env_file_is_read_with_dotenv(server, mailrc, tmp_path,
                                         monkeypatch):
    mailrc(recipe(server.port).replace(
        f"set smtp-auth-password={PASSWORD}\n", ""))
    env_file = tmp_path / "pymail.env"
    env_file.write_text(f"PYMAIL_SMTP_AUTH_PASSWORD={PASSWORD}\n")
    monkeypatch.setenv("PYMAIL_ENV_FILE", str(env_file))
    modules = loaded("pymail", "-s", "disk", "ops@example.org",
                     stdin=b"sda1 at 91%\n", isolated=tmp_path / "none")
    assert len(server.messages) == 1
    assert "dotenv" in modules


def test_the_sendmail_entry_needs_no_click(server, mailrc, tmp_path):
    mailrc(recipe(server.port))
    message = b"To: ops@example.org\nSubject: cron\n\nbackup done\n"
    modules = loaded("sendmail", "-t", stdin=message,
                     isolated=tmp_path / "none")
    assert len(server.messages) == 1
    assert "click" not in modules
    assert "dotenv" not in modules


def test_the_console_scripts_tune_gc_before_importing_anything():
    code = ("import gc, sys; import pymail.scripts; "
            "print(' '.join(m for m in sys.modules if m.startswith('pymail')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["pymail", "pymail.scripts"]
