"""robustmm's apgd-ce against plain ``torchattacks.APGD`` on the same model, batch and random starts.

On one batch of easy-VQA test examples the model answers correctly (what the runner attacks), from ONE run:
robustmm's ``apgd-ce`` attack (``attack.run``: tokenising the texts, per-example random starts, APGD, the
no-grad forward that scores the result) against ``torchattacks.APGD(loss='ce')`` called directly on a
ClassifierView of the same batch plus the same scoring forward, handed robustmm's per-example starting
draws (see ``_same_draws.py``). Prints both times (medians over ``--repeats`` interleaved repeats after a
warm-up), their ratio (target <= 1.10), both robust accuracies (must be equal) and whether the adversarial
pixels are identical. One intra-op thread by default (stable ratios on a shared machine).

Then, on the same batch, the worst-case ensemble (``--worst-case`` spec) next to PGD-10: the robust
accuracy of each and how many examples each component ran on and broke (the ensemble's cost follows the
examples still robust, not the batch).

    .venv/bin/python benchmarks/bench_apgd.py [--model PATH] [--n 32] [--steps 100] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import DEFAULT_MODEL, timed  # noqa: E402
from _same_draws import random_tensors_are  # noqa: E402

from robustmm.attacks import AttackBatch, get_attack, parse_attack_spec, parse_number  # noqa: E402
from robustmm.attacks.apgd import run_draws  # noqa: E402
from robustmm.attacks.base import attack_mode  # noqa: E402
from robustmm.attacks.image import ClassifierView  # noqa: E402
from robustmm.data import load_dataset, to_tensor  # noqa: E402
from robustmm.errors import RobustMMError  # noqa: E402
from robustmm.evaluate import gold_targets  # noqa: E402
from robustmm.models.checkpoint import load_model  # noqa: E402

def correct_batch(model, n: int, seed: int) -> AttackBatch:
    """``n`` easy-VQA test examples the model answers correctly (the runner attacks only those)."""
    examples = list(load_dataset("easy-vqa", split="test", limit=4 * n, seed=0))
    pixels = to_tensor([e.image for e in examples], model.image_size).to(model.device)
    targets = gold_targets(examples, model.candidates, "vqa").to(model.device)
    with torch.no_grad():
        right = (model.candidate_scores(pixels, [e.text for e in examples]).argmax(1) == targets).nonzero().flatten()
    keep = right[:n].tolist()
    chosen = [examples[i] for i in keep]
    return AttackBatch(chosen, pixels[keep], [e.text for e in chosen], targets[keep], seed=seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint folder (default: shipped easy-VQA finetuned)")
    parser.add_argument("--n", type=int, default=32, help="examples in the batch")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="run seed (the per-example draws come from it)")
    parser.add_argument("--worst-case", default="worst-case:steps=100,queries=1000",
                        help="the ensemble spec to compare with PGD-10 ('' to skip)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable ratios on a shared machine; 0 = torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import torchattacks
    import torchattacks.attacks.apgd as torchattacks_apgd

    try:
        model = load_model(args.model)
    except RobustMMError as err:
        print(f"bench_apgd: {err} (give --model PATH)", file=sys.stderr)
        return 2
    eps = parse_number(args.eps, "eps")
    batch = correct_batch(model, args.n, args.seed)
    attack = get_attack("apgd-ce", norm=args.norm, eps=eps, steps=args.steps, restarts=1)
    # robustmm's per-example draws of run 0, handed to torchattacks' one torch.rand / torch.randn call for the batch
    draws = run_draws(attack.example_seeds(batch), 0, args.norm, tuple(batch.pixels.shape[1:]))

    def robustmm_apgd():
        return attack.run(model, batch)

    def plain_apgd():
        with attack_mode(model):  # the same eval mode and frozen parameters robustmm uses
            view = ClassifierView(model, batch.texts)
            plain = torchattacks.APGD(view, norm="Linf" if args.norm == "linf" else "L2", eps=eps, steps=args.steps,
                                      n_restarts=1, loss="ce")
            with random_tensors_are(torchattacks_apgd, draws):
                adv = plain(batch.pixels, batch.targets)
            with torch.no_grad():
                return adv, view(adv)

    robustmm_apgd(), plain_apgd()  # warm-up
    t_ours, t_plain = [], []
    for _ in range(args.repeats):
        seconds, ours = timed(robustmm_apgd)
        t_ours.append(seconds)
        seconds, (adv_plain, scores_plain) = timed(plain_apgd)
        t_plain.append(seconds)
    mine, theirs = statistics.median(t_ours), statistics.median(t_plain)
    labels = batch.targets
    acc_ours = float((ours.scores.argmax(1) == labels).float().mean())
    acc_plain = float((scores_plain.argmax(1) == labels).float().mean())
    same_pixels = torch.equal(ours.pixels.to(adv_plain.device), adv_plain)
    print(f"model {args.model}  batch {len(batch)} correctly answered easy-VQA test examples  APGD-CE {args.norm} "
          f"eps={args.eps} steps={args.steps} restarts=1 seed={args.seed}  threads={torch.get_num_threads()}  "
          f"repeats={args.repeats} (medians)")
    print(f"robustmm apgd-ce {mine:8.2f} s   torchattacks.APGD {theirs:8.2f} s   ratio {mine / theirs:.3f} (target <= 1.10; "
          f"fastest repeats {min(t_ours) / min(t_plain):.3f})")
    print(f"robust accuracy  robustmm {acc_ours:.4f}  torchattacks {acc_plain:.4f}  "
          f"{'match' if acc_ours == acc_plain else 'MISMATCH'}; identical adversarial pixels: {same_pixels}")

    if args.worst_case:
        worst = parse_attack_spec(args.worst_case)
        seconds_pgd, pgd = timed(lambda: get_attack("pgd-linf", eps=eps, steps=10).run(model, batch))
        seconds_worst, result = timed(lambda: worst.run(model, batch))
        acc_pgd = float((pgd.scores.argmax(1) == labels).float().mean())
        acc_worst = float((result.scores.argmax(1) == labels).float().mean())
        print(f"PGD-10 robust accuracy {acc_pgd:.4f} ({seconds_pgd / len(batch):.3f} s/example)   {worst.key()} "
              f"{acc_worst:.4f} ({seconds_worst / len(batch):.3f} s/example)   gap {100 * (acc_pgd - acc_worst):.1f} points")
        for component in worst.components(len(model.candidates)):
            key = component.key()
            ran = sum(key in row["details"]["ran"] for row in result.info)
            broke = sum(row["details"]["broken_by"] == key for row in result.info)
            print(f"  {key:60s} ran on {ran:4d} of {len(batch)} examples, broke {broke}")
    return 0 if acc_ours == acc_plain else 1


if __name__ == "__main__":
    raise SystemExit(main())
