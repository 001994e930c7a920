"""The mail clients under test, each with its own configuration for the
private relay: pymail (installed from this repository, not editable),
s-nail and msmtp. Certificate verification stays on for all three."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mailbench.certs import HOST
from mailbench.system import BenchError

REPO = Path(__file__).resolve().parents[2]
SENDER = "bench@example.com"
RECIPIENT = "sink@example.com"
SUBJECT = "pymail benchmark"
# The files besides src/ that the package is built from.
PACKAGING = ("pyproject.toml", "README.md")
BODY = "A small message from the pymail benchmark.\nNothing to see here.\n"


@dataclass(frozen=True)
class Login:
    port: int
    user: str
    password: str
    ca_file: Path


@dataclass
class Client:
    """How to run one client against one relay address."""

    name: str
    argv: list[str]
    env: dict[str, str]
    stdin: Path
    attach_flag: str | None = "-a"
    extra: dict[str, Path] = field(default_factory=dict)

    def with_attachment(self, path: Path) -> list[str]:
        if self.attach_flag is None:
            raise BenchError(f"{self.name} cannot attach files")
        return [*self.argv[:-1], self.attach_flag, str(path), self.argv[-1]]


def base_env(home: Path) -> dict[str, str]:
    """The same plain environment for every client; nothing from ours."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "LANG": "C.UTF-8"}


def _private(path: Path, text: str) -> Path:
    """Write a file that holds a password, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    return path


def pymail_rc(login: Login, home: Path, queue: Path | None = None) -> str:
    # No smtp-auth: pymail picks the mechanism the relay offers.
    lines = [f"set DEAD={home}/dead.letter",
             f"set from={SENDER}",
             f"set smtp=smtps://{HOST}:{login.port}",
             f"set smtp-auth-user={login.user}",
             f"set smtp-auth-password={login.password}",
             f"set ssl-ca-file={login.ca_file}"]
    if queue is not None:
        lines.append(f"set pymail-queue={queue}")
    return "\n".join(lines) + "\n"


def pymail(binary: Path, login: Login, directory: Path, home: Path,
           queue: Path | None = None) -> Client:
    """pymail with its own mail.rc ($MAILRC); -n skips /etc/mail.rc."""
    rc = _private(directory / ("pymail-queue.rc" if queue else "pymail.rc"),
                  pymail_rc(login, home, queue))
    env = base_env(home) | {"MAILRC": str(rc)}
    return Client("pymail", [str(binary), "-n", "-s", SUBJECT, RECIPIENT],
                  env, _body(directory))


def snail(login: Login, directory: Path, home: Path) -> Client:
    """s-nail in its v15 syntax, with smtp-auth=login as its users must
    set it (LOGIN, as the usual mailx recipe has it); -n skips
    /etc/mail.rc, $MAILRC is read."""
    rc = _private(directory / "s-nail.rc", "\n".join([
        "set v15-compat",
        f"set DEAD={home}/dead.letter",
        f"set from={SENDER}",
        f"set mta=smtps://{login.user}@{HOST}:{login.port}",
        "set smtp-auth=login",
        f"set password={login.password}",
        f"set tls-ca-file={login.ca_file}",
        "set tls-verify=strict",
        "set sendwait",
        "",
    ]))
    env = base_env(home) | {"MAILRC": str(rc)}
    return Client("s-nail", ["s-nail", "-n", "-s", SUBJECT, RECIPIENT], env,
                  _body(directory))


def msmtp(login: Login, directory: Path, home: Path) -> Client:
    """msmtp with its own file (-C): implicit TLS, AUTH on. It sends a
    finished message, so its stdin carries the same body with headers."""
    config = _private(directory / "msmtprc", "\n".join([
        "account bench",
        f"host {HOST}",
        f"port {login.port}",
        "tls on",
        "tls_starttls off",
        f"tls_trust_file {login.ca_file}",
        "auth on",
        f"user {login.user}",
        f"password {login.password}",
        f"from {SENDER}",
        "account default : bench",
        "",
    ]))
    message = directory / "message.eml"
    message.write_text(f"From: {SENDER}\nTo: {RECIPIENT}\n"
                       f"Subject: {SUBJECT}\n\n{BODY}")
    return Client("msmtp", ["msmtp", "-C", str(config), RECIPIENT],
                  base_env(home), message, attach_flag=None)


# The least any Python sender with pymail's fixed dependencies does for the
# same message: start the interpreter, import click, ssl and smtplib, verify
# the relay against the same CA file, AUTH (smtplib picks PLAIN), send.
BARE_SENDER = """\
import sys

