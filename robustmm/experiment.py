"""One ``robustmm attack`` run on disk: a run folder with its identity, records, gallery and report.

``run_experiment(spec)`` resolves the pair(s), datasets and attacks and refuses bad input with one
sentence *before* anything is written; it then streams records to ``<out>/<name>/records.jsonl``
(resuming whatever is there) and renders the report last.

A run's **identity** is a digest of what determines its records once resolved: the canonical key of
every attack (so editing a preset changes it), the datasets' examples and the sample (limit, seed,
stopping rule), each member's weights, the device kind and dtype, and the code (robustmm's version and
a digest of its source). Resuming a folder whose identity differs is refused, naming what changed.
The batch size is not part of it: records do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from robustmm.errors import RobustMMError
from robustmm.runlock import RunLock

log = logging.getLogger(__name__)

DEFAULT_DATASETS = ("easy-vqa", "easy-ve")
DEFAULT_PRESET = "default"
DEFAULT_LIMIT = 400
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class RunSpec:
    """Everything a user sets for a run (the run folder stores it in run.json)."""

    pair: str | None = "default"
    prompt_tuned: str | None = None
    finetuned: str | None = None
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    split: str = "test"
    limit: int | None = DEFAULT_LIMIT
    attacks: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    eps: tuple[str, ...] = ()  # L∞ budgets on the [0, 1] pixel scale
    eps_l2: tuple[str, ...] = ()  # L2 budgets
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "float32"
    until_decided: bool = False  # grow the sample in rounds of ``limit`` until every CI is within ``precision``
    precision: float = 0.05
    answer: str = "candidates"  # "generate": also score each member's open-ended clean answers (robustmm.generation)
    image_size: int | None = None  # VLM members: the square image size attacks work at (default: the processor's)
    gradient_checkpointing: bool = False  # VLM members: recompute activations in backward passes (less memory)
    memory_mb: int | None = None  # VLM members: memory budget of one candidate-scoring chunk
    transfer: bool = True  # keep white-box adversarial images and score each member on the other's (robustmm.transfer)
    transfer_to: str | None = None  # a third checkpoint scored on both members' adversarial images
    base: str | None = None  # where a moved prompt checkpoint's base lies now (hash-checked)

    def check(self) -> None:
        """Refuse impossible values with one sentence, before any work."""
        if self.batch_size < 1:
            raise RobustMMError(f"batch size must be at least 1, got {self.batch_size}.")
        if self.limit is not None and self.limit < 1:
            raise RobustMMError(f"limit must be at least 1, got {self.limit}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise RobustMMError(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed}.")
        if not 0 < self.precision < 1:
            raise RobustMMError(f"precision is a half-width in (0, 1) (0.05 = ±5 points), got {self.precision:g}.")
        if self.until_decided and self.limit is None:
            raise RobustMMError("--until-decided grows the sample in rounds of --limit examples; give a --limit.")
        if not self.datasets:
            raise RobustMMError("No dataset was given.")
        if self.answer not in ("candidates", "generate"):
            raise RobustMMError(f"--answer is candidates or generate, not {self.answer!r}.")
        for name, value in (("image size", self.image_size), ("memory budget", self.memory_mb)):
            if value is not None and value < 1:
                raise RobustMMError(f"The {name} must be a positive number, got {value}.")

    def vlm_options(self) -> dict:
        """Options for VLM members (:func:`robustmm.models.pair.load_pair`'s ``vlm``), only those set."""
        options = {"image_size": self.image_size, "memory_mb": self.memory_mb,
                   "gradient_checkpointing": self.gradient_checkpointing or None}
        return {k: v for k, v in options.items() if v is not None}


def build_attacks(spec: RunSpec) -> list:
    """Attack instances from presets and specs (default preset when neither is given), ε-expanded, deduplicated."""
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
        if not 0 < value <= 1:
            raise RobustMMError(f"--eps is an L∞ budget in (0, 1] on the pixel scale (e.g. 8/255), not {value:g}.")
    eps_l2 = [parse_number(e, "eps-l2") for e in spec.eps_l2]
    for value in eps_l2:
        if not 0 < value < float("inf"):
            raise RobustMMError(f"--eps-l2 is an L2 radius > 0 on the [0, 1] pixel scale (e.g. 0.5), not {value:g}.")
    attacks = expand_eps(attacks, eps, eps_l2)
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


def source_digest() -> str:
    """First 16 hex digits of a sha256 over robustmm's Python source files (names and bytes)."""
    from robustmm.paths import package_root

    digest = hashlib.sha256()
    root = package_root()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def examples_digest(dataset) -> str:
    """First 16 hex digits of a sha256 over a dataset's examples (id, text, answers, image reference), in order."""
    digest = hashlib.sha256()
    for e in dataset.examples:
        digest.update(json.dumps([e.id, e.text, list(e.answers), str(e.image)]).encode())
    return digest.hexdigest()[:16]


def run_identity(spec: RunSpec, attacks, pools, pairs, device, thirds=()) -> dict:
    """What determines the records (see the module docstring), as JSON values. ``pools``: the full splits."""
    import robustmm

    return {
        "attacks": [a.key() for a in attacks],
        "datasets": {d.name: {"split": d.split, "examples": examples_digest(d), "size": len(d)} for d in pools},
        "sample": {"limit": spec.limit, "seed": spec.seed, "until_decided": spec.until_decided,
                   "precision": spec.precision if spec.until_decided else None},
        "answers": {"answer": spec.answer, "image_size": spec.image_size},
        "transfer": {"on": spec.transfer, "third": thirds[0].fingerprint() if thirds else None},
        "members": {d.name: {"prompt": p.prompt_tuned.fingerprint(), "finetune": p.finetuned.fingerprint()}
                    for d, p in zip(pools, pairs)},
        "device": {"kind": device.type, "dtype": spec.dtype},
        "code": {"robustmm": robustmm.__version__, "source": source_digest()},
    }


def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def run_folder_name(spec: RunSpec, identity: dict, name: str | None = None) -> str:
    """``name`` if given, else ``default-<digest>`` for the default suite or ``run-<digest>``."""
    if name is not None:
        return name
    stem = "default" if not spec.attacks and not spec.presets else "run"
    return f"{stem}-{identity_digest(identity)}"


def check_name(name: str | None) -> None:
    """A run name is one path component: no separators, not '.' or '..', not empty."""
    if name is None:
        return
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RobustMMError(f"--name must be a single folder name (no '/', not '.' or '..'), not {name!r}.")


def _changes(stored: dict, current: dict) -> list[str]:
    """What differs between two identities, in words."""
    words = {"attacks": "the attack settings", "datasets": "the dataset files", "sample": "the sample (limit, seed or "
             "stopping rule)", "answers": "the answer mode or image size", "members": "the model weights",
             "device": "the device kind or dtype", "code": "robustmm's code"}
    return [words.get(k, k) for k in current if stored.get(k) != current.get(k)]


def _check_writable(folder: Path) -> None:
    import os

    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RobustMMError(f"Output folder {folder} is not writable ({err.strerror or err}).") from err


def load_everything(spec: RunSpec, device=None):
    """(attacks, full splits, pairs, device, third models): everything resolved and checked, nothing written.
    ``device`` overrides ``spec.device`` (a torchrun rank's own device); the third models (one per dataset,
    ``--transfer-to``) are empty when none is given."""
    from robustmm.data import load_dataset
    from robustmm.models.pair import load_pair, resolve_device

    spec.check()
    attacks = build_attacks(spec)
    device = device if device is not None else resolve_device(spec.device)
    pools = [load_dataset(d, split=spec.split, limit=None, seed=spec.seed) for d in spec.datasets]
    names = [d.name for d in pools]
    if len(set(names)) < len(names):
        raise RobustMMError(f"Dataset {next(n for n in names if names.count(n) > 1)} is given twice.")
    pairs, thirds = [], []
    for dataset in pools:
        if spec.prompt_tuned or spec.finetuned:
            pair = load_pair(prompt_tuned=spec.prompt_tuned, finetuned=spec.finetuned, device=device, dtype=spec.dtype,
                             task=dataset.task.value, candidates=dataset.candidates, base=spec.base, vlm=spec.vlm_options())
        else:
            pair = load_pair(spec.pair or "default", task=dataset.task.value, device=device, dtype=spec.dtype)
        if spec.answer == "generate":
            from robustmm.generation import check_can_generate

            check_can_generate(pair)
        if spec.transfer_to:
            from robustmm.models.pair import load_member

            thirds.append(load_member(spec.transfer_to, device, dtype=spec.dtype, task=dataset.task.value,
                                      candidates=dataset.candidates, vlm=spec.vlm_options()))
        if pair.task != dataset.task:
            raise RobustMMError(f"The pair was tuned for {pair.task.value} but dataset {dataset.name} is {dataset.task.value}.")
        if set(dataset.candidates) != set(pair.candidates):
            raise RobustMMError(f"Dataset {dataset.name} has a different answer set than the pair's models.")
        pairs.append(pair)
    return attacks, pools, pairs, device, thirds


def run_experiment(spec: RunSpec, out: str | Path, name: str | None = None, command: str = "",
                   progress_factory: Callable | None = None, fresh: bool = False) -> tuple[Path | None, object]:
    """Run (or resume) ``spec`` in ``out/name``; returns (report path, Summary).

    ``progress_factory(dataset, pair, attacks, totals)`` makes the runner's progress callback per dataset
    (``totals``: {attack key: examples it runs on});
    ``fresh`` refuses a folder that already holds records instead of resuming it. Under ``torchrun`` every
    rank calls this; rank 0 returns the report and the Summary, the other ranks (None, None)
    (:mod:`robustmm.distributed`).
    """
    from robustmm import distributed

    check_name(name)
    spec.check()
    ranks = distributed.from_environment()
    device = distributed.start(ranks, spec.device) if ranks is not None else None
    try:
        return _run(spec, out, name, command, progress_factory, fresh, ranks, device)
    finally:
        if ranks is not None:
            distributed.stop()


def _run(spec, out, name, command, progress_factory, fresh, ranks, device) -> tuple[Path | None, object]:
    from contextlib import nullcontext

    from robustmm import distributed

    attacks, pools, pairs, device, thirds = load_everything(spec, device)
    identity = run_identity(spec, attacks, pools, pairs, device, thirds)
    if ranks is not None:
        digests = distributed.gather(identity_digest(identity))
        if len(set(digests)) > 1:
            raise RobustMMError(f"The ranks disagree on the run's settings (identities {', '.join(sorted(set(digests)))}); "
                                "launch every rank with the same command, presets, checkpoints and data.")
    run_name = run_folder_name(spec, identity, name)
    run_dir = Path(out) / run_name
    main = ranks is None or ranks.main
    lock = RunLock(run_dir) if main else nullcontext()
    ok, problem = True, ""
    try:
        if main:
            if fresh and (run_dir / "records.jsonl").exists():
                raise RobustMMError(f"Run folder {run_dir} already holds records; remove it or choose another --name to start afresh.")
            _check_writable(run_dir)
            lock.__enter__()
            _prepare(run_dir, identity, spec)
    except RobustMMError as err:
        ok, problem = False, str(err)
    try:
        if ranks is not None:
            distributed.agree(ok, problem)
            seen = _read_json(run_dir / "run.json", "run settings").get("digest") if (run_dir / "run.json").is_file() else None
            distributed.agree(seen == identity_digest(identity),
                              f"rank {ranks.rank} cannot see {run_dir / 'run.json'} that rank 0 wrote: the run folder must be "
                              "on storage every node shares (give --out a shared filesystem).")
            _log_to_file(run_dir, ranks)
        elif not ok:
            raise RobustMMError(problem)
        return _run_in(spec, run_dir, run_name, identity, attacks, pools, pairs, device, command, progress_factory, ranks, thirds)
    finally:
        if main and ok:
            lock.__exit__(None, None, None)


def _prepare(run_dir: Path, identity: dict, spec: RunSpec) -> None:
    """Rank 0, holding the lock: refuse a folder of other settings, write run.json, set torn record tails aside."""
    from robustmm import distributed
    from robustmm.records import RecordStore

    config_path = run_dir / "run.json"
    if config_path.exists():
        stored = _read_json(config_path, "run settings")
        if stored.get("identity") != identity:
            changed = _changes(stored.get("identity") or {}, identity)
            raise RobustMMError(f"Run folder {run_dir} holds records made with other settings ({', '.join(changed) or 'an older format'} "
                                "changed); choose another --name, or remove the folder to start afresh.")
    _write_json(config_path, {"spec": asdict(spec), "identity": identity, "digest": identity_digest(identity)})
    for path in [run_dir / "records.jsonl", *distributed.rank_files(run_dir)]:
        aside = RecordStore(path).set_aside_torn_tail()
        if aside is not None:
            log.warning("%s ended in a torn line (an interrupted write); it was moved to %s and the run resumes.", path, aside.name)


def _log_to_file(run_dir: Path, ranks) -> None:
    """Ranks other than 0 log to ``<run>/logs/rank-<r>.log`` (rank 0 speaks for the job on the terminal)."""
    if ranks.main:
        return
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "logs" / f"rank-{ranks.rank}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("robustmm").addHandler(handler)
    logging.getLogger("robustmm").setLevel(logging.INFO)


def _stored(run_dir: Path, ranks) -> list:
    """Every record of the run so far: records.jsonl plus, in a torchrun job, every rank's file."""
    from robustmm import distributed
    from robustmm.records import RecordStore

    paths = [run_dir / "records.jsonl"] + (distributed.rank_files(run_dir) if ranks is not None else [])
    seen, records = set(), []
    for path in paths:
        for record in RecordStore(path).load():
            if record.key not in seen:
                seen.add(record.key)
                records.append(record)
    return records


def _run_in(spec: RunSpec, run_dir: Path, run_name: str, identity: dict, attacks, pools, pairs, device, command: str,
            progress_factory: Callable | None, ranks=None, thirds=()) -> tuple[Path | None, object]:
    """The run itself (every rank of a torchrun job runs it on its share)."""
    from robustmm import distributed
    from robustmm.evaluate import ImageBank, run_attacks
    from robustmm.gallery import Gallery
    from robustmm.generation import generate_rows, generation_lines
    from robustmm.models.describe import member_table
    from robustmm.records import RecordStore
    from robustmm.report import render
    from robustmm.summary import LABELS, MEMBERS, summarize
    from robustmm.transfer import AdversarialStore, transfer_units

    main = ranks is None or ranks.main
    adversarial = AdversarialStore(run_dir / "adversarial") if spec.transfer else None
    store = RecordStore(run_dir / ("records.jsonl" if ranks is None else distributed.RANK_FILE.format(ranks.rank)))
    existing = _stored(run_dir, ranks)
    resumed = len(existing)
    started, start = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    sequential, extra, members, planned, batch_sizes, samples, transfer_labels = {}, {}, {}, set(), {}, {}, {}
    images = ImageBank()
    ok, problem = True, ""
    protected_sets = {}
    for index, (pool, pair) in enumerate(zip(pools, pairs)):
        first = len(pool) if spec.limit is None else min(spec.limit, len(pool))
        third = ("other", thirds[index]) if thirds else None
        targets = list(MEMBERS) + (["other"] if third else [])
        protected = frozenset()
        if any(a.modality in ("text", "joint") for a in attacks):
            from robustmm.attacks.text.protect import protected_words

            protected = protected_words(pool)  # from the whole split: no record depends on which examples were sampled
            protected_sets[pool.name] = {"size": len(protected), "words": sorted(protected)}
        def totals(n: int) -> dict[str, int]:
            examples = pool.subset(n, spec.seed).examples
            return {a.key(): sum(a.covers(spec.seed, e.id) for e in examples) for a in attacks}

        display = progress_factory(pool, pair, attacks, totals(first)) if progress_factory and main else None
        progress, others = display, None
        if ranks is not None:
            progress = distributed.RankProgress(run_dir, ranks.rank, pool.name, inner=display) if not main else display
            others = distributed.OtherRanks(run_dir, ranks, pool.name, display) if main and display is not None else None
        try:
            n = first
            while True:
                dataset = pool.subset(n, spec.seed)
                try:
                    run_attacks(pair, dataset, attacks, batch_size=spec.batch_size, seed=spec.seed, run=run_name,
                                store=store, existing=existing, progress=progress, images=images, ranks=ranks,
                                batch_sizes=batch_sizes, protected=protected, adversarial=adversarial, third=third)
                except RobustMMError as err:
                    ok, problem = False, str(err)
                if ranks is not None:
                    distributed.agree(ok, problem)
                elif not ok:
                    raise RobustMMError(problem)
                existing = _stored(run_dir, ranks)
                planned |= {(f"{pool.task.value}/{pool.name}", m, a.key(), e.id) for m in MEMBERS for a in attacks
                            for e in dataset.examples if a.covers(spec.seed, e.id)}
                if adversarial is not None:
                    planned |= {(f"{pool.task.value}/{pool.name}", t, k, e.id) for t, k, a in transfer_units(attacks, targets)
                                for e in dataset.examples if a.covers(spec.seed, e.id)}
                samples[pool.name] = dataset
                if not spec.until_decided:
                    break
                scope = [r for r in existing if (r.task, r.dataset) == (pool.task.value, pool.name)]
                decided = sequential_state(scope, pool, n, spec)
                sequential[pool.name] = decided
                if decided["stop"] or n >= len(pool):
                    break
                n = min(len(pool), n + spec.limit)
                if progress is not None and hasattr(progress, "grow"):
                    progress.grow(totals(n))
        finally:
            for item in (others, progress):
                if item is not None and hasattr(item, "close"):
                    item.close()
        key = (pool.task.value, pool.name)
        members[pool.name] = member_table({m: model.info for m, model in pair.members().items()}
                                          | ({"other": third[1].info} if third else {}))
        transfer_labels[pool.name] = dict(zip(MEMBERS, LABELS)) | ({"other": f"{third[1].info.name} (--transfer-to)"} if third else {})
        extra[key] = []
        if pool.name in sequential:
            extra[key] += sequential_lines(sequential[pool.name], spec)
        if spec.answer == "generate" and main:
            rows = generate_rows(pair, dataset, images, spec.batch_size, run_dir / "generations.jsonl")
            extra[key] += generation_lines(rows, dict(zip(MEMBERS, LABELS)))
    if ranks is not None:
        distributed.agree(True, "")
        if not main:
            return None, None
        records = distributed.merge(run_dir, planned)
    else:
        records = existing
    records = [r for r in records if (r.task + "/" + r.dataset, r.member, r.attack_key, r.example_id) in planned]
    Gallery(run_dir / "gallery").rebuild({p.name: pair for p, pair in zip(pools, pairs)}, list(samples.values()), attacks,
                                         records, images, spec.seed)
    summary = summarize(records, seed=spec.seed)
    meta = {"run": run_name, "command": command, "spec": asdict(spec), "seed": spec.seed, "device": str(device),
            "batch_size": spec.batch_size, "dtype": spec.dtype, "limit": spec.limit,
            "examples": {d.name: len({r.example_id for r in records if r.dataset == d.name}) for d in pools},
            "wall_seconds": round(time.perf_counter() - start, 1), "started": started, "records": len(records),
            "resumed_records": resumed, "identity": identity_digest(identity), "versions": versions(), "members": members,
            "processes": 1 if ranks is None else ranks.world, "transfer_labels": transfer_labels}
    if batch_sizes:
        meta["batch_sizes_after_oom"] = batch_sizes
    if protected_sets:
        meta["protected_words"] = protected_sets
    if spec.until_decided:
        meta["stopping"] = (f"until every headline CI (anytime-valid) is within ±{100 * spec.precision:g} points, in rounds of "
                            f"{spec.limit} examples: " + "; ".join(f"{d} stopped at n = {s['n']} ({s['reason']})"
                                                                    for d, s in sequential.items()))
        meta["sequential"] = sequential
    _write_json(run_dir / "meta.json", meta)
    return render(summary, run_dir, meta, extra), summary


def sequential_state(records, pool, n: int, spec: RunSpec) -> dict:
    """After a round of ``n`` examples: each setting's anytime-valid CI of the ASR difference, and whether to stop.

    The values are the per-example differences d = broken(finetuned) - broken(prompt-tuned) in {-1, 0, 1}
    on the examples both members answered correctly, in the order the seeded sample drew them; each
    setting's confidence sequence (:func:`robustmm.statistics.confidence_sequence`) is at level
    alpha / (number of settings), so all of them hold together at every look.
    """
    from collections import defaultdict

    from robustmm.comparison import ALPHA
    from robustmm.metrics import is_correct
    from robustmm.statistics import confidence_sequence

    rank = {pool.examples[i].id: k for k, i in enumerate(pool.sample_order(spec.seed))}
    by_key: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        by_key[r.attack_key][r.member][r.example_id] = r
    settings = {}
    for key, members in sorted(by_key.items()):
        p, f = members.get("prompt", {}), members.get("finetune", {})
        ids = sorted((i for i in p if i in f and is_correct(p[i].clean_score) and is_correct(f[i].clean_score)), key=rank.get)
        values = [float(not is_correct(f[i].adv_score)) - float(not is_correct(p[i].adv_score)) for i in ids]
        low, high = confidence_sequence(values, ALPHA / max(1, len(by_key)))
        settings[key] = {"n_both_correct": len(ids), "low": low, "high": high, "half_width": (high - low) / 2}
    stop = all(s["half_width"] <= spec.precision for s in settings.values())
    reason = "every CI within the precision" if stop else ("the split is exhausted" if n >= len(pool) else "")
    return {"n": n, "stop": stop, "reason": reason, "settings": settings}


def sequential_lines(state: dict, spec: RunSpec) -> list[str]:
    """The report's account of a sequential run on one dataset: stopping rule, n reached, each setting's CI."""
    from robustmm.report import md_escape, points

    lines = ["### Sequential sampling (--until-decided)", "",
             f"Examples were added in rounds of {spec.limit} (a nested seeded sample) until every setting's anytime-valid "
             f"95% confidence interval for the ASR difference (finetuned − prompt-tuned) was within ±{100 * spec.precision:g} "
             "points, or the split ran out: predictable plug-in empirical-Bernstein confidence sequences (Waudby-Smith & "
             "Ramdas 2024), each at level 0.05 / settings, valid however often they are looked at. Stopped at "
             f"**n = {state['n']}** ({state['reason'] or 'not decided'}). The fixed-n CIs in the tables above are narrower "
             "but were not designed for repeated looks; the stopping decision rests on these.", "",
             "| setting | both correct | anytime-valid CI (pts) | half-width |", "|---|---|---|---|"]
    for key, s in state["settings"].items():
        lines.append(f"| `{md_escape(key)}` | {s['n_both_correct']} | [{points(s['low'])}, {points(s['high'])}] | "
                     f"{100 * s['half_width']:.1f} |")
    return lines + [""]


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; a corrupt, empty or non-UTF-8 file is one sentence."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise RobustMMError(f"The {what} file {path} is corrupt ({err.__class__.__name__}); remove it (or the run folder) "
                            "to start afresh.") from err
    except OSError as err:
        raise RobustMMError(f"Cannot read {path} ({err.strerror or err}).") from err
    if not isinstance(data, dict):
        raise RobustMMError(f"The {what} file {path} is not a JSON object; remove it (or the run folder) to start afresh.")
    return data


