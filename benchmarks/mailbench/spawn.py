"""Run one command and print its wall time, CPU time and peak RSS as JSON.

    python3 -I -S spawn.py STDIN LOG TIMEOUT COMMAND...

Why a process of its own: on Linux a child's ru_maxrss starts at the peak
RSS of the memory it was forked from (kept across exec), so a command
spawned by the benchmark itself would report at least the benchmark's own
peak. Forked from this small, fresh interpreter, the floor is a few MiB,
and the report says how much (it measures /bin/true the same way).

Only the standard library, and as little of it as possible before the
fork: everything imported here becomes part of that floor.
"""

import os
import signal
import sys
import time


def main() -> None:
    stdin, log, timeout, *command = sys.argv[1:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(stdin, log, command)
    signal.signal(signal.SIGTERM, lambda *_: _kill(pid))
    signal.signal(signal.SIGALRM, lambda *_: _kill(pid))
    signal.alarm(int(float(timeout)))
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    signal.alarm(0)

    import json

    print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                      "maxrss": usage.ru_maxrss,
                      "code": os.waitstatus_to_exitcode(status)}))


def _child(stdin: str, log: str, command: list[str]) -> None:
    try:
        source = os.open(stdin, os.O_RDONLY)
        output = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(source, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.execv(command[0], command)
    except OSError as exc:
        os.write(2, f"spawn: {command[0]}: {exc}\n".encode())
    os._exit(127)


def _kill(pid: int) -> None:
    # Not contextlib.suppress: importing contextlib would raise the floor.
    try:  # noqa: SIM105
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
