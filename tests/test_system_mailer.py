"""pymail as the system's mailer, the way the README says to do it, in a
private directory: Debian's update-alternatives registers it as `mailx`
(with `mail` as a slave link), a plain symlink makes it /usr/sbin/sendmail,
and each link, run as a program with the environment cron gives a job,
delivers to the test server. Then the undo.

update-alternatives is always given --altdir, --admindir and --log under
tmp_path, so the machine's /etc/alternatives, /var/lib/dpkg and
/var/log/alternatives.log are never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import recipe
from servers import USER, Server

BIN = Path(sys.executable).parent
PYMAIL = BIN / "pymail"
PYMAIL_SENDMAIL = BIN / "pymail-sendmail"
UPDATE_ALTERNATIVES = shutil.which("update-alternatives")

pytestmark = [
    pytest.mark.skipif(UPDATE_ALTERNATIVES is None,
                       reason="update-alternatives is not installed"),
    pytest.mark.skipif(not PYMAIL.exists() or not PYMAIL_SENDMAIL.exists(),
                       reason="pymail is not installed next to this python"),
    pytest.mark.skipif(Path("/etc/pymail.env").exists(),
                       reason="/etc/pymail.env would override the test's "
                       "settings in the child processes"),
]


@dataclass
class Root:
    """A private root: bin/ and sbin/ for the links, and the alternatives
    system's own directories."""

    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def sbin(self) -> Path:
        return self.path / "sbin"

    @property
    def altdir(self) -> Path:
        return self.path / "etc-alternatives"

    @property
    def admindir(self) -> Path:
        return self.path / "var-lib-dpkg-alternatives"

    def alternatives(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert UPDATE_ALTERNATIVES is not None
        return subprocess.run(
            [UPDATE_ALTERNATIVES, "--altdir", str(self.altdir),
             "--admindir", str(self.admindir),
             "--log", str(self.path / "alternatives.log"), *args],
            capture_output=True, text=True, timeout=60, check=True)

    def install_mailx(self, path: Path, priority: int) -> None:
        """As the README says, with this root's bin/ for /usr/bin."""
        self.alternatives("--install", str(self.bin / "mailx"), "mailx",
                          str(path), str(priority),
                          "--slave", str(self.bin / "mail"), "mail", str(path))


@pytest.fixture
def root(tmp_path: Path) -> Root:
    root = Root(tmp_path / "root")
    for directory in (root.bin, root.sbin, root.altdir, root.admindir):
        directory.mkdir(parents=True)
    return root


@pytest.fixture
def cron_env(tmp_path: Path, home: Path, server: Server,
             ca_file: Path) -> dict[str, str]:
    """The environment cron gives a job, with MAILRC naming the recipe for
    the test server (verification on, against the test CA)."""
    rc = tmp_path / "mail.rc"
    rc.write_text(recipe(server.port, extra=f"set ssl-verify=strict\n"
                         f"set ssl-ca-file={ca_file}\n"))
    rc.chmod(0o600)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C",
            "SHELL": "/bin/sh", "LOGNAME": "root", "MAILRC": str(rc)}


def call(program: Path, *args: str, env: dict[str, str],
         input: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(program), *args], input=input, env=env,
                          capture_output=True, timeout=60, check=False)


def test_mailx_alternative_delivers_and_is_undone(
        root: Root, server: Server, cron_env: dict[str, str]) -> None:
    root.install_mailx(PYMAIL, 100)
    for name in ("mailx", "mail"):
        link = root.bin / name
        assert link.is_symlink()
        assert os.readlink(link) == str(root.altdir / name)
        assert link.resolve() == PYMAIL.resolve()
    shown = root.alternatives("--query", "mailx").stdout
    assert f"Value: {PYMAIL}" in shown

    for number, name in enumerate(("mail", "mailx"), start=1):
        done = call(root.bin / name, "-s", f"disk full ({name})",
                    "ops@example.org", env=cron_env,
                    input=b"/var is 97% full\n")
        assert done.returncode == 0, done.stderr
        assert (done.stdout, done.stderr) == (b"", b"")
        assert len(server.messages) == number
        received = server.messages[-1]
        assert received.mail_from == USER
        assert received.rcpt_tos == ["ops@example.org"]
        assert f"Subject: disk full ({name})".encode() in received.data

    # The undo: the links and the group's records are gone, pymail stays.
    root.alternatives("--remove", "mailx", str(PYMAIL))
    for name in ("mailx", "mail"):
        assert not os.path.lexists(root.bin / name)
        assert not os.path.lexists(root.altdir / name)
    assert not (root.admindir / "mailx").exists()
    assert PYMAIL.exists()


