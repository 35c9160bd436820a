"""Per-example randomness: the invariant the paired verdict rests on.

Every random draw an attack makes for an example (PGD / APGD random start, noise, Square's
proposals, character edits, tie-breaks) comes from a generator seeded by
``example_seed(run_seed, attack_key, example_id)`` and nothing else: not the batch, its size or
order, the process or rank, nor the member being attacked. So

- both members of a pair get the same random start on the same example (paired design);
- a record is the same whatever ``--batch-size``, resume point or shard produced it;
- ``--seed`` changes every draw (and the example sample).

The seed is the first 8 bytes of a SHA-256 of the three parts (stable across Python
processes and versions, unlike ``hash()``), reduced to 63 bits (what ``torch.Generator``
and ``random.Random`` accept).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def example_seed(run_seed: int, attack_key: str, example_id: str) -> int:
    """A 63-bit seed for one (run seed, canonical attack key, example id); stable across processes."""
    digest = hashlib.sha256(f"{int(run_seed)}\x1f{attack_key}\x1f{example_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def example_seeds(run_seed: int, attack_key: str, example_ids: Sequence[str]) -> list[int]:
    """:func:`example_seed` of each example id, in order."""
    return [example_seed(run_seed, attack_key, i) for i in example_ids]


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def per_example_uniform(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, *shape) draws from U[0, 1), row b from a generator seeded with ``seeds[b]`` alone.

    Drawn on the CPU and moved to ``device``, so the numbers are the same on every device.
    """
    rows = [torch.rand(tuple(shape), generator=generator(s), dtype=dtype) for s in seeds]
    out = torch.stack(rows) if rows else torch.zeros((0, *shape), dtype=dtype)
    return out.to(device)


def per_example_normal(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, *shape) standard normal draws, row b from a generator seeded with ``seeds[b]`` alone (CPU, then moved)."""
    rows = [torch.randn(tuple(shape), generator=generator(s), dtype=dtype) for s in seeds]
    out = torch.stack(rows) if rows else torch.zeros((0, *shape), dtype=dtype)
    return out.to(device)


def derived_seed(seed: int, *stream: object) -> int:
    """A 63-bit seed for a named sub-stream of ``seed`` (e.g. ``derived_seed(s, "restart", 2)``): independent
    of ``seed``'s own stream and of every other sub-stream, stable across processes."""
    text = "\x1f".join(str(part) for part in (int(seed), *stream))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def in_subset(run_seed: int, example_id: str, fraction: float) -> bool:
    """Whether an example belongs to the seeded subset holding about ``fraction`` of all examples.

    A pure function of (run seed, example id, fraction), the same for every attack and member, and nested:
    the subset at 0.1 lies inside the subset at 0.2 (an example's position is one uniform draw).
    """
    if fraction >= 1:
        return True
    return example_seed(run_seed, "subset", example_id) < fraction * (1 << 63)
