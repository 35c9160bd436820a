"""Benchmark: the share of an attack run's wall time that the model spends in forward/backward passes.

Times every forward pass into the model's scoring (``scores_from_embeddings``) and every backward pass
(``torch.autograd.grad``), with CUDA synchronised on both sides, during ``robustmm.evaluate.run_attacks``
of PGD-10 on the default pair, and prints their sum against the wall time of the whole run: the rest is
image decoding, batching, the attack's own arithmetic, records and Python overhead. Issue target on a
GPU: >= 0.9 of PGD wall time.

    python benchmarks/bench_datapath.py [--device cuda] [--limit 256] [--batch-size 64] [--attack pgd-linf:steps=10]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustmm.attacks import parse_attack_spec
from robustmm.data import load_dataset
from robustmm.evaluate import run_attacks
from robustmm.models.pair import load_pair, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--attack", default="pgd-linf:steps=10")
    args = parser.parse_args()
    device = resolve_device(args.device)
    pair = load_pair("default", task="vqa", device=device)
    dataset = load_dataset("easy-vqa", split="test", limit=args.limit, seed=0)
    attack = parse_attack_spec(args.attack)
    spent = {"forward": 0.0, "backward": 0.0}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(kind, inner):
        def call(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            sync()
            spent[kind] += time.perf_counter() - start
            return out
        return call

    for model in pair.members().values():
        model.scores_from_embeddings = timed("forward", model.scores_from_embeddings)
    grad = torch.autograd.grad
    torch.autograd.grad = timed("backward", grad)
    try:
        sync()
        start = time.perf_counter()
        run_attacks(pair, dataset, [attack], batch_size=args.batch_size, seed=0, run="bench", store=None, existing=[])
        sync()
        wall = time.perf_counter() - start
    finally:
        torch.autograd.grad = grad
    model = spent["forward"] + spent["backward"]
    print(f"device {device}, {args.attack}, {args.limit} easy-VQA examples, both members, batch {args.batch_size}")
    print(f"wall time {wall:.2f} s: forward passes {spent['forward']:.2f} s, backward passes {spent['backward']:.2f} s")
    print(f"model share of wall time: {model / wall:.3f}   (target >= 0.90 on a GPU)")


if __name__ == "__main__":
    main()
