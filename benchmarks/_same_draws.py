"""Hand a torchattacks attack robustmm's per-example random draws, so both compute the same thing.

torchattacks draws its random starts from torch's global generator inside its modules
(``torch.rand(x.shape)`` / ``torch.randn`` in APGD, ``torch.empty_like(x).uniform_(-eps, eps)`` in PGD). The benchmarks
replace the ``torch`` name *inside one torchattacks module* by a proxy that answers those calls with
robustmm's draws and forwards everything else to torch, for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Iterator
from unittest import mock

import torch


class _Torch:
    """torch, except for the attributes given (e.g. ``rand=lambda *a, **k: draws``)."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides[name] if name in self._overrides else getattr(torch, name)


class _Uniform:
    """What the patched ``torch.empty_like(x)`` returns: ``.uniform_(low, high)`` gives the prepared noise."""

    def __init__(self, noise: torch.Tensor) -> None:
        self.noise = noise

    def uniform_(self, low: float, high: float) -> torch.Tensor:
        return self.noise


@contextlib.contextmanager
def random_tensors_are(module: ModuleType, draws: torch.Tensor) -> Iterator[None]:
    """Inside ``module``, ``torch.rand(shape)`` and ``torch.randn(shape)`` return ``draws`` (of that shape) for the block."""

    def prepared(*shape, **kwargs):
        size = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        assert tuple(size) == tuple(draws.shape), f"torchattacks asked for {size}, prepared {tuple(draws.shape)}"
        return draws.clone()

    with mock.patch.object(module, "torch", _Torch({"rand": prepared, "randn": prepared})):
        yield


@contextlib.contextmanager
def uniform_noise_is(module: ModuleType, noise: torch.Tensor) -> Iterator[None]:
    """Inside ``module``, ``torch.empty_like(x).uniform_(-eps, eps)`` returns ``noise`` for the block."""
    with mock.patch.object(module, "torch", _Torch({"empty_like": lambda x, **kwargs: _Uniform(noise.clone())})):
        yield