import click  # noqa: F401 (imported, as every click program does)
import smtplib
import ssl

host, port, user, secret, ca_file, sender, recipient = sys.argv[1:8]
with open(secret) as stream:
    password = stream.read().strip()
context = ssl.create_default_context(cafile=ca_file)
message = sys.stdin.buffer.read()
with smtplib.SMTP_SSL(host, int(port), context=context) as smtp:
    smtp.login(user, password)
    smtp.sendmail(sender, [recipient], message)
"""


def bare_sender(python: Path, login: Login, directory: Path,
                home: Path) -> Client:
    """The floor as a client: BARE_SENDER run by pymail's interpreter,
    with msmtp's finished message on stdin."""
    script = directory / "bare_sender.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(BARE_SENDER)
    secret = _private(directory / "bare_sender.secret", login.password + "\n")
    message = directory / "bare_message.eml"
    message.write_text(f"From: {SENDER}\r\nTo: {RECIPIENT}\r\n"
                       f"Subject: {SUBJECT}\r\n\r\n"
                       + BODY.replace("\n", "\r\n"))
    return Client("bare Python sender",
                  [str(python), str(script), HOST, str(login.port), login.user,
                   str(secret), str(login.ca_file), SENDER, RECIPIENT],
                  base_env(home), message, attach_flag=None)


def _body(directory: Path) -> Path:
    path = directory / "body.txt"
    path.write_text(BODY)
    return path


def installed(name: str) -> bool:
    return shutil.which(name, path="/usr/local/bin:/usr/bin:/bin") is not None


# -- pymail itself -----------------------------------------------------

def install_pymail(cache: Path) -> Path:
    """Install this repository's pymail, not editable, into a venv under
    cache; reinstalled when the source changed. Returns the pymail path."""
    venv = cache / "venv"
    stamp = venv / "source.sha256"
    digest = source_digest()
    binary = venv / "bin" / "pymail"
    if binary.exists() and stamp.exists() and stamp.read_text() == digest:
        return binary
    print(f"installing pymail from {REPO} into {venv}", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    _quiet([sys.executable, "-m", "venv", str(venv)], "python3 -m venv")
    with tempfile.TemporaryDirectory() as copy:
        # From a copy: pip builds in the tree it is given (build/, and
        # stale modules there would be installed too).
        source = _copy_source(Path(copy))
        _quiet([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir",
                str(source)], "pip install")
    stamp.write_text(digest)
    return binary


def _copy_source(directory: Path) -> Path:
    """What the package is built from, copied into directory."""
    source = directory / "pymail"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info"))
    for name in PACKAGING:
        shutil.copy2(REPO / name, source / name)
    return source


def source_digest() -> str:
    """A hash of what goes into the installed package."""
    digest = hashlib.sha256()
    files = [*(REPO / name for name in PACKAGING),
             *sorted((REPO / "src").rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def interpreter_of(script: Path) -> Path:
    """The Python that a console script runs with (its #! line)."""
    with open(script, "rb") as stream:
        first = stream.readline().decode(errors="replace").strip()
    if not first.startswith("#!"):
        raise BenchError(f"{script} has no #! line: is it pymail's script?")
    return Path(first[2:].split()[0])


def _quiet(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise BenchError(f"{what} failed:\n{tail}")
