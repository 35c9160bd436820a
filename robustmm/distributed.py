"""Scale-out with ``torch.distributed`` under ``torchrun`` (one process per GPU or CPU slot, any number of nodes).

``torchrun --nproc_per_node=N -m robustmm attack ...`` runs the same command in N processes. Each one

1. loads everything, computes the run identity and checks that every rank agrees on it;
2. (rank 0) takes the run-folder lock, checks and writes run.json, and sets aside torn record tails;
   every rank then confirms it can see run.json (the folder must be on storage all nodes share);
3. reads every record already stored (``records.jsonl`` and any ``records.rank-*.jsonl`` a crashed run
   left) and takes its share of the examples that still miss a record: strided over the dataset's
   order (rank r takes the r-th, (r+N)-th, ... such example), all members and attacks of an example on
   one rank, so its clean answers are computed once;
4. appends its records to ``records.rank-<r>.jsonl`` (the same append + fsync rules as records.jsonl);
5. after a barrier, rank 0 merges every file into ``records.jsonl`` (written to a temporary file,
   fsynced and renamed), checks that every planned (dataset, member, attack, example) unit is there
   exactly once, renders the report, and only then deletes the rank files.

Records are pure functions of (settings, member, attack key, example) (:mod:`robustmm.seeding`, batch-
invariant scoring), so the merged records equal a one-process run's, timing fields aside. A relaunch
with any N resumes from whatever every file holds. A failure on a rank is gathered at the next
synchronisation point and reported by rank 0 in one sentence; a killed rank makes torchrun stop the
others. Backend: NCCL when every rank has its own CUDA device (rank r uses ``cuda:LOCAL_RANK``), Gloo
otherwise. A plain ``robustmm attack`` (no torchrun) is the N = 1 case and starts no process group.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from robustmm.errors import RobustMMError

log = logging.getLogger(__name__)

RANK_FILE = "records.rank-{}.jsonl"
PROGRESS_FILE = "progress.rank-{}.json"


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_environment() -> Ranks | None:
    """The job this process belongs to, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); None when
    not launched by torchrun or launched with one process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise RobustMMError(f"torchrun's RANK / WORLD_SIZE / LOCAL_RANK are not whole numbers ({err}).") from err
    return Ranks(rank, world, local) if world > 1 else None


def start(ranks: Ranks, device: str) -> torch.device:
    """Join the process group (NCCL on per-rank CUDA devices, else Gloo); return this rank's device."""
    import torch.distributed as dist

    wants_cuda = device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > ranks.local_rank
    if device == "cuda" and not wants_cuda:
        raise RobustMMError(f"Device cuda was requested but rank {ranks.rank} has no CUDA device {ranks.local_rank}.")
    backend = "nccl" if wants_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if wants_cuda:
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def gather(value) -> list:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def agree(ok: bool, message: str) -> None:
    """Every rank reports whether its step went well; if any did not, raise (on every rank) the first
    failing rank's sentence, so all stop together and rank 0 prints it."""
    results = gather((ok, message))
    for rank, (fine, text) in enumerate(results):
        if not fine:
            raise RobustMMError(text if rank == 0 else f"rank {rank}: {text}")


def shard(example_ids: list[str], ranks: Ranks | None) -> set[str]:
    """This rank's share of ``example_ids`` (in their stable order): every N-th from position ``rank``."""
    if ranks is None:
        return set(example_ids)
    return set(example_ids[ranks.rank::ranks.world])


def rank_files(run_dir: Path) -> list[Path]:
    """The per-rank record files in ``run_dir`` (from this job or an interrupted one), by rank number."""
    def number(path: Path) -> int:
        try:
            return int(path.name.split(".")[1].split("-")[1])
        except (IndexError, ValueError):
            return 1 << 30

    return sorted(run_dir.glob("records.rank-*.jsonl"), key=number)


def merge(run_dir: Path, planned: set[tuple]) -> list:
    """Merge records.jsonl and every rank file into records.jsonl (atomically), check that each planned unit
    is present exactly once, then delete the rank files; returns the merged records.

    Two copies of a unit are allowed only if equal apart from timing (a merge interrupted after writing
    records.jsonl and before deleting the rank files leaves such copies); anything else, or a missing
    unit, is one sentence and nothing is deleted.
    """
    from robustmm.records import RecordStore
    from robustmm.report import write_atomic

    sources = [run_dir / "records.jsonl", *rank_files(run_dir)]
    merged: dict[tuple, object] = {}
    for path in sources:
        for record in RecordStore(path).load():
            seen = merged.get(record.key)
            if seen is not None and _untimed(seen) != _untimed(record):
                raise RobustMMError(f"Unit {record.key} appears twice with different results ({path.name} and another file); "
                                    "the run folder mixes two runs: remove it and run again.")
            merged.setdefault(record.key, record)
    missing = sorted(planned - set(merged))
    if missing:
        raise RobustMMError(f"{len(missing)} planned records are missing after every rank finished (first: {missing[0]}); "
                            "nothing was deleted: rerun the same command to complete them.")
    records = list(merged.values())
    write_atomic(run_dir / "records.jsonl", "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records))
    for path in sources[1:]:
        path.unlink()
    return records


def _untimed(record) -> dict:
    row = record.to_json()
    row.pop("seconds", None)
    return row


class RankProgress:
    """The runner's progress callback on a rank: counts per (dataset, member, attack key) written to
    ``<run>/logs/progress.rank-<r>.json`` every ``every`` seconds (and at ``close``), for rank 0 to show."""

    def __init__(self, run_dir: Path, rank: int, dataset: str, every: float = 2.0, inner=None) -> None:
        self.path = run_dir / "logs" / PROGRESS_FILE.format(rank)
        self.dataset, self.every, self.inner = dataset, every, inner
        self.counts: dict[str, int] = {}
        self.written = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, member: str, attack_key: str, n: int) -> None:
        key = f"{self.dataset}|{member}|{attack_key}"
        self.counts[key] = self.counts.get(key, 0) + n
        if self.inner is not None:
            self.inner(member, attack_key, n)
        if time.monotonic() - self.written > self.every:
            self.flush()

    def flush(self) -> None:
        from robustmm.report import write_atomic

        previous = _read_counts(self.path)
        write_atomic(self.path, json.dumps({**previous, **self.counts}))
        self.written = time.monotonic()

    def grow(self, totals: dict[str, int]) -> None:
        if self.inner is not None and hasattr(self.inner, "grow"):
            self.inner.grow(totals)

    def close(self) -> None:
        self.flush()
        if self.inner is not None and hasattr(self.inner, "close"):
            self.inner.close()


def _read_counts(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class OtherRanks:
    """On rank 0: a thread that adds the other ranks' progress files to rank 0's display every ``every`` s."""

    def __init__(self, run_dir: Path, ranks: Ranks, dataset: str, display, every: float = 2.0) -> None:
        self.files = [run_dir / "logs" / PROGRESS_FILE.format(r) for r in range(1, ranks.world)]
        self.dataset, self.display, self.every = dataset, display, every
        self.shown: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.refresh()

    def refresh(self) -> None:
        total: dict[str, int] = {}
        for path in self.files:
            for key, n in _read_counts(path).items():
                if key.startswith(self.dataset + "|"):
                    total[key] = total.get(key, 0) + n
        for key, n in total.items():
            _, member, attack_key = key.split("|", 2)
            delta = n - self.shown.get(key, 0)
            if delta > 0:
                self.display(member, attack_key, delta)
                self.shown[key] = n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.refresh()
