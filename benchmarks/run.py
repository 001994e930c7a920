#!/usr/bin/env python3
"""Run the pymail benchmark: `sudo python3 benchmarks/run.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mailbench.main import main  # noqa: E402 (needs the path above)

if __name__ == "__main__":
    sys.exit(main())
