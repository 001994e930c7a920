"""Fixtures: an isolated home, a test CA, real SMTP servers, and a runner
that calls pymail's entry point in-process with bytes on stdin."""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).parent))

from pymail import settings as settings_module  # noqa: E402
from pymail.cli import main  # noqa: E402
from servers import (  # noqa: E402
    PASSWORD,
    USER,
    RawServer,
    Server,
    start_server,
)


@dataclass
class Result:
    code: int
    out: str
    err: str


def header_block(data: bytes) -> bytes:
    """The header of a message as received, up to the empty line."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, "no empty line after the header"
    return head


def header_names(data: bytes) -> list[str]:
    """Names of the top-level header fields, read from the raw bytes."""
    names = []
    for line in header_block(data).split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        match = re.match(rb"([!-9;-~]+):", line)
        assert match, f"not a header line: {line!r}"
        names.append(match.group(1).decode().lower())
    return names


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def cert(ca: trustme.CA) -> Any:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def rogue_cert() -> Any:
    """A certificate for 127.0.0.1 from a CA nobody trusts."""
    return trustme.CA().issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the hashed CA directory is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, home: Path,
             tmp_path: Path, cache_home: Path) -> None:
    """No test reads the machine's /etc files or the tester's environment."""
    for key in list(os.environ):
        if key.startswith("PYMAIL_") or key in ("MAILRC", "DEAD",
                                                "XDG_CONFIG_HOME"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setattr(settings_module, "SYSTEM_RC", tmp_path / "etc-mail.rc")
    monkeypatch.setattr(settings_module, "SYSTEM_ENV",
                        tmp_path / "etc-pymail.env")


@pytest.fixture
def server(cert: Any) -> Iterator[Server]:
    """Implicit TLS on 127.0.0.1 with AUTH, the provider's port 465."""
    srv = start_server(cert=cert, tls="implicit")
    yield srv
    srv.stop()


@pytest.fixture
def starttls_server(cert: Any) -> Iterator[Server]:
    """Plain port that offers STARTTLS, and AUTH only after it."""
    srv = start_server(cert=cert, tls="starttls")
    yield srv
    srv.stop()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    """Scripted plain TCP servers (see servers.RawServer)."""
    made: list[RawServer] = []

    def make(script: Any) -> RawServer:
        made.append(RawServer(script))
        return made[-1]
    yield make
    for srv in made:
        srv.stop()


@pytest.fixture
def raw_tls(cert: Any) -> Iterator[Callable[..., RawServer]]:
    """Scripted servers speaking implicit TLS with the test certificate."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    made: list[RawServer] = []

    def make(script: Any) -> RawServer:
        made.append(RawServer(script, context=context))
        return made[-1]
    yield make
    for srv in made:
        srv.stop()


def recipe(port: int, *, host: str = "127.0.0.1", scheme: str = "smtps",
           extra: str = "") -> str:
    """The mail.rc lines people append for heirloom mailx, pointed here."""
    return f"""\
set from={USER}
set smtp={scheme}://{host}:{port}
set smtp-auth-user={USER}
set smtp-auth-password={PASSWORD}
set smtp-auth=login
#set smtp-use-starttls
set ssl-verify=ignore
set nss-config-dir=/root/.certs
{extra}"""


@pytest.fixture
def mailrc(home: Path) -> Callable[[str], Path]:
    """Write ~/.mailrc."""
    def write(text: str) -> Path:
        path = home / ".mailrc"
        path.write_text(text)
        return path
    return write


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run pymail in-process: run("-s", "title", "a@b", input=b"body")."""
    def invoke(*args: str, input: bytes = b"") -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(input)))
        code: Any = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return Result(int(code or 0), out, err)
    return invoke
