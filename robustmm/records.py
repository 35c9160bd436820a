"""The append-only JSON-lines file of AttackRecords behind every run (resumable).

Each batch of records is appended with a single ``write`` followed by flush + fsync, so a
kill at any moment leaves at most one torn last line; ``load`` drops it (and truncates the
file back to its last complete line). ``rewrite`` replaces the file atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from robustmm.errors import RobustMMError
from robustmm.types import AttackRecord


class RecordStore:
    """``records.jsonl`` of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[AttackRecord]:
        """All complete records; a torn trailing line (from a kill mid-write) is cut off the file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        records = []
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(AttackRecord.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError) as err:
                raise RobustMMError(f"Line {number} of {self.path} is not an attack record ({err}).") from err
        return records

    def append(self, records: Iterable[AttackRecord]) -> None:
        """Append records durably (one write, flush, fsync)."""
        text = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, records: Iterable[AttackRecord]) -> None:
        """Replace the file's content atomically (temporary file + rename)."""
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.path)


def load_run(run_dir: str | Path) -> list[AttackRecord]:
    """The records of a run folder (its ``records.jsonl``); one clear error if there are none."""
    path = Path(run_dir) / "records.jsonl"
    if not path.is_file():
        raise RobustMMError(f"Run folder {run_dir} has no records.jsonl.")
    records = RecordStore(path).load()
    if not records:
        raise RobustMMError(f"{path} holds no records.")
    return records
