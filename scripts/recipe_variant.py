"""Run the default-pair recipe with some settings changed and print one JSON line of results.

For searching recipes on a GPU machine, several variants side by side (one process each):

    python scripts/recipe_variant.py NAME '{"pretrain": {"epochs": 8, "lr": 0.001}, "model": {"ffn": "geglu"}}' OUT

Overrides are a JSON object whose keys are ``Recipe`` fields; a dict value replaces fields of
that nested config (``model``, ``prompt``, ``pretrain``, ``finetune``, ...). The line printed
holds the test accuracy of each member, the base's image-text matching accuracy (chance 0.5),
final losses and seconds per stage. The shipped recipe was chosen this way (see README).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from robustmm.models.pair import resolve_device
from robustmm.tuning import make_pair, recipe_with_overrides


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    name, overrides, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]) / sys.argv[1]
    torch.set_num_threads(2)
    start = time.perf_counter()
    report = make_pair(recipe_with_overrides(overrides), out, resolve_device("auto"))
    print(json.dumps({
        "variant": name, "overrides": overrides, "device": report["device"],
        "accuracy": {k: round(v["test_accuracy"], 4) for k, v in report["accuracy"].items()},
        "base_matching": {k: round(v, 4) for k, v in report["base_matching"].items()},
        "final_loss": {k: round(v.get("final_loss") or 0.0, 4) for k, v in report["stages"].items()},
        "seconds": {k: round(v.get("seconds", 0.0), 1) for k, v in report["stages"].items()},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
