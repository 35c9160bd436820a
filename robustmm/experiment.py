"""One ``robustmm attack`` run on disk: a run folder with its config, records, gallery and report.

``run_experiment(spec)`` resolves the pair(s), datasets and attacks, refuses bad input
with one sentence *before* anything is written, streams records to
``<out>/<name>/records.jsonl`` (resuming whatever is there) and renders the report last.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from robustmm.errors import RobustMMError

DEFAULT_DATASETS = ("easy-vqa", "easy-ve")
DEFAULT_PRESET = "default"
DEFAULT_LIMIT = 100


def spec_identity(spec: dict) -> dict:
    """A run spec (as stored in run.json, or ``asdict``) without ``base``, in JSON values: equal for runs
    whose records are interchangeable."""
    return json.loads(json.dumps({k: v for k, v in spec.items() if k != "base"}))


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's records (the run folder stores it as run.json)."""

    pair: str | None = "default"
    prompt_tuned: str | None = None
    finetuned: str | None = None
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    split: str = "test"
    limit: int | None = DEFAULT_LIMIT
    attacks: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    eps: tuple[str, ...] = ()
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "float32"
    base: str | None = None  # where a moved prompt checkpoint's base lies now (hash-checked, so not in the digest)

    def identity(self) -> dict:
        """The fields that determine the records, as JSON values (all but ``base``)."""
        return spec_identity(asdict(self))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]


def build_attacks(spec: RunSpec) -> list:
    """Attack instances from presets and specs (default preset when neither is given), ε-expanded."""
    from robustmm.attacks import parse_attack_spec, parse_number
    from robustmm.attacks.presets import load_preset
    from robustmm.evaluate import expand_eps

    attacks = []
    presets = spec.presets or (() if spec.attacks else (DEFAULT_PRESET,))
    for preset in presets:
        attacks += load_preset(preset)  # a name from attacks/ or a TOML path
    attacks += [parse_attack_spec(s) for s in spec.attacks]
    eps = [parse_number(e, "eps") for e in spec.eps]
    for value in eps:
        if value < 0 or value > 1:
            raise RobustMMError(f"eps must lie in [0, 1] on the pixel scale (e.g. 8/255), not {value:g}.")
    attacks = expand_eps(attacks, eps)
    seen, unique = set(), []
    for attack in attacks:
        if attack.key() not in seen:
            seen.add(attack.key())
            unique.append(attack)
    if not unique:
        raise RobustMMError("No attacks were selected.")
    return unique


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("robustmm", "torch", "transformers", "torchattacks", "textattack", "peft", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_folder_name(spec: RunSpec, name: str | None = None) -> str:
    """The run folder's name: ``name`` if given, ``default`` for the default suite, else ``run-<hash of spec>``."""
    return name or ("default" if spec == RunSpec() else f"run-{spec.digest()}")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RobustMMError(f"Output folder {folder} is not writable ({err.strerror or err}).") from err


def run_experiment(spec: RunSpec, out: str | Path, name: str | None = None, command: str = "",
                   progress_factory: Callable | None = None) -> tuple[Path, object]:
    """Run (or resume) ``spec`` in ``out/name``; returns (report path, Summary)."""
    from robustmm.data import load_dataset
    from robustmm.evaluate import run_attacks
    from robustmm.gallery import Gallery
    from robustmm.models.pair import load_pair, resolve_device
    from robustmm.records import RecordStore
    from robustmm.report import render
    from robustmm.summary import summarize

    if spec.batch_size < 1:
        raise RobustMMError(f"batch size must be at least 1, got {spec.batch_size}.")
    if spec.limit is not None and spec.limit < 1:
        raise RobustMMError(f"limit must be at least 1, got {spec.limit}.")
    attacks = build_attacks(spec)
    device = resolve_device(spec.device)
    datasets = [load_dataset(d, split=spec.split, limit=spec.limit, seed=spec.seed) for d in spec.datasets]
    pairs = []
    for dataset in datasets:
        if spec.prompt_tuned or spec.finetuned:
            pair = load_pair(prompt_tuned=spec.prompt_tuned, finetuned=spec.finetuned, device=device, dtype=spec.dtype,
                             task=dataset.task.value, candidates=dataset.candidates, base=spec.base)
        else:
            pair = load_pair(spec.pair or "default", task=dataset.task.value, device=device, dtype=spec.dtype)
        if pair.task != dataset.task:
            raise RobustMMError(f"The pair was tuned for {pair.task.value} but dataset {dataset.name} is {dataset.task.value}.")
        if set(dataset.candidates) != set(pair.candidates):
            raise RobustMMError(f"Dataset {dataset.name} has a different answer set than the pair's models.")
        pairs.append(pair)

    run_name = run_folder_name(spec, name)
    run_dir = Path(out) / run_name
    _check_writable(run_dir)
    config_path = run_dir / "run.json"
    members = {d.name: {"prompt": p.prompt_tuned.fingerprint(), "finetune": p.finetuned.fingerprint()} for d, p in zip(datasets, pairs)}
    if config_path.exists():
        config = json.loads(config_path.read_text())
        stored = config.get("spec")
        if not isinstance(stored, dict) or spec_identity(stored) != spec.identity():
            raise RobustMMError(f"Run folder {run_dir} holds a run with other settings; choose another --name or --out.")
        known = config.get("members") or {}  # folders written before fingerprints were kept have none
        changed = sorted(f"{d}/{m}" for d in members for m in members[d] if d in known and known[d].get(m) != members[d][m])
        if changed:
            raise RobustMMError(f"Run folder {run_dir} holds records of other model weights ({', '.join(changed)} changed since); "
                                "remove the folder or choose another --name to start afresh.")
    config_path.write_text(json.dumps({"spec": asdict(spec), "members": members}, indent=2) + "\n")

    store = RecordStore(run_dir / "records.jsonl")
    gallery = Gallery(run_dir / "gallery")
    existing = store.load()
    resumed = len(existing)  # records a previous (interrupted or finished) invocation already wrote
    started, start = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    records = []
    for dataset, pair in zip(datasets, pairs):
        progress = progress_factory(dataset, pair, attacks) if progress_factory else None
        try:
            records += run_attacks(pair, dataset, attacks, batch_size=spec.batch_size, seed=spec.seed, run=run_name,
                                   store=store, existing=existing, progress=progress, gallery=gallery)
        finally:
            if progress is not None and hasattr(progress, "close"):
                progress.close()
        existing = store.load()
    summary = summarize(records, seed=spec.seed)
    meta = {"run": run_name, "command": command, "spec": asdict(spec), "seed": spec.seed, "device": str(device),
            "batch_size": spec.batch_size, "dtype": spec.dtype, "limit": spec.limit, "wall_seconds": round(time.perf_counter() - start, 1),
            "started": started, "records": len(records), "resumed_records": resumed, "versions": versions()}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return render(summary, run_dir, meta), summary


def rerender(run_dir: str | Path) -> Path:
    """Re-render a run folder's report from its stored records and meta."""
    from robustmm.records import load_run
    from robustmm.report import render
    from robustmm.summary import summarize

    run_dir = Path(run_dir)
    records = load_run(run_dir)
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"run": run_dir.name}
    seed = int(meta.get("seed", 0))
    return render(summarize(records, seed=seed), run_dir, meta)
