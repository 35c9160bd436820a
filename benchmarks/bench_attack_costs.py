"""Seconds per example of each image attack on the shipped default pair, to compose a suite within a time budget.

For each task (easy-VQA, easy-VE) and member, on ``--n`` test examples the member answers correctly (the
runner attacks only those), runs each attack spec once in one batch and prints the wall time per attacked
example, the robust accuracy among those examples, and the clean accuracy on the sample (seconds per
*dataset* example = seconds per attacked example x clean accuracy, plus the clean forward). One intra-op
thread by default (the rate one process gets on a shared machine).

With ``--preset NAME --limit 500`` it times a preset as a runner that honours ``subset`` would run it: on
the seeded ``--limit`` sample of each dataset (the CLI's), each attack runs on the examples it covers
(:meth:`Attack.covers`) that the member answers correctly, in batches of ``--batch-size``; prints each
attack's seconds and the total.

    .venv/bin/python benchmarks/bench_attack_costs.py [--n 32] [--tasks vqa,ve] [--attacks "spec;spec;..."]
    .venv/bin/python benchmarks/bench_attack_costs.py --preset cpu-checks --limit 500
"""

from __future__ import annotations

import argparse
import time

import torch

from robustmm.attacks import AttackBatch, load_preset, parse_attack_spec
from robustmm.data import load_dataset, to_tensor
from robustmm.evaluate import gold_targets
from robustmm.models.pair import load_pair

DATASETS = {"vqa": "easy-vqa", "ve": "easy-ve"}
DEFAULT_ATTACKS = ";".join([
    "fgsm", "noise-linf", "pgd-linf:steps=10", "pgd-linf:eps=64/255,steps=10", "apgd-ce:steps=10", "apgd-ce:steps=20",
    "apgd-ce:steps=100", "apgd-dlr:steps=20", "square:queries=100", "square:queries=1000",
    "worst-case:steps=20,queries=100", "worst-case:steps=20,queries=1000", "worst-case:steps=100,queries=1000",
])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="correctly answered examples per task and member")
    parser.add_argument("--tasks", default="vqa,ve")
    parser.add_argument("--attacks", default=DEFAULT_ATTACKS, help="';'-separated attack specs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", help="time this preset on --limit examples per dataset instead")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.preset:
        return time_preset(args)
    specs = [s for s in args.attacks.split(";") if s.strip()]
    print(f"{args.n} correctly answered test examples per task and member, threads={torch.get_num_threads()}")
    print(f"{'task':4s} {'member':8s} {'attack':100s} {'s/attacked ex':>13s} {'robust':>7s}")
    for task in args.tasks.split(","):
        pair = load_pair("default", task=task, device="cpu")
        examples = list(load_dataset(DATASETS[task], split="test", limit=4 * args.n, seed=0))
        pixels = to_tensor([e.image for e in examples], pair.finetuned.image_size)
        for member, model in pair.members().items():
            targets = gold_targets(examples, model.candidates, task)
            start = time.perf_counter()
            with torch.no_grad():
                right = model.candidate_scores(pixels, [e.text for e in examples]).argmax(1) == targets
            clean_seconds = (time.perf_counter() - start) / len(examples)
            keep = right.nonzero().flatten()[: args.n].tolist()
            batch = AttackBatch([examples[i] for i in keep], pixels[keep], [examples[i].text for i in keep], targets[keep])
            print(f"{task:4s} {member:8s} clean accuracy {float(right.float().mean()):.3f} on {len(examples)}; "
                  f"clean forward {clean_seconds:.4f} s/example")
            for spec in specs:
                attack = parse_attack_spec(spec)
                start = time.perf_counter()
                result = attack.run(model, batch)
                seconds = (time.perf_counter() - start) / len(batch)
                robust = float((result.scores.argmax(1) == batch.targets).float().mean())
                print(f"{task:4s} {member:8s} {attack.key():100s} {seconds:13.3f} {robust:7.3f}", flush=True)
    return 0


def time_preset(args) -> int:
    """Each attack of the preset on the examples it covers and the member answers correctly, in full batches."""
    attacks = load_preset(args.preset)
    print(f"preset {args.preset} on {args.limit} test examples per dataset (seed 0), batches of {args.batch_size}, "
          f"threads={torch.get_num_threads()}")
    total = 0.0
    for task in args.tasks.split(","):
        pair = load_pair("default", task=task, device="cpu")
        examples = list(load_dataset(DATASETS[task], split="test", limit=args.limit, seed=0))
        pixels = to_tensor([e.image for e in examples], pair.finetuned.image_size)
        for member, model in pair.members().items():
            targets = gold_targets(examples, model.candidates, task)
            with torch.no_grad():
                right = torch.cat([model.candidate_scores(pixels[i:i + 256], [e.text for e in examples[i:i + 256]]).argmax(1)
                                   for i in range(0, len(examples), 256)]) == targets
            for attack in attacks:
                chosen = [i for i, e in enumerate(examples) if right[i] and attack.covers(0, e.id)]
                start = time.perf_counter()
                for first in range(0, len(chosen), args.batch_size):
                    rows = chosen[first:first + args.batch_size]
                    attack.run(model, AttackBatch([examples[i] for i in rows], pixels[rows], [examples[i].text for i in rows],
                                                  targets[rows]))
                seconds = time.perf_counter() - start
                total += seconds
                print(f"{task:4s} {member:8s} {attack.key():110s} {len(chosen):4d} examples {seconds:8.1f} s", flush=True)
    print(f"total {total:.1f} s ({total / 60:.1f} min) for 2 members x {len(args.tasks.split(','))} datasets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
