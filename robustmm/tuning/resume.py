"""Mid-stage progress of a training loop, saved so that an interrupted stage resumes exactly.

A stage's progress is one safetensors file: the trained parameters, the AdamW state and the torch
RNG state as tensors, and, as JSON in the file's metadata, the step reached, the running loss, the
seconds trained, the state of the stage's own ``random.Random`` (pretraining draws its wrong
captions from it) and a fingerprint of the stage's settings. :func:`robustmm.tuning.loop.fit` writes it
every ``SAVE_EVERY`` seconds, when the user interrupts (Ctrl-C is deferred to the end of the step
under way), and once more when the stage's last step is done. Everything a step depends on is
restored, so a resumed stage ends bit-identical to an uninterrupted one. The file is written to a
temporary name and renamed, so a ``kill -9`` leaves the previous file whole.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from robustmm.errors import RobustMMError

SAVE_EVERY = 60.0  # seconds between progress files (a lost process loses at most this much training)


@dataclass(frozen=True)
class Progress:
    """Where a stage stands: ``step`` steps done (of the fingerprint's ``steps``), the running loss,
    seconds trained so far, and whether the last step is done."""

    step: int
    running: float | None
    seconds: float
    done: bool = False


def save_progress(path: Path, parameters: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                  rng: random.Random | None, fingerprint: dict, progress: Progress) -> None:
    """Write ``path`` (atomically): parameters, optimiser state, torch RNG state, and ``progress``."""
    from safetensors.torch import save_file

    tensors = {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(parameters)}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {"fingerprint": fingerprint, "step": progress.step, "running": progress.running,
            "seconds": progress.seconds, "done": progress.done,
            "rng": None if rng is None else _jsonable(rng.getstate())}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"progress": json.dumps(meta)})
    os.replace(tmp, path)


def load_progress(path: Path, parameters: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                  rng: random.Random | None, fingerprint: dict) -> Progress | None:
    """Restore what :func:`save_progress` wrote into ``parameters``, ``optimizer``, ``rng`` and the torch
    RNG, and return the progress; None if there is no file. A file written by a stage with other
    settings, or an unreadable one, is refused in one sentence."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads(handle.metadata()["progress"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as err:
        raise RobustMMError(f"Training progress file {path} is corrupt ({err}); delete it to start the stage afresh.") from err
    if meta["fingerprint"] != json.loads(json.dumps(fingerprint)):
        raise RobustMMError(f"{path} holds the progress of a stage run with other settings; delete it "
                            "(or write to another --out) to start this one afresh.")
    with torch.no_grad():
        for i, p in enumerate(parameters):
            p.copy_(tensors[f"param.{i}"])
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    torch.set_rng_state(tensors["torch_rng"])
    if rng is not None and meta["rng"] is not None:
        rng.setstate(_tupled(meta["rng"]))
    return Progress(meta["step"], meta["running"], meta["seconds"], meta["done"])


def _jsonable(state):
    return [_jsonable(x) for x in state] if isinstance(state, tuple) else state


def _tupled(state):
    return tuple(_tupled(x) for x in state) if isinstance(state, list) else state


class DeferredInterrupt:
    """Context manager: a first Ctrl-C (SIGINT) only sets ``requested``, for the loop to stop at the end
    of its step; a second one interrupts at once. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
