"""One process at a time per run folder: an OS file lock held for the life of a run.

``robustmm attack`` (and ``robustmm report``) take an exclusive ``flock`` on ``<run folder>/.lock``
before writing anything there; a second process finds it taken and stops with a sentence naming
the holder (pid, host, start time, as the holder wrote them into the file). The operating system
releases the lock when its holder exits in any way (Ctrl-C, crash, ``kill -9``), so a lock file
left behind by a dead process is stale by construction and is simply taken over.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from robustmm.errors import RobustMMError


class RunLock:
    """Context manager: hold ``<folder>/.lock`` exclusively, or raise RobustMMError naming its holder."""

    def __init__(self, folder: str | Path, purpose: str = "robustmm attack") -> None:
        self.path = Path(folder) / ".lock"
        self.purpose = purpose
        self._handle = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise RobustMMError(f"Run folder {self.path.parent} is in use by {holder}; wait for it to finish, or give "
                                "this run another --name.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"{holder['purpose']} (pid {holder['pid']} on {holder['host']}, since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another robustmm process"
