"""Cost of starting prompts at the base's activations (``init="activations"``) vs a random start.

Runs the recipe's easy-VQA prompt-tuning stage for a fraction of an epoch with each init on the
shipped base, side by side in one process, and prints the wall time of each, their ratio, and the
time taken by ``real_activations`` alone (the one extra forward pass over 256 training examples).

    python benchmarks/bench_prompt_init.py [EPOCHS=0.25]
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from robustmm.data import load_dataset
from robustmm.models import checkpoint as ckpt
from robustmm.models.lexicon import load_tokenizer
from robustmm.models.pair import DEFAULT_PAIR_DIR
from robustmm.models.unified import UnifiedVLM
from robustmm.tuning import Recipe, prompt_tune, real_activations


def main(epochs: float) -> None:
    base = DEFAULT_PAIR_DIR / "base"
    recipe = Recipe()
    stage = replace(recipe.prompt_tune, epochs=epochs)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for init in ("random", "activations", "random", "activations"):  # alternate, keep the faster repeat
            start = time.perf_counter()
            stats = prompt_tune(base, "easy-vqa", Path(tmp) / init, replace(recipe.prompt, init=init), stage, recipe.seed)
            seconds[init] = min(seconds.get(init, float("inf")), time.perf_counter() - start)
    backbone, _ = ckpt.load_backbone(base)
    train = load_dataset("easy-vqa", split="train", limit=8)
    model = UnifiedVLM(backbone, load_tokenizer(base / "vocab.txt"), train.task, train.candidates)
    start = time.perf_counter()
    real_activations(model, "easy-vqa", recipe.prompt, recipe.seed)
    capture = time.perf_counter() - start
    print(f"prompt tuning, {stats['steps']} steps: random start {seconds['random']:.1f} s, "
          f"activation start {seconds['activations']:.1f} s, ratio {seconds['activations'] / seconds['random']:.3f}; "
          f"real_activations alone {capture:.2f} s")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.25)
