"""The default CAs: certifi's and the system's, read from a hashed directory
built once per version of the bundles, that nobody but its owner may change.
Against real servers on 127.0.0.1 with certificates from test CAs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from conftest import Result, recipe
from pymail import cadir, settings, trust
from servers import Server, start_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the cache is built by openssl rehash")

TO = "ops@example.org"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own; the directory pymail keeps its entries in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pymail"


@pytest.fixture
def outsider() -> Iterator[tuple[trustme.CA, Server]]:
    """A relay whose CA no bundle holds."""
    ca = trustme.CA()
    srv = start_server(cert=ca.issue_cert("localhost", "127.0.0.1"))
    yield ca, srv
    srv.stop()


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob(cadir.PREFIX + "*"))


def send(run: Callable[..., Result], mailrc: Callable[[str], Path], port: int,
         extra: str = "", *args: str) -> Result:
    """Send with verification on, the default CAs and the extra lines."""
    mailrc(recipe(port).replace("set ssl-verify=ignore\n", extra))
    return run("-s", "trust", *args, TO, input=b"nightly backup done\n")


def plant(ca: trustme.CA, directory: Path) -> None:
    """Add a CA to a hashed directory as `openssl rehash` names it."""
    ca.cert_pem.write_to_path(str(directory / "planted.pem"))
    subprocess.run(["openssl", "rehash", str(directory)], check=True,
                   capture_output=True)


def test_built_once_then_reused(server, mailrc, run, ca_file, cache,
                                monkeypatch):
    result = send(run, mailrc, server.port, f"set ssl-ca-file={ca_file}\n")
    assert result.code == 0, result.err
    [entry] = entries(cache)
    assert (entry.stat().st_mode & 0o777) == 0o700
    assert any(re.fullmatch(cadir.HASH_NAME, p.name) for p in entry.iterdir())

    def no_build(*args: Any) -> str:
        raise AssertionError("built again")
    monkeypatch.setattr(cadir, "_build", no_build)
    result = send(run, mailrc, server.port, f"set ssl-ca-file={ca_file}\n")
    assert result.code == 0, result.err
    assert entries(cache) == [entry]
    assert len(server.messages) == 2


def test_a_new_bundle_gets_a_new_entry(server, mailrc, run, ca, cache,
                                       tmp_path, monkeypatch):
    bundle = tmp_path / "cacert.pem"
    shutil.copyfile(trust.certifi_bundle(), bundle)
    monkeypatch.setattr(trust, "certifi_bundle", lambda: str(bundle))
    assert send(run, mailrc, server.port).code == 76

    # A certifi release that adds the test CA: found by its subject hash.
    bundle.write_bytes(bundle.read_bytes() + ca.cert_pem.bytes())
    result = send(run, mailrc, server.port)
    assert result.code == 0, result.err
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("where", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_ca_installed_in_the_system_is_trusted(server, mailrc, run, ca,
                                                 cache, tmp_path, monkeypatch,
                                                 where):
    system = tmp_path / "system"
    system.mkdir()
    plant(ca, system)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv(where, str(system / "planted.pem"
                                  if where == "SSL_CERT_FILE" else system))
    result = send(run, mailrc, server.port)
    assert result.code == 0, result.err
    assert len(entries(cache)) == 1


def test_untrusted_relay_still_refused(outsider, server, mailrc, run, ca_file,
                                       cache):
    _, srv = outsider
    result = send(run, mailrc, srv.port, f"set ssl-ca-file={ca_file}\n")
    assert result.code == 76
    assert "not trusted" in result.err
    assert srv.messages == []
    assert len(entries(cache)) == 1


@pytest.mark.parametrize(("opened", "mode"), [
    ("entry", 0o770), ("entry", 0o707), ("cache", 0o775), ("cache", 0o777)])
def test_a_cache_others_can_write_to_is_not_used(outsider, server, mailrc, run,
                                                 ca_file, cache, opened, mode):
    assert send(run, mailrc, server.port,
                f"set ssl-ca-file={ca_file}\n").code == 0
    [entry] = entries(cache)
    other_ca, srv = outsider
    # What a CA added to the cache does: it is trusted.
    plant(other_ca, entry)
    assert send(run, mailrc, srv.port).code == 0

    os.chmod(entry if opened == "entry" else cache, mode)
    result = send(run, mailrc, srv.port, "", "-v")
    assert result.code == 76, result.err
    assert "can be changed by other users" in result.err
    assert len(srv.messages) == 1
    # The bundles are then read as files: a trusted relay still works.
    assert send(run, mailrc, server.port,
                f"set ssl-ca-file={ca_file}\n").code == 0


def test_a_cache_in_a_directory_others_can_change_is_not_used(
        outsider, mailrc, run, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared / "cache"))
    _, srv = outsider
    result = send(run, mailrc, srv.port, "", "-v")
    assert result.code == 76
    assert f"{shared} can be changed by other users" in result.err
    assert entries(shared / "cache" / "pymail") == []


def test_a_group_writable_umask_still_gives_a_private_cache(
        server, mailrc, run, ca_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "new" / "cache"))
    old = os.umask(0o002)
    try:
        result = send(run, mailrc, server.port,
                      f"set ssl-ca-file={ca_file}\n", "-v")
    finally:
        os.umask(old)
    assert result.code == 0, result.err
    assert "loading the CA bundles as files" not in result.err
    for made in (tmp_path / "new", tmp_path / "new" / "cache"):
        assert (made.stat().st_mode & 0o777) == 0o700


def test_without_openssl_the_bundles_are_read_as_files(
        outsider, server, mailrc, run, ca_file, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = send(run, mailrc, server.port, f"set ssl-ca-file={ca_file}\n",
                  "-v")
    assert result.code == 0, result.err
    assert "no openssl command" in result.err
    assert entries(cache) == []
    _, srv = outsider
    assert send(run, mailrc, srv.port).code == 76


def test_an_unwritable_cache_is_no_failure(outsider, server, mailrc, run,
                                           ca_file, tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert send(run, mailrc, server.port,
                f"set ssl-ca-file={ca_file}\n").code == 0
    _, srv = outsider
    assert send(run, mailrc, srv.port).code == 76


def test_no_default_cas_no_cache(server, mailrc, run, ca_file, cache):
    result = send(run, mailrc, server.port, f"set ssl-ca-file={ca_file}\n"
                  "set tls-ca-no-defaults\n")
    assert result.code == 0, result.err
    assert not cache.exists()


@pytest.mark.parametrize("damage", ["truncate", "unlink", "manifest"])
def test_damaged_entry_is_built_again(server, mailrc, run, ca_file, cache,
                                      damage):
    result = send(run, mailrc, server.port, f"set ssl-ca-file={ca_file}\n")
    assert result.code == 0, result.err
    [entry] = entries(cache)
    # What a crash before the data reached the disk, or a slip, leaves.
    victim = sorted(entry.glob("*.pem"))[-1]
    entry.chmod(0o700)
    if damage == "truncate":
        victim.chmod(0o600)
        victim.write_bytes(b"")
    elif damage == "unlink":
        victim.unlink()
    else:
        (entry / "manifest").unlink()
    result = send(run, mailrc, server.port, f"set ssl-ca-file={ca_file}\n")
    assert result.code == 0, result.err
    [rebuilt] = entries(cache)
    assert all(p.stat().st_size > 0 for p in rebuilt.glob("*.pem"))
    assert (rebuilt / victim.name).exists()
    assert len(server.messages) == 2


def test_entries_unused_for_a_month_are_removed(cache):
    cache.mkdir(parents=True, mode=0o700)
    old, recent = cache / "cas-old", cache / "cas-recent"
    old.mkdir(mode=0o700)
    recent.mkdir(mode=0o700)
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    entry = cadir.hashed_dir([trust.certifi_bundle()], str(cache))
    assert entry is not None
    assert entries(cache) == sorted([Path(entry), recent])


def test_concurrent_builds_leave_one_whole_entry(cache):
    probe = ("import sys; from pymail import cadir, trust; "
             "print(cadir.hashed_dir([trust.certifi_bundle()], sys.argv[1]))")
    runs = [subprocess.Popen([sys.executable, "-c", probe, str(cache)],
                             stdout=subprocess.PIPE, text=True)
            for _ in range(4)]
    printed = {p.communicate()[0].strip() for p in runs}
    [entry] = entries(cache)
    assert printed == {str(entry)}
    assert [p.name for p in cache.iterdir()] == [entry.name]


def test_where_the_cache_is(home, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert settings.cache_dir() == home / ".cache" / "pymail"
    # Root's is not in whatever $HOME sudo left.
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert settings.cache_dir() == Path("/var/cache/pymail")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    assert settings.cache_dir() == home / "cache" / "pymail"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert settings.cache_dir() == Path("/var/cache/pymail")
