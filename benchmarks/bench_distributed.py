"""Benchmark: the same `robustmm attack` workload in 1 and in 2 processes (torchrun, Gloo, one thread each).

Prints both wall times, the scaling efficiency T1 / (2 x T2) (issue target >= 0.85 on this 2-core
machine) and whether the merged records of the 2-process run equal the 1-process run's, timing fields
aside. Each run is a fresh subprocess writing to a temporary folder; wall times include start-up
(imports, model loading), so the workload is sized to take about a minute in one process. The two
set-ups alternate ``--repeats`` times and the fastest of each is compared (a shared machine's noise
only ever adds time).

    python benchmarks/bench_distributed.py [--limit 160] [--repeats 2] [--attack pgd-linf:steps=10 ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robustmm.records import RecordStore


def run(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def comparable(path: Path) -> list[dict]:
    rows = []
    for record in RecordStore(path).load():
        row = record.to_json()
        row.pop("seconds"), row.pop("run")
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["member"], r["attack_key"], r["example_id"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--attack", action="append", default=None)
    args = parser.parse_args()
    attacks = [a for spec in (args.attack or ["pgd-linf:steps=10", "fgsm"]) for a in ("-a", spec)]
    workload = ["attack", "-d", "easy-vqa", "-d", "easy-ve", "--limit", str(args.limit), *attacks, "--device", "cpu"]
    ones, twos, same = [], [], True
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.repeats):
            ones.append(run([sys.executable, "-m", "robustmm", *workload, "--out", out, "--name", f"one-{i}"]))
            twos.append(run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "robustmm", *workload, "--out", out, "--name", f"two-{i}"]))
            same &= comparable(Path(out) / "one-0" / "records.jsonl") == comparable(Path(out) / f"two-{i}" / "records.jsonl")
        n = len(RecordStore(Path(out) / "one-0" / "records.jsonl").load())
    one, two = min(ones), min(twos)
    print(f"workload: {' '.join(workload)} ({n} records)")
    print(f"1 process : {one:7.1f} s   (each run: {', '.join(f'{t:.1f}' for t in ones)})")
    print(f"2 processes: {two:7.1f} s   (each run: {', '.join(f'{t:.1f}' for t in twos)})   speed-up {one / two:.2f}x")
    print(f"scaling efficiency T1 / (2 T2): {one / (2 * two):.2f}   (target >= 0.85)")
    print(f"records identical (timing aside): {same}")


if __name__ == "__main__":
    main()