def test_mailx_alternative_over_an_existing_mailx(
        root: Root, server: Server, cron_env: dict[str, str]) -> None:
    """With another mailx registered (bsd-mailx at 50 on Debian), priority
    100 takes over in automatic mode, and removing pymail gives the links
    back to the other one."""
    other = root.path / "bsd-mailx"
    other.write_text("#!/bin/sh\necho bsd-mailx \"$@\"\n")
    other.chmod(0o755)
    root.install_mailx(other, 50)
    assert (root.bin / "mail").resolve() == other.resolve()

    root.install_mailx(PYMAIL, 100)
    for name in ("mailx", "mail"):
        assert (root.bin / name).resolve() == PYMAIL.resolve()
    done = call(root.bin / "mail", "-s", "x", "ops@example.org",
                env=cron_env, input=b"hi\n")
    assert done.returncode == 0, done.stderr
    assert len(server.messages) == 1

    root.alternatives("--remove", "mailx", str(PYMAIL))
    for name in ("mailx", "mail"):
        assert (root.bin / name).resolve() == other.resolve()
    done = call(root.bin / "mail", "-s", "x", "ops@example.org",
                env=cron_env, input=b"hi\n")
    assert done.stdout == b"bsd-mailx -s x ops@example.org\n"
    assert len(server.messages) == 1

    root.alternatives("--remove", "mailx", str(other))
    assert not os.path.lexists(root.bin / "mailx")
    assert not os.path.lexists(root.bin / "mail")


MESSAGE = b"""\
From: root (Cron Daemon)
To: ops@example.org
Subject: Cron <root@web-01> /usr/local/bin/backup

backup: 3 files skipped
"""


@pytest.mark.parametrize("target", [PYMAIL_SENDMAIL, PYMAIL],
                         ids=["pymail-sendmail", "pymail-named-sendmail"])
def test_sendmail_symlink_delivers_and_is_undone(
        root: Root, server: Server, cron_env: dict[str, str],
        target: Path) -> None:
    """/usr/sbin/sendmail as a plain symlink: to pymail-sendmail, or to
    pymail itself, which acts as sendmail when called by that name."""
    link = root.sbin / "sendmail"
    link.symlink_to(target)

    done = call(link, "-i", "ops@example.org", env=cron_env, input=MESSAGE)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (b"", b"")
    assert len(server.messages) == 1
    received = server.messages[0]
    assert received.mail_from == USER
    assert received.rcpt_tos == ["ops@example.org"]
    assert b"Subject: Cron <root@web-01> /usr/local/bin/backup" in received.data
    assert b"backup: 3 files skipped" in received.data

    # Debian cron's exact call.
    done = call(link, "-FCronDaemon", "-i", "-B8BITMIME", "-oem",
                "ops@example.org", env=cron_env, input=MESSAGE)
    assert done.returncode == 0, done.stderr
    assert len(server.messages) == 2

    # mailq, through the same program under that name.
    mailq = root.bin / "mailq"
    mailq.symlink_to(target)
    listed = call(mailq, env=cron_env, input=b"")
    assert listed.returncode == 0, listed.stderr
    assert b"queue is off" in listed.stdout

    # The undo is removing the links.
    link.unlink()
    mailq.unlink()
    assert not os.path.lexists(link)
    assert target.exists()
