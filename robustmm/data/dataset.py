"""The in-memory dataset type and the registry behind ``load_dataset``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from robustmm.errors import RobustMMError
from robustmm.types import Example, Task


@dataclass(frozen=True)
class Dataset:
    """A list of examples of one task plus the closed answer set used for candidate scoring."""

    name: str
    split: str
    task: Task
    examples: tuple[Example, ...]
    candidates: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def sample_order(self, seed: int | None = 0) -> list[int]:
        """Every example index in the order a seeded sample draws them (dataset order if seed is None)."""
        order = list(range(len(self.examples)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        return order

    def subset(self, limit: int | None, seed: int | None = 0) -> "Dataset":
        """At most ``limit`` examples: the first ``limit`` of :meth:`sample_order`, kept in dataset order.

        Samples are nested: the sample of ``limit`` examples holds the sample of any smaller limit (with
        the same seed), which lets a run grow its sample in rounds (``--until-decided``).
        """
        if limit is None or limit >= len(self.examples):
            return self
        if limit < 1:
            raise RobustMMError(f"limit must be a positive number of examples, got {limit}.")
        chosen = sorted(self.sample_order(seed)[:limit])
        return Dataset(self.name, self.split, self.task, tuple(self.examples[i] for i in chosen), self.candidates)


Loader = Callable[..., Dataset]
_LOADERS: dict[str, Loader] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_dataset(name: str, description: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(split=..., root=..., **options) -> Dataset`` under ``name``."""

    def decorate(loader: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _LOADERS[name] = loader
        _DESCRIPTIONS[name] = description
        return loader

    return decorate


def list_datasets() -> dict[str, str]:
    """Registered dataset names with a one-line description each."""
    return dict(sorted(_DESCRIPTIONS.items()))


def _detect_format(root: Path) -> str:
    if any(root.glob("v2_OpenEnded_mscoco_*_questions.json")):
        return "vqa-v2"
    if any(root.glob("snli_ve_*.jsonl")):
        return "snli-ve"
    raise RobustMMError(
        f"Folder {root} holds neither VQA v2 files (v2_OpenEnded_mscoco_<split>_questions.json) "
        "nor SNLI-VE files (snli_ve_<split>.jsonl)."
    )


def load_dataset(
    name_or_path: str | Path,
    split: str = "test",
    limit: int | None = None,
    seed: int | None = 0,
    **options,
) -> Dataset:
    """Load a registered dataset by name, or an official-format folder by path.

    ``limit`` keeps a seeded random sample of that many examples (in dataset order);
    ``options`` go to the loader (e.g. ``root=``, ``images=``, ``candidates=`` for vqa-v2).
    """
    name = str(name_or_path)
    if name not in _LOADERS:
        path = Path(name).expanduser()
        if not path.exists():
            known = ", ".join(sorted(_LOADERS))
            raise RobustMMError(f"Unknown dataset {name!r}: give one of {known}, or a folder of official files.")
        if not path.is_dir():
            raise RobustMMError(f"Dataset path {path} is a file; give the folder that holds the official files.")
        options.setdefault("root", path)
        name = _detect_format(path)
    dataset = _LOADERS[name](split=split, **options)
    if len(dataset) == 0:
        source = f" (files in {options['root']})" if options.get("root") is not None else ""
        raise RobustMMError(f"Dataset {name!r} split {split!r} has no examples{source}.")
    seen: set[str] = set()
    for example in dataset.examples:
        if example.id in seen:
            raise RobustMMError(f"Dataset {name!r} split {split!r} has two examples with id {example.id!r}; "
                                "example ids must be unique (records and random draws are keyed by them).")
        seen.add(example.id)
    return dataset.subset(limit, seed)
