"""What is measured: cold sends, the interpreter floor, peak memory with a
large attachment, and a batch. Each checks in the relay's log that every
message it sent was delivered, so a client that fails fast cannot look
fast."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mailbench import measure
from mailbench.certs import HOST
from mailbench.clients import Client
from mailbench.measure import Sample, Summary
from mailbench.mta import Relay
from mailbench.system import BenchError

FLOOR_COMMANDS = {
    "python -c pass": "pass",
    "python -c 'import click, ssl, smtplib'": "import click, ssl, smtplib",
}


@dataclass(frozen=True)
class Batch:
    """A batch of messages: how long it took in all, and how fast."""

    messages: int
    wall: float
    cpu: float
    processes: int

    @property
    def rate(self) -> float:
        return self.messages / self.wall


class Runner:
    """Runs clients against the relay; output goes to one log per client."""

    def __init__(self, relay: Relay, logs: Path) -> None:
        self.relay = relay
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, client: Client, argv: list[str] | None = None) -> Sample:
        return measure.run(argv or client.argv, client.env, client.stdin,
                           self.logs / f"{client.name}.log")

    def expect(self, before: int, sent: int, what: str) -> None:
        """Wait until the relay logged sent more deliveries, or fail."""
        seen = self.relay.wait_delivered(before + sent) - before
        if seen != sent:
            raise BenchError(f"{what}: the relay logged {seen} deliveries, "
                             f"expected {sent}; see {self.relay.log}")


def cold_sends(runner: Runner, clients: list[Client],
               runs: int) -> dict[str, Summary]:
    """Each client sends the small message runs times, round robin, after
    one unmeasured send each (to warm the page cache)."""
    before = runner.relay.delivered()
    for client in clients:
        runner.run(client)
    samples: dict[str, list[Sample]] = {c.name: [] for c in clients}
    for _ in range(runs):
        for client in clients:
            samples[client.name].append(runner.run(client))
    runner.expect(before, (runs + 1) * len(clients), "cold sends")
    return {name: Summary.of(found) for name, found in samples.items()}


def floor(runner: Runner, python: Path, runs: int,
          client: Client) -> dict[str, Summary]:
    """CPU of the interpreter alone and with pymail's fixed imports, and
    of /bin/true (what the measurement itself reports for nothing)."""
    commands = {label: [str(python), "-c", code]
                for label, code in FLOOR_COMMANDS.items()}
    commands["/bin/true"] = ["/bin/true"]
    samples: dict[str, list[Sample]] = {label: [] for label in commands}
    for _ in range(runs + 1):
        for label, argv in commands.items():
            samples[label].append(runner.run(client, argv))
    return {label: Summary.of(found[1:]) for label, found in samples.items()}


def attachment(directory: Path, megabytes: int) -> Path:
    """A file of random bytes (MB = 10**6 bytes), written in small blocks
    so that the benchmark's own memory stays small."""
    path = directory / f"attachment-{megabytes}MB.bin"
    block = 1 << 20
    left = megabytes * 10**6
    with open(path, "wb") as stream:
        while left:
            size = min(block, left)
            stream.write(os.urandom(size))
            left -= size
    return path


def peak_rss(runner: Runner, clients: list[Client], files: list[Path],
             runs: int) -> dict[str, dict[str, Summary]]:
    """Each client sends each file as an attachment runs times; the relay
    finishes each message before the next send starts."""
    result: dict[str, dict[str, Summary]] = {}
    for path in files:
        samples: dict[str, list[Sample]] = {c.name: [] for c in clients}
        for _ in range(runs):
            for client in clients:
                before = runner.relay.delivered()
                samples[client.name].append(
                    runner.run(client, client.with_attachment(path)))
                runner.expect(before, 1, f"{client.name} -a {path.name}")
        result[path.name] = {n: Summary.of(s) for n, s in samples.items()}
    return result


def processes(runner: Runner, client: Client, count: int) -> Batch:
    """count separate processes of client, one after the other."""
    before = runner.relay.delivered()
    cpu = 0.0
    start = time.perf_counter()
    for _ in range(count):
        cpu += runner.run(client).cpu
    wall = time.perf_counter() - start
    runner.expect(before, count, f"{client.name} batch")
    return Batch(count, wall, cpu, count)


def fill_queue(runner: Runner, client: Client, queue: Path, count: int,
               closed_port: int) -> None:
    """Queue count messages: pymail sends them to a port where nothing
    listens, and with its queue on keeps each one for a later flush."""
    argv = [client.argv[0], "-S", f"smtp=smtps://{HOST}:{closed_port}",
            *client.argv[1:]]
    for _ in range(count):
        runner.run(client, argv)
    queued = len(_queued(queue))
    if queued != count:
        raise BenchError(f"pymail queued {queued} messages in {queue}, "
                         f"expected {count}; see {runner.logs}")


def wait_until_due(queue: Path) -> None:
    """A queued message is retried only after a wait (pymail's back-off);
    sleep until the last one is due, so that a plain --flush sends all."""
    wait = max(map(_due, _queued(queue)), default=0.0) - time.time()
    if wait > 0:
        time.sleep(wait + 0.5)


def flush(runner: Runner, client: Client, queue: Path, count: int) -> Batch:
    """One `pymail --flush` delivers the whole queue."""
    before = runner.relay.delivered()
    sample = runner.run(client, [client.argv[0], "-n", "--flush"])
    runner.expect(before, count, "pymail --flush")
    left = len(_queued(queue))
    if left:
        raise BenchError(f"pymail --flush left {left} messages in {queue}")
    return Batch(count, sample.wall, sample.cpu, 1)


def _queued(queue: Path) -> list[Path]:
    """The state files of pymail's queue (ID.json, see its spool.py)."""
    return sorted(queue.glob("*.json"))


def _due(path: Path) -> float:
    """When a queued message is next tried (seconds since the epoch)."""
    try:
        return float(json.loads(path.read_text())["next_attempt"])
    except (OSError, ValueError, KeyError, TypeError):
        # Unknown format: assume pymail's first retry after a minute.
        return path.stat().st_mtime + 60
