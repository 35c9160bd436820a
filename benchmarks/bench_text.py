"""Word substitution: stock ``textattack.Attack`` loop vs robustmm's batched ``word-sub``, side by side.

Both attack the same N easy-VQA test examples that the model answers correctly, with the
same TextAttack parts: ``WordNetSynonymSwap`` (offline WordNet, no antonyms, the synsets of
the word's part of speech from spaCy's tagger, inflected like the word, single words),
``RepeatModification``, ``StopwordModification``, ``ProtectedWords`` and
``NoProtectedReplacement`` (the answer words, negations, quantifiers, numbers),
``MaxWordsPerturbed``, the MiniLM ``SentenceEncoder`` constraint keeping the 50 most similar
replacements, ``UntargetedClassification`` on an image-bound ``ModelWrapper``, and
``GreedyWordSwapWIR("delete")``. The stock loop attacks one example at a time (TextAttack's
defaults: model batch 32, its own per-example caches); robustmm runs the greedy search for the
whole batch in lock-step with cross-example caches. Shared one-time costs (TextAttack import,
WordNet load, MiniLM load, spaCy load) are paid before the clocks start. Each side gets fresh
transformation/constraint/tagger objects (empty caches).

The MiniLM similarity of every candidate dominates the stock loop (~80% of its time): it
encodes each candidate plus one copy of the original window per candidate. robustmm
encodes each distinct window once per run, batched by token count, and scores the model in
bucketed batches; its time splits about evenly between MiniLM and the model, and its
advantage grows with N as questions repeat. The two sides alternate ``--repeats`` times (fresh
objects each time) and the fastest run of each is compared: on a shared 2-vCPU machine noise
only adds time, and one run of each swung the ratio between 2.9x and 3.8x on one afternoon.
Measured figures, with dates: docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_text.py --model robustmm/checkpoints/default/easy-vqa/finetune
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from _cli import DEFAULT_MODEL  # benchmarks/ is on sys.path when a benchmark runs as a script


def correct_examples(model, n: int, seed: int):
    """The first ``n`` easy-VQA test examples (seeded order) the model answers correctly: examples, pixels, targets."""
    from robustmm.data import load_dataset, to_tensor

    dataset = load_dataset("easy-vqa", split="test")
    order = torch.randperm(len(dataset.examples), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, pixels, targets = [], [], []
    for start in range(0, len(order), 256):
        chunk = [dataset.examples[i] for i in order[start:start + 256]]
        px = to_tensor([e.image for e in chunk], model.image_size)
        with torch.no_grad():
            pred = model.candidate_scores(px, [e.text for e in chunk]).argmax(1)
        gold = model.target_indices([e.label for e in chunk]).cpu()
        for j in (pred.cpu() == gold).nonzero().flatten().tolist():
            chosen.append(chunk[j]), pixels.append(px[j]), targets.append(int(gold[j]))
            if len(chosen) == n:
                return chosen, torch.stack(pixels), torch.tensor(targets)
    return chosen, torch.stack(pixels), torch.tensor(targets)


def run_stock(model, config, examples, pixels, targets):
    """One ``textattack.Attack`` per run, examples one at a time. Returns (seconds, CPU seconds, statuses, texts)."""
    from textattack import Attack
    from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR

    from robustmm.attacks.text import parts as ta

    from robustmm.attacks.text import WordSubstitution
    from robustmm.attacks.text.pos import PosTagger

    wrapper = ta.ImageBoundModelWrapper(model, pixels[:1])
    protections = {WordSubstitution(config).protection_for(model, e, frozenset()).key for e in examples}
    assert len(protections) == 1, "the stock loop shares one protection between its examples"
    protection = WordSubstitution(config).protection_for(model, examples[0], frozenset())
    constraints = [ta.RepeatModification(), ta.stopword_constraint(), ta.ProtectedWords(protection),
                   ta.MaxWordsPerturbed(max_percent=config.max_words_fraction), ta.NoProtectedReplacement(protection),
                   ta.MiniLMSimilarity(config.min_similarity, config.similarity_window or None,
                                       max_candidates=config.max_candidates)]
    tagger = PosTagger() if config.pos == "context" else None
    transformation = ta.WordNetSynonymSwap(filter_antonyms=config.filter_antonyms, tagger=tagger,
                                           multiword=config.multiword)
    attack = Attack(UntargetedClassification(wrapper), constraints, transformation, GreedyWordSwapWIR(config.wir))
    statuses, texts = [], []
    start, cpu = time.perf_counter(), time.process_time()
    for example, px, target in zip(examples, pixels, targets):
        wrapper.pixels = px.unsqueeze(0)
        attack.clear_cache()  # the model cache is keyed by text only: a new image needs a fresh one
        result = attack.attack(example.text, int(target))
        statuses.append("skipped" if isinstance(result, SkippedAttackResult)
                        else "succeeded" if isinstance(result, SuccessfulAttackResult) else "failed")
        texts.append(result.perturbed_result.attacked_text.text)
    return time.perf_counter() - start, time.process_time() - cpu, statuses, texts


def run_robustmm(model, config, examples, pixels, targets):
    """robustmm's ``word-sub`` on the whole set as one batch. Returns (seconds, CPU seconds, statuses, texts, info)."""
    from robustmm.attacks import AttackBatch
    from robustmm.attacks.text import WordSubstitution

    attack = WordSubstitution(config)
    batch = AttackBatch(examples, pixels, [e.text for e in examples], targets)
    start, cpu = time.perf_counter(), time.process_time()
    result = attack.run(model, batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, [i["status"] for i in result.info], result.texts, result.info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="finetuned easy-VQA checkpoint folder")
    parser.add_argument("-n", type=int, default=300, help="examples (ones the model answers correctly)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the fastest counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)

    from robustmm.attacks.text import WordSubConfig
    from robustmm.models.checkpoint import load_model

    model = load_model(args.model)
    examples, pixels, targets = correct_examples(model, args.n, args.seed)
    config = WordSubConfig()

    # One-time costs outside the clocks: TextAttack import, WordNet index, MiniLM weights.
    t0 = time.perf_counter()
    from robustmm.attacks.text import parts as ta

    ta.textattack.shared.utils.logger.setLevel(logging.ERROR)  # its "Unknown if model ... compatible" notice
    from robustmm.attacks.text.pos import load_pipeline
    from robustmm.attacks.text.protect import word_classes

    ta.WordNetSynonymSwap()._get_replacement_words("shape")
    ta.shared_encoder("cpu").encode(["warm up"])
    load_pipeline()("warm up")
    word_classes("shape")
    print(f"setup (TextAttack import, WordNet, MiniLM, spaCy): {time.perf_counter() - t0:.1f}s; {len(examples)} examples; "
          f"{torch.get_num_threads()} torch threads; config {config}")

    stock_runs, ours_runs = [], []
    for _ in range(args.repeats):
        stock_runs.append(run_stock(model, config, examples, pixels, targets))
        ours_runs.append(run_robustmm(model, config, examples, pixels, targets))
    assert all(r[2:] == stock_runs[0][2:] for r in stock_runs) and all(r[2:4] == ours_runs[0][2:4] for r in ours_runs)
    print(f"wall s of each run: stock {', '.join(f'{r[0]:.1f}' for r in stock_runs)}; "
          f"robustmm {', '.join(f'{r[0]:.1f}' for r in ours_runs)} (the fastest of each below)")
    stock_s, stock_cpu, stock_status, stock_texts = min(stock_runs, key=lambda r: r[0])
    ours_s, ours_cpu, ours_status, ours_texts, info = min(ours_runs, key=lambda r: r[0])

    n = len(examples)
    rows = [("stock textattack.Attack loop", stock_s, stock_cpu, stock_status),
            ("robustmm word-sub (batched)", ours_s, ours_cpu, ours_status)]
    print(f"\n{'':30s} {'wall s':>7s} {'examples/s':>11s} {'CPU s':>7s} {'success %':>10s}")
    for label, seconds, cpu, status in rows:
        print(f"{label:30s} {seconds:7.1f} {n / seconds:11.2f} {cpu:7.1f} {100 * status.count('succeeded') / n:10.1f}")
    stock_rate, ours_rate = stock_status.count("succeeded") / n, ours_status.count("succeeded") / n
    print(f"\nspeed-up {stock_s / ours_s:.1f}x in examples/s ({stock_cpu / ours_cpu:.1f}x in CPU time); "
          f"success-rate difference {100 * (ours_rate - stock_rate):+.1f} points; "
          f"same adversarial text on {sum(a == b for a, b in zip(stock_texts, ours_texts))}/{n} examples")
    substituted = sum(i["words_changed"] for i in info)
    unknown = sum(i["unknown_substitutions"] for i in info)
    protected = sum(i["details"]["protected_edits"] for i in info)
    print(f"robustmm: {substituted} substituted words, {unknown} mapped to [UNK] by the model's tokenizer, "
          f"{protected} touching a protected word; {sum(i['queries'] for i in info) / n:.1f} model queries per example")


if __name__ == "__main__":
    main()
