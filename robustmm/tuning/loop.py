"""The training loop every stage shares (``fit``: AdamW, warm-up + cosine, resumable progress), the
decoded-image cache, batch order, and batched prediction / accuracy of a trained model."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from robustmm.data.dataset import Dataset
from robustmm.data.images import to_tensor
from robustmm.tuning import resume
from robustmm.tuning.recipe import StageConfig

log = logging.getLogger(__name__)


class ImageCache:
    """Decoded images kept as one uint8 tensor (N, 3, S, S) on ``device``; ``pixels(rows)`` gives floats in [0, 1]."""

    def __init__(self, images: Sequence, size: int, device: str | torch.device = "cpu") -> None:
        self.index: dict[str, int] = {}
        unique = []
        for image in images:
            key = str(image)
            if key not in self.index:
                self.index[key] = len(unique)
                unique.append(image)
        chunks = [(to_tensor(unique[i : i + 512], size) * 255).round().to(torch.uint8) for i in range(0, len(unique), 512)]
        data = torch.cat(chunks) if chunks else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        self.data = data.to(device)

    def rows(self, images: Sequence) -> torch.Tensor:
        return torch.tensor([self.index[str(image)] for image in images], dtype=torch.long, device=self.data.device)

    def pixels(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data[rows].float() / 255.0


def step_count(n: int, batch_size: int, epochs: float) -> int:
    """Optimisation steps of ``epochs`` (fractional allowed) passes over ``n`` examples in batches of ``batch_size``."""
    return max(1, int(round(epochs * n / batch_size)))


def batches(n: int, batch_size: int, epochs: float, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches over ``epochs`` (fractional allowed) reshuffled passes of ``range(n)``."""
    total = step_count(n, batch_size, epochs)
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(total):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        yield order[position : position + batch_size]
        position += batch_size


def _schedule(step: int, total: int, warmup: float) -> float:
    warm = max(1, int(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())


def fit(parameters: list[torch.nn.Parameter], loss_fn: Callable[[torch.Tensor], torch.Tensor], n: int,
        stage: StageConfig, seed: int, description: str, progress_file: Path | None = None,
        rng: random.Random | None = None) -> dict:
    """Minimise ``loss_fn(index_batch)`` with AdamW; returns steps, final loss and seconds.

    The batch order comes from a CPU generator seeded with ``seed``, so it is the same on every device;
    index batches are moved to the parameters' device. With ``progress_file`` the stage's progress is
    saved there (``robustmm.tuning.resume``: every minute, on Ctrl-C at the end of the step under way, and
    when done) and a rerun resumes from it bit-identically; ``rng`` is a ``random.Random`` that
    ``loss_fn`` draws from, saved and restored with it. Without a terminal (a log file), a line
    is printed every 5% of the steps.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=stage.weight_decay)
    device = parameters[0].device
    plan = list(batches(n, stage.batch_size, stage.epochs, generator))
    fingerprint = {"description": description, "stage": asdict(stage), "seed": seed, "examples": n, "steps": len(plan),
                   "shapes": [list(p.shape) for p in parameters]}
    resumed = resume.load_progress(progress_file, parameters, optimizer, rng, fingerprint) if progress_file else None
    resumed = resumed or resume.Progress(0, None, 0.0)
    if resumed.done:
        log.info("%s: already trained (%s)", description, progress_file)
        return {"steps": len(plan), "final_loss": resumed.running, "seconds": resumed.seconds}
    running, start = resumed.running, time.perf_counter()

    def save(step: int, finished: bool = False) -> None:
        if progress_file is not None:
            seconds = resumed.seconds + time.perf_counter() - start
            resume.save_progress(progress_file, parameters, optimizer, rng, fingerprint,
                                   resume.Progress(step, running, seconds, finished))

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar, resume.DeferredInterrupt() as interrupt:
        task = bar.add_task(description, total=len(plan), completed=resumed.step, loss="-")
        if resumed.step:
            bar.console.print(f"{description}: resuming at step {resumed.step}/{len(plan)} from {progress_file}")
        every, saved = max(1, len(plan) // 20), time.perf_counter()
        for step in range(resumed.step, len(plan)):
            for group in optimizer.param_groups:
                group["lr"] = stage.lr * _schedule(step, len(plan), stage.warmup)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=stage.precision == "bf16"):
                loss = loss_fn(plan[step].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(task, advance=1, loss=f"{running:.3f}")
            if not bar.console.is_terminal and (step + 1) % every == 0:
                bar.console.print(f"{description}: step {step + 1}/{len(plan)}, loss {running:.3f}, "
                                  f"{(resumed.seconds + time.perf_counter() - start) / 60:.1f} min")
            if interrupt.requested or time.perf_counter() - saved > resume.SAVE_EVERY:
                save(step + 1)
                saved = time.perf_counter()
            if interrupt.requested:
                raise KeyboardInterrupt
    save(len(plan), finished=True)
    return {"steps": len(plan), "final_loss": running, "seconds": resumed.seconds + time.perf_counter() - start}


def progress_folder(out: Path) -> Path:
    """``<out>.progress/``: the progress files of the stages writing checkpoint folder ``out``."""
    return Path(out).with_name(Path(out).name + ".progress")


def progress_path(out: Path, description: str) -> Path:
    """Where stage ``description`` writing checkpoint folder ``out`` keeps its progress (removed once the
    checkpoint is saved)."""
    return progress_folder(out) / (description.replace(" ", "-").replace(",", "") + ".safetensors")


def forget_progress(out: Path) -> None:
    import shutil

    shutil.rmtree(progress_folder(out), ignore_errors=True)


@torch.no_grad()
def predictions(model, images: Sequence, texts: Sequence[str], batch_size: int = 256) -> list[str]:
    """``model.predict`` over N (image, text) pairs in batches: N answers."""
    answers = []
    for start in range(0, len(texts), batch_size):
        pixels = to_tensor(images[start : start + batch_size], model.image_size).to(model.device)
        answers += model.predict(pixels, texts[start : start + batch_size])
    return answers


def accuracy(model, dataset: Dataset, batch_size: int = 256) -> float:
    """Mean official score (VQA accuracy / exact match) of ``model.predict`` over ``dataset``."""
    from robustmm.metrics import answer_score

    examples = dataset.examples
    answers = predictions(model, [e.image for e in examples], [e.text for e in examples], batch_size)
    return sum(answer_score(a, e.answers, e.task.value) for a, e in zip(answers, examples)) / len(dataset)
