"""The command line shared by the step-slice benchmarks: ``python benchmarks/bench_x.py [STEPS] [--device cpu|cuda]``."""

from __future__ import annotations

import argparse
from typing import Callable

from robustmm.models.pair import resolve_device


def run_with_steps(main: Callable[[int, str], None], doc: str, default_steps: int) -> None:
    """Parse ``STEPS`` (default ``default_steps``) and ``--device`` and call ``main(steps, device)``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=default_steps)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    main(args.steps, str(resolve_device(args.device)))
