"""The benchmark puts back what installing Postfix replaces: a file (its
bytes and mode), a symlink (its target), or nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from mailbench.system import snapshot_one  # noqa: E402 (needs the path above)


def replace_with_mta_file(path: Path) -> None:
    """What dpkg does to the path when postfix is installed."""
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(b"\x7fELF postfix's sendmail")
    path.chmod(0o755)


def test_a_file_comes_back_with_its_bytes_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "sendmail"
    path.write_bytes(b"#!/bin/sh\necho mine\n")
    path.chmod(0o750)
    saved = snapshot_one(path, _save_dir(tmp_path))

    replace_with_mta_file(path)

    assert saved.restore() is True
    assert path.read_bytes() == b"#!/bin/sh\necho mine\n"
    assert path.stat().st_mode & 0o777 == 0o750
    assert saved.restore() is False  # nothing left to do


def test_a_symlink_comes_back_with_its_target(tmp_path: Path) -> None:
    path = tmp_path / "mailq"
    path.symlink_to("/opt/pymail/bin/pymail-sendmail")
    saved = snapshot_one(path, _save_dir(tmp_path))

    replace_with_mta_file(path)

    assert saved.restore() is True
    assert path.is_symlink()
    assert str(path.readlink()) == "/opt/pymail/bin/pymail-sendmail"


@pytest.mark.parametrize("installed", ["file", "symlink"])
def test_an_absent_path_is_absent_again(tmp_path: Path, installed: str) -> None:
    path = tmp_path / "newaliases"
    saved = snapshot_one(path, _save_dir(tmp_path))

    if installed == "file":
        replace_with_mta_file(path)
    else:
        path.symlink_to("../sbin/sendmail")

    assert saved.restore() is True
    assert not path.exists() and not path.is_symlink()


def test_an_unchanged_path_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "sendmail"
    replace_with_mta_file(path)
    before = path.stat().st_mtime_ns
    saved = snapshot_one(path, _save_dir(tmp_path))

    assert saved.restore() is False
    assert path.stat().st_mtime_ns == before


def _save_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "saved"
    directory.mkdir(exist_ok=True)
    return directory
