"""A private Postfix, with SASL through a private Dovecot, on loopback.

Postfix listens with implicit TLS (wrapper mode) on a high port of
127.0.0.1, offers PIPELINING and CHUNKING (its defaults) and hands every
message to its discard transport. Its configuration, queue and log live in
the work directory, so the system's Postfix and Dovecot are not touched.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path

from mailbench.certs import Certificates
from mailbench.system import BenchError

USER = "bench"
# 200 MB of attachment is about 270 MB base64-encoded; leave room.
MESSAGE_SIZE_LIMIT = 600_000_000
SENT = re.compile(rb"status=sent \(")

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
default_transport = discard:benchmark
local_transport = discard:benchmark
relay_transport = discard:benchmark
virtual_transport = discard:benchmark
message_size_limit = {size}
mailbox_size_limit = 0
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
maillog_file = {log}
maillog_file_prefixes = {root}
biff = no
"""

# Every service in its own process, none chrooted (the queue is private).
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

DOVECOT_CONF = """\
base_dir = {base}
state_dir = {state}
instance_name = pymail-bench
protocols =
ssl = no
log_path = {log}
auth_mechanisms = plain login
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {queue}/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Relay:
    """The private Postfix + Dovecot pair; start(), then stop() always."""

    def __init__(self, work: Path, certificates: Certificates) -> None:
        self.root = work / "relay"
        self.config = self.root / "postfix"
        self.queue = self.root / "queue"
        self.log = self.root / "postfix.log"
        self.dovecot_conf = self.root / "dovecot" / "dovecot.conf"
        self.certificates = certificates
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.started: list[str] = []

    def start(self) -> None:
        """Write both configurations and start Dovecot, then Postfix."""
        self._write_postfix()
        self._write_dovecot()
        _run(["dovecot", "-c", str(self.dovecot_conf)], "dovecot",
             self.root / "start.log")
        self.started.append("dovecot")
        _run(["postfix", "-c", str(self.config), "start"], "postfix",
             self.root / "start.log")
        self.started.append("postfix")
        self._wait_listening()

    def stop(self) -> list[str]:
        """Stop what was started; returns one line per failure."""
        problems = []
        if "postfix" in self.started:
            problems += _stop(["postfix", "-c", str(self.config), "stop"],
                              self.queue / "pid" / "master.pid")
        if "dovecot" in self.started:
            problems += _stop(["dovecot", "-c", str(self.dovecot_conf),
                               "stop"], self.root / "dovecot" / "run"
                              / "master.pid")
        self.started.clear()
        return problems

    def delivered(self) -> int:
        """How many deliveries (to the discard transport) Postfix logged."""
        try:
            return len(SENT.findall(self.log.read_bytes()))
        except FileNotFoundError:
            return 0

    def wait_delivered(self, count: int, timeout: float = 120.0) -> int:
        """Wait until Postfix has logged count deliveries; returns the count
        reached (less than count after the timeout)."""
        deadline = time.monotonic() + timeout
        while (seen := self.delivered()) < count and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    def _write_postfix(self) -> None:
        # The postfix user must reach its queue: every parent is 0755.
        for path in (self.root, self.config, self.queue, self.root / "data"):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.chmod(0o755)
        postfix = pwd.getpwnam("postfix")
        os.chown(self.root / "data", postfix.pw_uid, postfix.pw_gid)
        (self.config / "main.cf").write_text(MAIN_CF.format(
            queue=self.queue, data=self.root / "data",
            size=MESSAGE_SIZE_LIMIT, cert=self.certificates.cert,
            key=self.certificates.key, log=self.log, root=self.root))
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))

    def _write_dovecot(self) -> None:
        directory = self.dovecot_conf.parent
        for name in ("run", "state"):
            (directory / name).mkdir(mode=0o755, parents=True, exist_ok=True)
        users = directory / "users"
        users.write_text(f"{USER}:{{PLAIN}}{self.password}\n")
        dovecot = pwd.getpwnam("dovecot")
        os.chown(users, 0, dovecot.pw_gid)
        users.chmod(0o640)
        # Dovecot's auth socket goes where Postfix looks: its private/.
        private = self.queue / "private"
        private.mkdir(mode=0o700, exist_ok=True)
        postfix = pwd.getpwnam("postfix")
        os.chown(private, postfix.pw_uid, postfix.pw_gid)
        self.dovecot_conf.write_text(DOVECOT_CONF.format(
            base=directory / "run", state=directory / "state",
            log=directory / "dovecot.log", users=users, queue=self.queue))

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"postfix does not listen on 127.0.0.1:{self.port}; "
                         f"see {self.log}")


def _run(command: list[str], what: str, log: Path) -> None:
    """Run a daemon's start command. Its output goes to a file, not a pipe:
    the daemon's children keep the descriptors open after it returns."""
    with open(log, "ab") as output:
        result = subprocess.run(command, stdin=subprocess.DEVNULL,
                                stdout=output, stderr=subprocess.STDOUT,
                                check=False)
    if result.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise BenchError(f"{what} did not start: "
                         f"{lines[-1] if lines else result.returncode}")


def _stop(command: list[str], pid_file: Path, timeout: float = 15.0) -> list[str]:
    """Ask a master process to stop; kill it if it does not go in time."""
    pid = _read_pid(pid_file)
    subprocess.run(command, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    if pid is None:
        return []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return []
        time.sleep(0.1)
    os.kill(pid, 9)
    return [f"{command[0]} (pid {pid}) did not stop in {timeout:g}s: killed"]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
