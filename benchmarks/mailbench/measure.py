"""Run one child process and measure it: wall time, CPU time (user + sys)
and peak RSS, from the rusage of wait4 (done by spawn.py, see there)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailbench.system import BenchError

SPAWN = Path(__file__).with_name("spawn.py")
TIMEOUT = 900


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # seconds, user + system, the child and what it waited for
    maxrss: int  # KiB


def run(argv: Sequence[str], env: dict[str, str], stdin: Path,
        log: Path) -> Sample:
    """Run argv with stdin from a file and output appended to log; a
    non-zero exit is an error that names the log."""
    command = _resolve(argv)
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(SPAWN), str(stdin), str(log),
         str(TIMEOUT), *command],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise BenchError(f"measuring {argv[0]} failed: "
                         f"{result.stderr.strip()[-300:]}") from None
    if data["code"] != 0:
        raise BenchError(f"{' '.join(argv[:3])} ... exited {data['code']}; "
                         f"its output is in {log}")
    return Sample(data["wall"], data["cpu"], data["maxrss"])


def _resolve(argv: Sequence[str]) -> list[str]:
    path = shutil.which(argv[0], path="/usr/local/bin:/usr/bin:/bin")
    if path is None:
        raise BenchError(f"{argv[0]} not found")
    return [path, *argv[1:]]


@dataclass(frozen=True)
class Summary:
    """Medians over repeated samples."""

    runs: int
    wall: float
    cpu: float
    maxrss: int

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Summary:
        return cls(len(samples),
                   statistics.median(s.wall for s in samples),
                   statistics.median(s.cpu for s in samples),
                   int(statistics.median(s.maxrss for s in samples)))
