"""The append-only JSON-lines file of AttackRecords behind every run (resumable).

Each batch of records is appended with a single ``write`` followed by flush + fsync, so a kill at
any moment leaves at most one torn last line. Reading never changes the file: ``load`` returns the
complete records and ``torn`` says whether a torn tail follows them; a resumed ``robustmm attack``
moves that tail aside with ``set_aside_torn_tail`` (and says so) before appending.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Iterable

from robustmm.errors import RobustMMError
from robustmm.types import AttackRecord


class RecordStore:
    """``records.jsonl`` of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _complete(self) -> tuple[bytes, int]:
        """The file's bytes and the length of its complete lines (up to the last newline)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return b"", 0
        except OSError as err:
            raise RobustMMError(f"Cannot read {self.path} ({err.strerror or err}).") from err
        return data, data.rfind(b"\n") + 1

    def torn(self) -> bool:
        """Whether the file ends in a torn (incomplete) line, as a kill mid-write leaves it."""
        data, end = self._complete()
        return end < len(data)

    def load(self) -> list[AttackRecord]:
        """All complete records, in file order; a torn trailing line is ignored (the file is not touched)."""
        data, end = self._complete()
        records = []
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(AttackRecord.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError) as err:
                raise RobustMMError(f"Line {number} of {self.path} is not an attack record ({err}).") from err
        return records

    def set_aside_torn_tail(self) -> Path | None:
        """Move a torn last line to ``records.jsonl.torn-<time>`` and cut it from the file; return that file's
        path, or None when the file ends cleanly. Called before a resumed run appends."""
        data, end = self._complete()
        if end == len(data):
            return None
        aside = self.path.with_name(f"{self.path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}")
        aside.write_bytes(data[end:])
        with open(self.path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
        return aside

    def append(self, records: Iterable[AttackRecord]) -> None:
        """Append records durably (one write, flush, fsync); a full disk is one sentence saying the run resumes."""
        text = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records)
        if not text:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise RobustMMError(f"No space left on device while writing {self.path}; free some space and rerun "
                                    "the same command: the run resumes from the records already written.") from err
            raise RobustMMError(f"Cannot write {self.path} ({err.strerror or err}); rerun the same command to resume.") from err


def load_run(run_dir: str | Path) -> list[AttackRecord]:
    """The records of a run folder (its ``records.jsonl``); one clear error if there are none."""
    path = Path(run_dir) / "records.jsonl"
    if not path.is_file():
        raise RobustMMError(f"Run folder {run_dir} has no records.jsonl.")
    records = RecordStore(path).load()
    if not records:
        raise RobustMMError(f"{path} holds no records.")
    return records
