"""What the benchmark changes on the machine, and how it puts it back.

Installing Postfix replaces /usr/sbin/sendmail, mailq and newaliases, and
may leave daemons enabled; a Snapshot records those paths before and puts
them back afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("postfix", "dovecot-core")
# The files the postfix package installs over whatever was there.
MTA_PATHS = (
    Path("/usr/sbin/sendmail"),
    Path("/usr/bin/mailq"),
    Path("/usr/bin/newaliases"),
    Path("/usr/lib/sendmail"),
)
POLICY_RC = Path("/usr/sbin/policy-rc.d")
# Where the system's own instances, if any, keep their master's pid.
SYSTEM_PIDS = {
    "postfix": Path("/var/spool/postfix/pid/master.pid"),
    "dovecot": Path("/run/dovecot/master.pid"),
}


class BenchError(Exception):
    """A failure that stops the benchmark, with a one-line reason."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark installs postfix and "
                         "dovecot-core and starts private instances of them")


def missing_packages(names: tuple[str, ...] = PACKAGES) -> list[str]:
    """The packages among names that dpkg does not have installed."""
    return [name for name in names if not _installed(name)]


def _installed(name: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name],
        capture_output=True, text=True, check=False)
    return result.stdout.strip() == "install ok installed"


@dataclass
class Saved:
    """One path as it was: a file (copied aside), a symlink, or absent."""

    path: Path
    kind: str  # "file", "symlink" or "absent"
    target: str = ""  # the symlink's target
    copy: Path | None = None  # where the file's content was saved

    def restore(self) -> bool:
        """Put the path back as it was; True if anything changed."""
        if self._unchanged():
            return False
        _remove(self.path)
        if self.kind == "symlink":
            os.symlink(self.target, self.path)
        elif self.kind == "file" and self.copy is not None:
            shutil.copy2(self.copy, self.path)
            stat = os.stat(self.copy)
            os.chown(self.path, stat.st_uid, stat.st_gid)
        return True

    def _unchanged(self) -> bool:
        if self.kind == "file" and self.copy is not None:
            return _same_file(self.copy, self.path)
        now = snapshot_one(self.path, None)
        return (now.kind, now.target) == (self.kind, self.target)


def snapshot_one(path: Path, save_dir: Path | None) -> Saved:
    """Record path; a regular file is copied into save_dir."""
    if path.is_symlink():
        return Saved(path, "symlink", os.readlink(path))
    if not path.exists():
        return Saved(path, "absent")
    copy = None
    if save_dir is not None:
        # /usr/sbin/sendmail and /usr/lib/sendmail: the name is not unique.
        copy = save_dir / str(path).strip("/").replace("/", "_")
        shutil.copy2(path, copy)
        stat = os.stat(path)
        os.chown(copy, stat.st_uid, stat.st_gid)
    return Saved(path, "file", copy=copy)


def _same_file(a: Path, b: Path) -> bool:
    if b.is_symlink() or not b.is_file():
        return False
    return a.read_bytes() == b.read_bytes() and \
        os.stat(a).st_mode == os.stat(b).st_mode


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        raise BenchError(f"cannot restore {path}: it is now a directory")


class Snapshot:
    """The MTA paths and running system daemons as they were at the start."""

    def __init__(self, save_dir: Path) -> None:
        save_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.saved = [snapshot_one(path, save_dir) for path in MTA_PATHS]
        self.running = {name: _system_daemon(name) for name in SYSTEM_PIDS}
        self.installed: list[str] = []

    def restore(self) -> list[str]:
        """Put everything back; returns one line per change made."""
        notes = []
        for saved in self.saved:
            try:
                if saved.restore():
                    notes.append(f"restored {saved.path} ({_describe(saved)})")
            except OSError as exc:
                notes.append(f"FAILED to restore {saved.path}: {exc}")
        notes.extend(self._stop_system_daemons())
        return notes

    def _stop_system_daemons(self) -> list[str]:
        """Stop and disable the system daemons that our install started."""
        notes = []
        for name in self.installed_services():
            pid = _system_daemon(name)
            if pid and not self.running[name]:
                os.kill(pid, 15)
                notes.append(f"stopped the system {name} (pid {pid}) that "
                             "the package install started")
            if _disable_unit(name):
                notes.append(f"disabled the {name} service at boot")
        return notes

    def installed_services(self) -> list[str]:
        return [name for name, package in (("postfix", "postfix"),
                                           ("dovecot", "dovecot-core"))
                if package in self.installed]


def _describe(saved: Saved) -> str:
    if saved.kind == "symlink":
        return f"symlink to {saved.target}"
    if saved.kind == "absent":
        return "removed: it did not exist before"
    return "the file that was there before"


def _system_daemon(name: str) -> int | None:
    """The pid of the system's own daemon, if it runs."""
    try:
        pid = int(SYSTEM_PIDS[name].read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _disable_unit(name: str) -> bool:
    """Disable a systemd unit enabled by the install (works offline too)."""
    if shutil.which("systemctl") is None:
        return False
    enabled = subprocess.run(["systemctl", "is-enabled", "--quiet", name],
                             capture_output=True, check=False)
    if enabled.returncode != 0:
        return False
    result = subprocess.run(["systemctl", "disable", "--quiet", name],
                            capture_output=True, check=False)
    return result.returncode == 0


def install(packages: list[str], snapshot: Snapshot) -> None:
    """apt-get install packages, with postfix's debconf set to "No
    configuration" and no daemon started (a temporary policy-rc.d)."""
    if shutil.which("apt-get") is None:
        raise BenchError(f"{', '.join(packages)} missing and apt-get is not "
                         "available: install them by hand")
    if "postfix" in packages:
        print("NOTE: installing postfix replaces /usr/sbin/sendmail, "
              "/usr/bin/mailq and /usr/bin/newaliases; the benchmark puts "
              "back what was there when it ends.", file=sys.stderr)
    _preseed_postfix()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    own_policy = not POLICY_RC.exists()
    try:
        if own_policy:
            POLICY_RC.write_text("#!/bin/sh\n# pymail benchmark: start no "
                                 "daemon during its install\nexit 101\n")
            POLICY_RC.chmod(0o755)
        snapshot.installed = list(packages)
        _apt(["update", "-qq"], env)
        # --no-remove: if postfix would replace another MTA, stop instead.
        _apt(["install", "-y", "-qq", "--no-install-recommends",
              "--no-remove", *packages], env)
    finally:
        if own_policy:
            POLICY_RC.unlink(missing_ok=True)


def _preseed_postfix() -> None:
    selection = "postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=selection, text=True,
                   check=True)


def _apt(args: list[str], env: dict[str, str]) -> None:
    print(f"apt-get {' '.join(args)}", file=sys.stderr)
    result = subprocess.run(["apt-get", *args], env=env, check=False)
    if result.returncode != 0:
        raise BenchError(f"apt-get {args[0]} failed (exit "
                         f"{result.returncode}); if it would remove another "
                         "mail server, install postfix by hand first")
