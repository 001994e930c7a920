"""A TCP proxy that delays without throttling, run as its own process.

Each chunk read from one side is written to the other at read time plus
the one-way delay, in order. Reading never waits for the delay, so a large
upload flows at full speed, only shifted in time, as over a long link.

    python3 proxy.py --target 127.0.0.1:PORT --delay-ms 15

prints "listening on PORT" once it accepts connections, and runs until it
is terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import signal
import socket
import sys
import threading
import time
from types import FrameType

CHUNK = 1 << 16
# Chunks in flight per direction (64 MiB); past that the reader waits, as
# TCP would when the far end reads slower than the near end writes.
IN_FLIGHT = 1024
END = b""


def main() -> None:
    args = parse_args()
    host, _, port = args.target.rpartition(":")
    listener = socket.create_server(("127.0.0.1", args.port), backlog=128)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    signal.signal(signal.SIGTERM, _exit)
    delay = args.delay_ms / 1000
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, (host, int(port)), delay),
                         daemon=True).start()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True,
                        help="one-way delay in milliseconds")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on (default: any free one)")
    return parser.parse_args()


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def serve(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    """Relay one connection both ways, each direction with the delay."""
    try:
        server = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    directions = [Direction(client, server, delay),
                  Direction(server, client, delay)]
    threads = [threading.Thread(target=work, daemon=True)
               for d in directions for work in (d.read, d.write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    server.close()


class Direction:
    """One direction of a connection: a reader and a delayed writer."""

    def __init__(self, source: socket.socket, sink: socket.socket,
                 delay: float) -> None:
        self.source = source
        self.sink = sink
        self.delay = delay
        self.pending: queue.Queue[tuple[float, bytes]] = queue.Queue(IN_FLIGHT)

    def read(self) -> None:
        """Read as fast as data comes; stamp each chunk with its due time."""
        while True:
            try:
                data = self.source.recv(CHUNK)
            except OSError:
                data = END
            self.pending.put((time.monotonic() + self.delay, data))
            if data == END:
                return

    def write(self) -> None:
        """Write each chunk when it is due; pass the end on the same way."""
        while True:
            due, data = self.pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if data == END:
                _shutdown(self.sink, socket.SHUT_WR)
                return
            try:
                self.sink.sendall(data)
            except OSError:
                _shutdown(self.source, socket.SHUT_RD)
                self._drain()
                return

    def _drain(self) -> None:
        """The sink is gone: keep taking chunks so the reader can finish."""
        while self.pending.get()[1] != END:
            pass


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


if __name__ == "__main__":
    main()
