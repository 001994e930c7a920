"""The benchmark's command line and the order of its steps."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from mailbench import certs, clients, report, scenarios
from mailbench.clients import Client, Login
from mailbench.mta import USER, Relay, free_port
from mailbench.network import Proxy, link_times
from mailbench.report import Results
from mailbench.scenarios import Runner
from mailbench.system import (
    BenchError,
    Snapshot,
    install,
    missing_packages,
    require_root,
)

PARTS = ("cold", "rss", "batch")
ATTACHMENTS_MB = (20, 200)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Measure pymail against s-nail and msmtp through a "
        "private Postfix relay on loopback (needs root: installs postfix and "
        "dovecot-core if missing, and restores /usr/sbin/sendmail after).")
    parser.add_argument("--runs", type=_positive, default=15,
                        help="cold sends per client and RTT (default 15)")
    parser.add_argument("--rtt", type=_rtts, default=[0, 30],
                        help="round trips in ms, comma-separated (default 0,30)")
    parser.add_argument("--batch", type=_positive, default=200,
                        help="messages in the batch (default 200)")
    parser.add_argument("--rss-runs", type=_positive, default=3,
                        help="sends per attachment size and client (default 3)")
    parser.add_argument("--only", type=_parts, default=list(PARTS),
                        help="parts to run, comma-separated: cold,rss,batch")
    parser.add_argument("--pymail", type=Path,
                        help="this pymail instead of one installed from the "
                        "repository")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the results as Markdown "
                        "(benchmarks/RESULTS.md)")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "pymail-bench",
                        help="where pymail's venv is kept "
                        "(default ~/.cache/pymail-bench)")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the work directory (logs, configs)")
    return parser.parse_args(argv)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _rtts(value: str) -> list[int]:
    try:
        rtts = sorted({int(part) for part in value.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError("e.g. 0,30") from None
    if not rtts or rtts[0] < 0:
        raise argparse.ArgumentTypeError("round trips are 0 ms or more")
    return rtts


def _parts(value: str) -> list[str]:
    parts = [part.strip() for part in value.split(",")]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}")
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT too: a shell starts background jobs with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        require_root()
        return Benchmark(args).run()
    except BenchError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark: interrupted", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@dataclass
class Link:
    """One round-trip setting: the port clients connect to, and them."""

    rtt: int
    login: Login
    clients: list[Client] = field(default_factory=list)
    # The floor as a client, in the cold sends only.
    bare: Client | None = None


class Benchmark:
    """Set up, measure, report; and always put the machine back."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="pymail-bench-"))
        # Postfix and Dovecot run as their own users and must reach it.
        self.work.chmod(0o755)
        self.runner: Runner | None = None
        self.relay: Relay | None = None
        self.proxies: list[Proxy] = []
        self.results = Results(settings={
            "runs": str(args.runs), "rss runs": str(args.rss_runs),
            "batch": str(args.batch),
            "RTT": ", ".join(f"{r} ms" for r in args.rtt)})

    def run(self) -> int:
        self.load_at_start = _load()
        snapshot = Snapshot(self.work / "saved")
        try:
            self._prepare(snapshot)
            self._measure()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._clean_up(snapshot)
        return 0

    # -- setup ---------------------------------------------------------------

    def _prepare(self, snapshot: Snapshot) -> None:
        wanted = missing_packages()
        if shutil.which("openssl") is None:
            wanted.append("openssl")
        if wanted:
            install(wanted, snapshot)
        _warn_about_environment()
        self.pymail = self.args.pymail or clients.install_pymail(self.args.cache)
        if not os.access(self.pymail, os.X_OK):
            raise BenchError(f"{self.pymail} is not an executable")
        self.python = clients.interpreter_of(self.pymail)
        # Now, not at the end: the commit is that of the pymail measured.
        self.described = report.machine(self.pymail, self.python,
                                        clients.REPO)
        self.certificates = certs.make(self.work / "tls")
        self.relay = Relay(self.work, self.certificates)
        self.relay.start()
        self.runner = Runner(self.relay, self.work / "logs")
        self.links = [self._link(rtt) for rtt in self.args.rtt]

    def _link(self, rtt: int) -> Link:
        assert self.relay is not None
        port = self.relay.port
        if rtt > 0:
            proxy = Proxy(port, rtt, self.work / "logs" / "proxy.log")
            self.proxies.append(proxy)
            proxy.start()
            port = proxy.port
        login = Login(port, USER, self.relay.password, self.certificates.ca)
        directory = self.work / "clients" / f"rtt{rtt}"
        home = self.work / "home"
        link = Link(rtt, login, [clients.pymail(self.pymail, login, directory,
                                                home)])
        if clients.installed("s-nail"):
            link.clients.append(clients.snail(login, directory, home))
        if clients.installed("msmtp"):
            link.clients.append(clients.msmtp(login, directory, home))
        link.bare = clients.bare_sender(self.python, login, directory, home)
        self.results.link[rtt] = link_times(port, self.certificates.ca)
        return link

    # -- measuring -------------------------------------------------------------

    def _measure(self) -> None:
        assert self.runner is not None
        parts = self.args.only
        if "cold" in parts:
            self._cold(self.runner)
        if "rss" in parts:
            self._rss(self.runner)
        if "batch" in parts:
            self._batch(self.runner)
        self._report()

    def _cold(self, runner: Runner) -> None:
        for link in self.links:
            _progress(f"cold sends at {link.rtt} ms RTT")
            bare = [link.bare] if link.bare else []
            self.results.cold[link.rtt] = scenarios.cold_sends(
                runner, link.clients + bare, self.args.runs)
        _progress("floor: the interpreter and pymail's fixed imports")
        self.results.floor = scenarios.floor(
            runner, self.python, self.args.runs, self.links[0].clients[0])

    def _rss(self, runner: Runner) -> None:
        link = self.links[0]
        _progress(f"peak RSS with attachments at {link.rtt} ms RTT")
        files = [scenarios.attachment(self.work, size)
                 for size in ATTACHMENTS_MB]
        senders = [c for c in link.clients if c.attach_flag is not None]
        self.results.rss_rtt = link.rtt
        self.results.rss = scenarios.peak_rss(runner, senders, files,
                                              self.args.rss_runs)
        for path in files:
            path.unlink()

    def _batch(self, runner: Runner) -> None:
        count = self.args.batch
        queued = {}
        for link in self.links:
            _progress(f"batch: queueing {count} messages with pymail "
                      f"(for {link.rtt} ms RTT)")
            queue = self.work / f"queue-rtt{link.rtt}"
            client = clients.pymail(self.pymail, link.login,
                                    self.work / "clients" / f"rtt{link.rtt}",
                                    self.work / "home", queue=queue)
            scenarios.fill_queue(runner, client, queue, count, free_port())
            queued[link.rtt] = (client, queue)
        for link in self.links:
            batches = self.results.batch.setdefault(link.rtt, {})
            for client in link.clients[1:]:
                _progress(f"batch: {count} {client.name} processes at "
                          f"{link.rtt} ms RTT")
                batches[f"{client.name}, {count} processes"] = \
                    scenarios.processes(runner, client, count)
        for link in self.links:
            client, queue = queued[link.rtt]
            _progress(f"batch: pymail --flush at {link.rtt} ms RTT "
                      "(once the queued messages are due)")
            scenarios.wait_until_due(queue)
            self.results.batch[link.rtt]["pymail --flush, 1 process"] = \
                scenarios.flush(runner, client, queue, count)

    def _report(self) -> None:
        described = dict(self.described)
        # Other work on the machine shows in every number: say how much.
        described["load average (1, 5, 15 min)"] = \
            f"{self.load_at_start} at the start, {_load()} at the end"
        print(report.text(self.results, described))
        if self.args.markdown:
            self.args.markdown.write_text(
                report.markdown(self.results, described))
            print(f"wrote {self.args.markdown}")

    # -- cleaning up -----------------------------------------------------------

    def _clean_up(self, snapshot: Snapshot) -> None:
        for proxy in self.proxies:
            proxy.stop()
        problems = self.relay.stop() if self.relay else []
        for line in problems + snapshot.restore():
            print(f"benchmark: {line}", file=sys.stderr)
        if self.args.keep_work:
            print(f"benchmark: work directory kept: {self.work}",
                  file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def _warn_about_environment() -> None:
    first = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0]
    if first[4][0] != "127.0.0.1":
        print(f"benchmark: note: localhost resolves to {first[4][0]} first; "
              "the relay listens on 127.0.0.1 only, so each connection "
              "tries that first", file=sys.stderr)
    if Path("/etc/pymail.env").exists():
        print("benchmark: note: /etc/pymail.env exists and beats the "
              "benchmark's mail.rc for the variables it sets",
              file=sys.stderr)


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _progress(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)
