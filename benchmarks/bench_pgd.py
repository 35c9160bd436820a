"""How much does robustmm's PGD cost on top of the model's own forward+backward passes?

On one fixed batch of easy-VQA test examples and a finetuned model, from ONE run:

(a) overhead: wall time of robustmm's PGD-``steps`` / (``steps`` x one forward+backward of the
    same batch through the same ClassifierView; measured as ``steps`` back-to-back passes / ``steps``). The extra no-grad forward that scores the
    adversarial batch, the text tokenisation and the projections are all inside the numerator.
    Target: <= 1.10.
(b) robustmm's ``pgd-linf`` against plain ``torchattacks.PGD`` on the same view with the same
    eps, alpha, steps and random start (torchattacks is handed robustmm's per-example start
    noise, see ``_same_draws.py``): both times, their ratio and both robust accuracies (which
    must be equal: robustmm computes what torchattacks.PGD computes, with a summed loss whose
    gradient signs are the same). Both timings include tokenising the texts and the no-grad
    forward that scores the result.

Times are medians over ``--repeats`` interleaved repeats after one warm-up. One intra-op thread
by default: on a machine shared with a training job, two OpenMP threads per process make every
time several-fold longer and the ratios meaningless.

    .venv/bin/python benchmarks/bench_pgd.py [--model PATH] [--n 64] [--steps 10] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import DEFAULT_MODEL, timed  # noqa: E402
from _same_draws import uniform_noise_is  # noqa: E402

from robustmm.attacks import AttackBatch, get_attack, parse_number  # noqa: E402
from robustmm.attacks.base import attack_mode  # noqa: E402
from robustmm.attacks.image import ClassifierView  # noqa: E402
from robustmm.data import load_dataset, to_tensor  # noqa: E402
from robustmm.errors import RobustMMError  # noqa: E402
from robustmm.models.checkpoint import load_model  # noqa: E402
from robustmm.seeding import per_example_uniform  # noqa: E402

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="finetuned checkpoint folder")
    parser.add_argument("--n", type=int, default=64, help="examples in the batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="run seed (the per-example starts come from it)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable ratios on a shared machine; 0 = torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import torchattacks
    import torchattacks.attacks.pgd as torchattacks_pgd

    try:
        model = load_model(args.model)
    except RobustMMError as err:
        print(f"bench_pgd: {err} (give --model PATH)", file=sys.stderr)
        return 2
    eps = parse_number(args.eps, "eps")
    alpha = 2.5 * eps / args.steps
    examples = list(load_dataset("easy-vqa", split="test", limit=args.n, seed=0))
    pixels = to_tensor([e.image for e in examples], model.image_size).to(model.device)
    texts = [e.text for e in examples]
    labels = model.target_indices([e.label for e in examples])
    batch = AttackBatch(examples, pixels, texts, labels, seed=args.seed)
    attack = get_attack("pgd-linf", eps=eps, steps=args.steps, alpha=alpha)
    # robustmm's start: U(-eps, eps) per example from its seed (pgd()'s arithmetic), handed to torchattacks.PGD
    noise = per_example_uniform(attack.example_seeds(batch), tuple(pixels.shape[1:]), pixels.device) * (2 * eps) - eps

    def forward_backward():
        """``steps`` forward+backward passes wrt the pixels (the work PGD repeats), one view."""
        with attack_mode(model):
            view = ClassifierView(model, texts)
            for _ in range(args.steps):
                x = pixels.clone().requires_grad_(True)
                grad = torch.autograd.grad(F.cross_entropy(view(x), labels), x)[0]
        return grad

    def robustmm_pgd():
        return attack.run(model, batch)

    def plain_pgd():
        with attack_mode(model):  # same eval mode and frozen parameters as robustmm uses
            view = ClassifierView(model, texts)
            plain = torchattacks.PGD(view, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
            with uniform_noise_is(torchattacks_pgd, noise):
                adv = plain(pixels, labels)
            with torch.no_grad():
                return adv, view(adv)

    forward_backward(), robustmm_pgd(), plain_pgd()  # warm-up
    t_fb, t_ours, t_plain = [], [], []
    for _ in range(args.repeats):
        t_fb.append(timed(forward_backward)[0] / args.steps)
        seconds, ours = timed(robustmm_pgd)
        t_ours.append(seconds)
        seconds, (adv_plain, scores_plain) = timed(plain_pgd)
        t_plain.append(seconds)

    fb, mine, theirs = (statistics.median(t) for t in (t_fb, t_ours, t_plain))
    best = min(t_ours) / (args.steps * min(t_fb))
    acc_ours = float((ours.scores.argmax(1) == labels).float().mean())
    acc_plain = float((scores_plain.argmax(1) == labels).float().mean())
    same_pixels = torch.equal(ours.pixels.to(adv_plain.device), adv_plain)
    print(f"model {args.model}  batch {args.n} easy-vqa test examples  PGD-Linf eps={args.eps} "
          f"alpha={alpha:.5f} steps={args.steps} seed={args.seed}  threads={torch.get_num_threads()}  "
          f"repeats={args.repeats} (medians)")
    print(f"(a) forward+backward {fb * 1000:8.1f} ms   robustmm PGD-{args.steps} {mine * 1000:8.1f} ms   "
          f"PGD / ({args.steps} x fwd+bwd) = {mine / (args.steps * fb):.3f}   (target <= 1.10; from the fastest repeats: {best:.3f})")
    print(f"(b) robustmm {mine * 1000:8.1f} ms   torchattacks.PGD {theirs * 1000:8.1f} ms   "
          f"ratio {mine / theirs:.3f}   robust acc robustmm {acc_ours:.4f}  torchattacks {acc_plain:.4f}  "
          f"{'match' if acc_ours == acc_plain else 'MISMATCH'}; identical adversarial pixels: {same_pixels}")
    return 0 if acc_ours == acc_plain else 1


if __name__ == "__main__":
    raise SystemExit(main())
