"""What the benchmarks share: the shipped model they default to, a timer, and the command line of the step-slice
benchmarks (``python benchmarks/bench_x.py [STEPS] [--device cpu|cuda]``)."""

from __future__ import annotations

import argparse
import time
from typing import Callable, TypeVar

from robustmm.models.pair import resolve_device
from robustmm.paths import package_root

T = TypeVar("T")

DEFAULT_MODEL = package_root() / "checkpoints" / "default" / "easy-vqa" / "finetune"  # the shipped finetuned member


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(wall seconds, result) of ``fn()``."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def slice_parser(doc: str, default_steps: int) -> argparse.ArgumentParser:
    """A parser of ``STEPS`` (default ``default_steps``) and ``--device``; a benchmark may add its own options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("steps", nargs="?", type=int, default=default_steps)
    parser.add_argument("--device", default="cpu")
    return parser


def device_of(args: argparse.Namespace) -> str:
    """The device ``--device`` names (``auto`` resolved), as a string."""
    return str(resolve_device(args.device))


def run_with_steps(main: Callable[[int, str], None], doc: str, default_steps: int) -> None:
    """Parse ``STEPS`` and ``--device`` and call ``main(steps, device)``."""
    args = slice_parser(doc, default_steps).parse_args()
    main(args.steps, device_of(args))
