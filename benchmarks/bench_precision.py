"""Training speed in bf16 mixed precision (``StageConfig.precision="bf16"``) vs fp32.

Runs a short slice of each recipe stage kind, pretraining (the recipe's objectives, from scratch),
easy-VQA finetuning and easy-VQA prompt tuning (both on the shipped base), in fp32 and in bf16,
alternating and keeping the faster of two repeats, in one process on one device, and prints the
wall time of each and the fp32 / bf16 ratio. Speed only: whether a bf16 recipe reaches the same
accuracy is a question for whole runs (README, "How the recipe was found").

    python benchmarks/bench_precision.py [STEPS=40] [--device cpu|cuda]
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from robustmm.models.pair import DEFAULT_PAIR_DIR
from robustmm.tuning import Recipe, finetune, pretrain, prompt_tune


def main(steps: int, device: str) -> None:
    recipe, base = Recipe(), DEFAULT_PAIR_DIR / "base"
    images = steps * (recipe.pretrain.batch_size // len(recipe.objectives))  # one pretraining epoch = `steps` steps
    examples = steps * recipe.finetune.batch_size
    stages = {
        "pretrain": lambda stage, out: pretrain(replace(recipe, pretrain=stage), out, device),
        "finetune easy-vqa": lambda stage, out: finetune(base, "easy-vqa", out, stage, recipe.seed, device),
        "prompt-tune easy-vqa": lambda stage, out: prompt_tune(base, "easy-vqa", out, recipe.prompt, stage, recipe.seed, device),
    }
    configs = {
        "pretrain": replace(recipe.pretrain, epochs=1.0, limit=images),
        "finetune easy-vqa": replace(recipe.finetune, epochs=1.0, limit=examples),
        "prompt-tune easy-vqa": replace(recipe.prompt_tune, epochs=1.0, limit=examples),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in stages.items():
            seconds = {}
            for precision in ("fp32", "bf16", "fp32", "bf16"):
                stats = run(replace(configs[name], precision=precision), Path(tmp) / f"{name}-{precision}")
                seconds[precision] = min(seconds.get(precision, float("inf")), stats["seconds"])
            print(f"{name}, {stats['steps']} steps on {device}: fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s, "
                  f"fp32 / bf16 {seconds['fp32'] / seconds['bf16']:.2f}", flush=True)


if __name__ == "__main__":
    from _cli import run_with_steps  # benchmarks/ is on sys.path when a benchmark runs as a script

    run_with_steps(main, __doc__, 40)
