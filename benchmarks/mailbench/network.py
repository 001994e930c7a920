"""The delaying proxy as a child process, and a check of the round trip
that clients actually see through it."""

from __future__ import annotations

import select
import socket
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mailbench.certs import HOST
from mailbench.system import BenchError

PROXY = Path(__file__).with_name("proxy.py")


class Proxy:
    """proxy.py in front of the relay with half the round trip each way."""

    def __init__(self, target_port: int, rtt_ms: float, log: Path) -> None:
        self.target_port = target_port
        self.rtt_ms = rtt_ms
        self.log = log
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(PROXY),
                 "--target", f"127.0.0.1:{self.target_port}",
                 "--delay-ms", str(self.rtt_ms / 2)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=errors)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            raise BenchError(f"the delaying proxy did not start; see {self.log}")
        self.port = int(line.split()[-1])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class LinkTimes:
    handshake: float  # ms: TCP connect and TLS handshake
    greeting: float  # ms: from the end of the handshake to the 220 line


def link_times(port: int, ca_file: Path, tries: int = 7) -> LinkTimes:
    """Medians of the TLS handshake (TLS 1.3: one round trip more through
    the proxy than without it) and of the wait for the relay's greeting."""
    context = ssl.create_default_context(cafile=str(ca_file))
    handshakes, greetings = [], []
    for _ in range(tries):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), 10) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as tls:
            secured = time.perf_counter()
            tls.recv(512)
            greeted = time.perf_counter()
        handshakes.append((secured - start) * 1000)
        greetings.append((greeted - secured) * 1000)
    return LinkTimes(statistics.median(handshakes),
                     statistics.median(greetings))