def _write_json(path: Path, data: dict) -> None:
    from robustmm.report import write_atomic

    try:
        write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
    except OSError as err:
        raise RobustMMError(f"Cannot write {path} ({err.strerror or err}).") from err


def rerender(run_dir: str | Path) -> Path:
    """Re-render a run folder's report from its stored records and meta (nothing else is changed)."""
    if not (Path(run_dir) / "records.jsonl").is_file():
        raise RobustMMError(f"Run folder {run_dir} has no records.jsonl.")
    run_dir = Path(run_dir)
    with RunLock(run_dir, "robustmm report"):
        return _rerender(run_dir)


def _rerender(run_dir: Path) -> Path:
    from robustmm.records import RecordStore, load_run
    from robustmm.report import render
    from robustmm.summary import summarize

    records = load_run(run_dir)
    if RecordStore(run_dir / "records.jsonl").torn():
        log.warning("%s ends in a torn line (an interrupted write); it is not counted. Rerun the attack command to "
                    "resume the run.", run_dir / "records.jsonl")
    meta_path = run_dir / "meta.json"
    meta = _read_json(meta_path, "run metadata") if meta_path.is_file() else {"run": run_dir.name}
    seed = int(meta.get("seed", 0)) if str(meta.get("seed", 0)).isdigit() else 0
    spec = meta.get("spec") or {}
    from collections import defaultdict

    from robustmm.generation import generation_lines, read_rows
    from robustmm.summary import LABELS, MEMBERS

    task_of = {r.dataset: r.task for r in records}
    extra: dict[tuple[str, str], list[str]] = defaultdict(list)
    for dataset, state in (meta.get("sequential") or {}).items():
        extra[(task_of.get(dataset, ""), dataset)] += sequential_lines(
            state, RunSpec(limit=spec.get("limit"), precision=spec.get("precision", 0.05)))
    generated = read_rows(run_dir / "generations.jsonl")
    for dataset in sorted({r["dataset"] for r in generated}):
        extra[(task_of.get(dataset, ""), dataset)] += generation_lines([r for r in generated if r["dataset"] == dataset],
                                                                        dict(zip(MEMBERS, LABELS)))
    return render(summarize(records, seed=seed), run_dir, meta, dict(extra))
