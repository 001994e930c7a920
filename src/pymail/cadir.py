"""A hashed CA directory, built once from the CA bundles pymail trusts.

Loading certifi's bundle and the system's parses some 300 certificates on
every run, most of a send's CPU time. OpenSSL reads a directory in its
capath layout (one `<subject hash>.N` file per certificate) lazily instead:
only the issuer a handshake looks up. `openssl rehash` names the files, once
per version of the bundles, in ${XDG_CACHE_HOME:-~/.cache}/pymail.

Whoever can write in that directory can add a CA that pymail then trusts: a
directory is used only when it, and every directory above it, can be
changed by nobody but its owner (and root).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from contextlib import suppress

from pymail import logs
from pymail.files import sync_directory, write_all

log = logs.Logger(__name__)

# Part of each entry's name: changing the layout of an entry changes it.
LAYOUT = "2"
PREFIX = "cas-"
# Written last in an entry: each file's name and size. An entry that does
# not match it (cut short by a crash, changed by hand) is built again.
MANIFEST = "manifest"
BUILDING = ".new-"
# Patterns, compiled (and cached by re) only when an entry is built.
PEM = (rb"(?s)-----BEGIN (TRUSTED |)CERTIFICATE-----\r?\n"
       rb".*?-----END \1CERTIFICATE-----")
HASH_NAME = r"[0-9a-f]{8}\.[0-9]+"
# An entry in use is touched once a day; one unused for a month goes when
# another is built.
TOUCH_AFTER = 86400.0
UNUSED_AFTER = 30 * 86400.0


class Unusable(Exception):
    """The cache cannot be used; the bundles are loaded as files."""


def hashed_dir(bundles: list[str], cache: str) -> str | None:
    """A capath holding the certificates of bundles, under cache; None when
    there is none that can be trusted and none can be built."""
    try:
        return _entry(bundles, cache)
    except (OSError, Unusable) as exc:
        log.info("loading the CA bundles as files: %s", exc)
        return None


def _entry(bundles: list[str], cache: str) -> str:
    make_private_dirs(cache)
    base = os.path.realpath(cache)
    entry = os.path.join(base, PREFIX + entry_key(bundles))
    try:
        info = os.lstat(entry)
    except FileNotFoundError:
        check_private(base)
        return _build(bundles, base, entry)
    check_private(entry)
    if not intact(entry):
        import shutil

        log.info("the CA directory %s is damaged: building it again", entry)
        shutil.rmtree(entry, ignore_errors=True)
        return _build(bundles, base, entry)
    if time.time() - info.st_mtime > TOUCH_AFTER:
        with suppress(OSError):  # a read-only cache serves as well
            os.utime(entry)
    return entry


def intact(entry: str) -> bool:
    """Whether every file the entry's manifest names is there, at its
    size (a stat each: no certificate is read)."""
    try:
        with open(os.path.join(entry, MANIFEST), encoding="ascii") as stream:
            listed = [line.split() for line in stream]
        return bool(listed) and all(
            os.stat(os.path.join(entry, name)).st_size == int(size)
            for name, size in listed)
    except (OSError, ValueError):
        return False


def make_private_dirs(path: str) -> None:
    """mkdir -p, each directory made 0700 whatever the umask: with 002,
    a ~/.cache made 0775 would make the cache unusable."""
    parent = os.path.dirname(path)
    if parent != path and not os.path.isdir(parent):
        make_private_dirs(parent)
    with suppress(FileExistsError):
        os.mkdir(path, 0o700)


def entry_key(bundles: list[str]) -> str:
    """Names the bundles' current versions: a new certifi, or an updated
    system bundle, gets a new entry."""
    stamps = [LAYOUT]
    for path in bundles:
        info = os.stat(path)
        stamps.append(f"{path} {info.st_size} {info.st_mtime_ns} "
                      f"{info.st_ino}")
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:32]


def check_private(path: str) -> None:
    """Unusable unless path is a directory of the user's that no one else
    can write to, in directories that no one else can rename it from."""
    uid = os.geteuid()
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise Unusable(f"{path} is not a directory of this user's")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Unusable(f"{path} can be changed by other users")
    parent = os.path.dirname(path)
    while parent != path:
        path, parent = parent, os.path.dirname(parent)
        info = os.lstat(path)
        others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        # A sticky directory (/tmp) lets no one rename what is not theirs.
        if info.st_uid not in (uid, 0) or (
                others_write and not info.st_mode & stat.S_ISVTX):
            raise Unusable(f"{path} can be changed by other users")


def _build(bundles: list[str], base: str, entry: str) -> str:
    """Write each certificate to its own file in a new directory, have
    `openssl rehash` link the hashed names, and rename it into place: a
    concurrent run sees a whole entry or none."""
    import shutil
    import subprocess
    import tempfile

    openssl = shutil.which("openssl")
    if openssl is None:
        raise Unusable("no openssl command to build a CA directory with")
    blocks = certificates(bundles)
    work = tempfile.mkdtemp(prefix=BUILDING, dir=base)
    try:
        for number, block in enumerate(blocks):
            _write_synced(os.path.join(work, f"{number:04d}.pem"),
                          block + b"\n")
        result = subprocess.run([openssl, "rehash", work], capture_output=True,
                                stdin=subprocess.DEVNULL, timeout=60,
                                check=False)
        linked = sum(1 for name in os.listdir(work) if re.fullmatch(HASH_NAME, name))
        if result.returncode != 0 or linked != len(blocks):
            reason = result.stderr.decode("utf-8", "replace").strip()
            raise Unusable(f"openssl rehash linked {linked} of {len(blocks)} "
                           f"certificates: {reason or 'no message'}")
        names = sorted(os.listdir(work))
        _write_synced(os.path.join(work, MANIFEST), "".join(
            f"{name} {os.stat(os.path.join(work, name)).st_size}\n"
            for name in names).encode("ascii"))
        sync_directory(work)
        try:
            os.rename(work, entry)
        except OSError:
            # Another run built it first: use theirs, once checked.
            shutil.rmtree(work, ignore_errors=True)
            check_private(entry)
            if not intact(entry):
                raise Unusable(f"{entry} is damaged") from None
            return entry
        sync_directory(base)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.debug("built the CA directory %s", entry)
    _remove_unused(base, keep=entry)
    return entry


def _write_synced(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def certificates(bundles: list[str]) -> list[bytes]:
    """Each PEM certificate of the bundles, once."""
    blocks: list[bytes] = []
    seen: set[bytes] = set()
    for path in bundles:
        with open(path, "rb") as stream:
            text = stream.read()
        for match in re.finditer(PEM, text):
            block = match.group()
            key = b"".join(block.split())
            if key not in seen:
                seen.add(key)
                blocks.append(block)
    if not blocks:
        raise Unusable(f"no certificates in {', '.join(bundles)}")
    return blocks


def _remove_unused(base: str, keep: str) -> None:
    import shutil

    now = time.time()
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if path == keep or not name.startswith((PREFIX, BUILDING)):
            continue
        try:
            unused = now - os.lstat(path).st_mtime > UNUSED_AFTER
        except OSError:
            continue
        if unused:
            shutil.rmtree(path, ignore_errors=True)
