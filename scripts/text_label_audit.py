"""Label-keeping text attacks on the shipped pair: success rate and label-bearing edits, before and after.

For easy-VQA and easy-VE (N seeded test examples each), both members of the default pair, this
runs ``word-sub`` and ``char-swap`` as they were before issue 29 ("before": every WordNet sense,
hyphenated lemmas, no protected words, no candidate cap; char-swap without protection) and as
they are now ("after": the defaults), plus ``wordnet-nn``. Every result becomes an
``AttackRecord`` and goes through the audit (:mod:`robustmm.attacks.text.audit`) with an
independent judge: a substitution is *label-bearing* when its old or new word is protected by
the default protection of its dataset (VQA answer words; VE colours, shapes, numbers, objects;
negations, quantifiers, numbers), and *colour/shape* when it is a colour or shape word.

    PYTHONPATH=. .venv/bin/python scripts/text_label_audit.py -n 200 > reports/text-label-audit.md
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

BEFORE = {"pos": "any", "multiword": True, "protect_answers": False, "protect": (), "max_candidates": 0}
SETTINGS = [("word-sub", "before", BEFORE), ("word-sub", "after", {}),
            ("char-swap", "before", {"protect_answers": False, "protect": ()}), ("char-swap", "after", {}),
            ("wordnet-nn", "after", {})]


def records_for(pair, dataset, attack, setting: str, seed: int):
    """Attack both members on ``dataset``; one AttackRecord per (member, example)."""
    from robustmm.attacks import AttackBatch
    from robustmm.data import to_tensor
    from robustmm.types import AttackRecord, Status

    examples = list(dataset.examples)
    pixels = to_tensor([e.image for e in examples], pair.finetuned.image_size)
    texts = [e.text for e in examples]
    out, seconds = [], 0.0
    for member, model in pair.members().items():
        targets = model.target_indices([e.label for e in examples])
        batch = AttackBatch(examples, pixels, texts, targets, seed=seed)
        start = time.perf_counter()
        result = attack.run(model, batch)
        seconds += time.perf_counter() - start
        with torch.no_grad():
            clean = model.candidate_scores(pixels, texts).argmax(1).tolist()
        adv = result.scores.argmax(1).tolist()
        for e, row, c, a, text in zip(examples, result.info, clean, adv, result.texts):
            out.append(AttackRecord(
                run="text-label-audit", task=dataset.task.value, dataset=dataset.name, member=member,
                model=model.info.name, attack=attack.name, attack_key=f"{attack.name}[{setting}]", modality="text",
                eps=None, example_id=e.id, answers=e.answers, text=e.text, adv_text=text,
                clean_prediction=model.candidates[c], adv_prediction=model.candidates[a],
                clean_score=float(model.candidates[c] == e.label), adv_score=float(model.candidates[a] == e.label),
                status=Status(row["status"]), words_changed=row["words_changed"], words_total=row["words_total"],
                similarity=row["similarity"], unknown_substitutions=row["unknown_substitutions"],
                queries=row["queries"], seconds=row["seconds"], details=row["details"]))
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="test examples per dataset (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)

    from robustmm.attacks import get_attack
    from robustmm.attacks.text.audit import audit_markdown, audit_text_attacks
    from robustmm.attacks.text.protect import DEFAULT_LISTS, VE_ANSWER_CLASSES, Protection, split_words
    from robustmm.data import load_dataset
    from robustmm.data.easy_vqa import answers
    from robustmm.models.pair import load_pair

    judges = {"easy-vqa": Protection({w for a in answers() for w in split_words(a)}, DEFAULT_LISTS),
              "easy-ve": Protection((), DEFAULT_LISTS + VE_ANSWER_CLASSES)}
    colour_shape = Protection(classes=("colors", "shapes"))
    records = []
    for task, name in (("vqa", "easy-vqa"), ("ve", "easy-ve")):
        pair = load_pair("default", task=task, device="cpu")
        dataset = load_dataset(name, split="test", limit=args.n, seed=args.seed)
        for attack_name, setting, params in SETTINGS:
            attack = get_attack(attack_name, **params)
            rows, seconds = records_for(pair, dataset, attack, setting, args.seed)
            records += rows
            logging.warning("%s %s %s: %.1fs", name, attack_name, setting, seconds)

    full = {(a.dataset, a.member, a.attack_key): a for a in audit_text_attacks(records, lambda d, w: w in judges[d])}
    narrow = {(a.dataset, a.member, a.attack_key): a for a in audit_text_attacks(records, lambda d, w: w in colour_shape)}
    print(f"# Label-keeping text attacks on the shipped pair ({args.n} test examples per dataset, seed {args.seed})\n")
    print("| dataset | member | attack [setting] | success | successes touching a label-bearing word | "
          "... a colour/shape word | words changed | [UNK] | queries |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, a in full.items():
        n = narrow[key]
        pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        print(f"| {a.dataset} | {a.member} | `{a.attack_key}` | {a.succeeded}/{a.attacked} ({pct(a.success_rate)}) "
              f"| {a.label_edit_successes} ({pct(a.label_edit_share)}) | {n.label_edit_successes} "
              f"({pct(n.label_edit_share)}) | {a.mean_words_changed or 0:.2f} | {pct(a.unknown_share)} "
              f"| {a.mean_queries:.1f} |")
    print()
    print("\n".join(audit_markdown([r for r in records if r.attack_key.endswith("[after]")])))


if __name__ == "__main__":
    main()
