"""Training time of the whole recipe, estimated from short slices of every stage, for two recipes side by side.

The shipped recipe (``Recipe()``: seed 1, six pretraining objectives, GEGLU blocks with ffn_mult 2) and a
variant each train ``STEPS`` steps of each of their five stages, alternating recipes stage by stage, in one
process on one device. By default the variant is the wide-FFN recipe the shipped one replaced, read whole from
``benchmarks/wide-ffn-recipe.json``, that pair's own ``recipe.json`` (ffn_mult 4; easy-VQA prompts of length 64,
5 epochs at lr 5e-3 in batches of 64; 20 easy-VE prompt epochs at lr 5e-3); ``--vs`` takes any other as JSON
overrides of ``Recipe`` fields (``robustmm.tuning.recipe_with_overrides``), e.g. fewer easy-VE prompt epochs:
``--vs '{"prompt_tune_ve": {"epochs": 10}}'``. Each recipe's downstream slices start from its own
slice-pretrained base, so a variant with another model config is timed with its own architecture.
Seconds per step x the stage's full step count (``robustmm.tuning.step_count``) gives each stage's
minutes; the printed ratio of the totals does not depend on how fast the machine is that day, the
minutes do. As in ``recipe.json``, a stage's time is its optimisation loop (loading and the prompts'
one activation pass, a few seconds, are left out).

    python benchmarks/bench_recipe.py [STEPS=30] [--device cpu|cuda] [--vs JSON] [--name NAME]
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from robustmm.data import load_dataset
from robustmm.errors import RobustMMError
from robustmm.models.prompts import PromptConfig
from robustmm.tuning import (Recipe, StageConfig, finetune, pretrain, pretraining_facts, prompt_tune, recipe_with_overrides,
                             step_count)

# The recipe.json of the pair shipped from 2026-11-25 to 2026-12-05, kept beside this script (its reports were
# removed from the tree; docs/studies.md has their numbers): the whole recipe is read from it, so no field of the
# shipped recipe leaks into the variant.
WIDE_FFN_RECIPE = Path(__file__).resolve().parent / "wide-ffn-recipe.json"


def wide_ffn_recipe() -> Recipe:
    """The wide-FFN pair's recipe, every field as stored in its recipe.json."""
    return recipe_with_overrides(json.loads(WIDE_FFN_RECIPE.read_text())["recipe"])


def stage_runs(recipe: Recipe, steps: int, device: str, tmp: Path) -> dict[str, Callable[[], float]]:
    """Per stage of ``recipe``: a function that trains ``steps`` steps of it and returns the full stage's estimated minutes.

    The pretraining slice (first) saves the base that the downstream slices start from."""
    base = tmp / "base"
    per_step = recipe.pretrain.batch_size // len(recipe.objectives)  # images per pretraining step
    train_size = {name: len(load_dataset(name, split="train")) for name in recipe.datasets}

    def minutes(stats: dict, n: int, epochs: float, batch_size: int) -> float:
        """Seconds per timed step x the full stage's steps over ``n`` examples (images when pretraining), in minutes."""
        return stats["seconds"] / stats["steps"] * step_count(n, batch_size, epochs) / 60

    def pretraining() -> float:
        stats = pretrain(replace(recipe, pretrain=replace(recipe.pretrain, epochs=1.0, limit=steps * per_step)), base, device)
        return minutes(stats, len(pretraining_facts()[0]), recipe.pretrain.epochs, per_step)

    def finetuning(name: str, stage: StageConfig) -> float:
        stats = finetune(base, name, tmp / f"{name}-ft", replace(stage, epochs=1.0, limit=steps * stage.batch_size), recipe.seed, device)
        return minutes(stats, train_size[name], stage.epochs, stage.batch_size)

    def prompting(name: str, stage: StageConfig, prompt: PromptConfig) -> float:
        stats = prompt_tune(base, name, tmp / f"{name}-pt", prompt, replace(stage, epochs=1.0, limit=steps * stage.batch_size),
                            recipe.seed, device)
        return minutes(stats, train_size[name], stage.epochs, stage.batch_size)

    runs = {"pretrain": pretraining}
    for name in recipe.datasets:
        ft, pt, prompt = recipe.for_dataset(name)
        runs[f"{name}/finetune"] = lambda name=name, ft=ft: finetuning(name, ft)
        runs[f"{name}/prompt"] = lambda name=name, pt=pt, prompt=prompt: prompting(name, pt, prompt)
    return runs


def main(steps: int, device: str, variant: Recipe, name: str) -> None:
    recipes = {"shipped": Recipe(), name: variant}
    minutes: dict[str, dict[str, float]] = {label: {} for label in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {label: stage_runs(recipe, steps, device, Path(tmp) / label) for label, recipe in recipes.items()}
        for stage in runs["shipped"]:  # alternate the recipes stage by stage
            for label in recipes:
                minutes[label][stage] = runs[label][stage]()
            print(f"{stage:22s} shipped {minutes['shipped'][stage]:5.1f} min   {name} {minutes[name][stage]:5.1f} min", flush=True)
    total = {label: sum(m.values()) for label, m in minutes.items()}
    print(f"whole recipe on {device}, by {steps}-step slices: shipped {total['shipped']:.1f} min, "
          f"{name} {total[name]:.1f} min, shipped / {name} {total['shipped'] / total[name]:.2f}")


if __name__ == "__main__":
    from _cli import device_of, slice_parser  # benchmarks/ is on sys.path when a benchmark runs as a script

    parser = slice_parser(__doc__, 30)
    parser.add_argument("--vs", help="the variant as JSON overrides of Recipe fields (default: the wide-FFN recipe it replaced)")
    parser.add_argument("--name", help="the variant's label (default: wide-ffn, or 'variant' with --vs)")
    args = parser.parse_args()
    try:
        variant = recipe_with_overrides(json.loads(args.vs)) if args.vs else wide_ffn_recipe()
    except (ValueError, RobustMMError) as err:  # bad JSON, an unknown field or a bad value
        parser.error(f"--vs: {err}")
    main(args.steps, device_of(args), variant, args.name or ("variant" if args.vs else "wide-ffn"))
