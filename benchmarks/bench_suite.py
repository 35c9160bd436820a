"""Benchmark: the default `robustmm attack` suite end to end (issue target: <= 5 min, peak RSS <= 3 GB on 2 cores).

Runs the README's main-job command in a fresh subprocess writing to a temporary folder and
prints its wall time and peak resident memory (the child's ru_maxrss) next to the targets.

    python benchmarks/bench_suite.py [extra robustmm attack options...]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "robustmm.cli", "attack", "--out", out, *sys.argv[1:]]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stderr[-2000:])
        raise SystemExit(f"robustmm attack failed with exit code {result.returncode}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux
    print(f"default suite wall time : {wall / 60:6.2f} min   (target <= 5.00 min, ratio {wall / 300:.2f})")
    print(f"default suite peak RSS  : {peak_gb:6.2f} GB    (target <= 3.00 GB, ratio {peak_gb / 3:.2f})")


if __name__ == "__main__":
    main()
