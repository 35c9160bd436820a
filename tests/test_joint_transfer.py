"""The joint image+text attack, transfer records and seeded subsets through the runner, on the shipped pair."""

from __future__ import annotations

import json

import pytest
import torch

from robustmm.attacks import AttackBatch, get_attack
from robustmm.data import load_dataset
from robustmm.evaluate import ImageBank, gold_targets
from robustmm.models.pair import load_pair


@pytest.fixture(scope="module")
def pair():
    return load_pair("default", task="vqa", device="cpu")


def _batch(model, examples, seed=0):
    pixels = ImageBank().pixels(examples, model.image_size)
    return AttackBatch(list(examples), pixels, [e.text for e in examples], gold_targets(examples, model.candidates, "vqa"),
                       seed=seed, protected=frozenset({"circle", "rectangle", "triangle", "red", "green", "blue", "yes", "no"}))


def test_joint_keeps_both_budgets_and_does_not_depend_on_the_batch(pair):
    examples = list(load_dataset("easy-vqa", split="test", limit=8, seed=0).examples)
    model = pair.finetuned
    attack = get_attack("joint", eps="4/255", steps=3, rounds=2)
    whole = attack.run(model, _batch(model, examples))
    for i, info in enumerate(whole.info):
        assert info["linf"] <= 4 / 255 + 1e-6
        assert info["words_changed"] <= -(-len(examples[i].text.split()) // 5)  # ceil(0.2 n)
        assert 1 <= len(info["details"]["rounds"]) <= 2
    alone = [attack.run(model, _batch(model, examples[i:i + 1])) for i in range(len(examples))]
    assert [r.texts[0] for r in alone] == whole.texts
    assert all(torch.equal(r.pixels[0], whole.pixels[i]) for i, r in enumerate(alone))
    assert whole.texts != [e.text for e in examples] or not torch.equal(whole.pixels, _batch(model, examples).pixels)
    other_seed = attack.run(model, _batch(model, examples, seed=1))
    assert not torch.equal(other_seed.pixels, whole.pixels)  # the run seed changes the random starts


def test_joint_refuses_bad_settings():
    from robustmm.errors import RobustMMError

    for params in ({"text": "embed-fgsm"}, {"rounds": 0}, {"eps": 2}, {"max_words_fraction": 0}):
        with pytest.raises(RobustMMError):
            get_attack("joint", **params)


def test_transfer_records_score_each_member_on_the_others_adversarial_images(tmp_path, pair):
    from robustmm.experiment import RunSpec, run_experiment
    from robustmm.records import load_run

    spec = RunSpec(datasets=("easy-vqa",), limit=12, attacks=("fgsm:eps=8/255", "noise-linf"), device="cpu")
    report, summary = run_experiment(spec, tmp_path, "t")
    records = load_run(tmp_path / "t")
    transfer = [r for r in records if r.attack == "transfer"]
    assert {r.attack_key for r in transfer} == {"transfer(attack=fgsm(eps=8/255), from=prompt)",
                                               "transfer(attack=fgsm(eps=8/255), from=finetune)"}  # noise is not white-box
    assert len(transfer) == 2 * 12 and all(r.details["source_member"] != r.member for r in transfer)
    # independent expectation: attack the source alone, show its images to the target
    dataset = load_dataset("easy-vqa", split="test", limit=12, seed=0)
    source, target = pair.prompt_tuned, pair.finetuned
    fgsm = get_attack("fgsm", eps="8/255")
    own = {r.example_id: r for r in records if r.member == "prompt" and r.attack == "fgsm"}
    attacked = [e for e in dataset.examples if own[e.id].status.value != "skipped"]
    result = fgsm.run(source, _batch(source, attacked))
    with torch.no_grad():
        shown = target.candidate_scores(result.pixels, [e.text for e in attacked]).argmax(1).tolist()
    seen = {r.example_id: r for r in transfer if r.member == "finetune"}
    for e, index in zip(attacked, shown):
        if seen[e.id].status.value != "skipped":
            assert seen[e.id].adv_prediction == target.candidates[index]
    text = report.read_text()
    assert "### Transfer: adversarial images of one model" in text and "| images crafted on" in text
    assert "## Evaluation checks" in text and "4. black-box / transfer ≤ white-box" in text
    assert any(len(list(p.iterdir())) for p in [tmp_path / "t" / "adversarial"])


def test_no_transfer_and_a_third_model(tmp_path):
    from robustmm.experiment import RunSpec, run_experiment
    from robustmm.records import load_run
    from robustmm.paths import package_root

    spec = RunSpec(datasets=("easy-vqa",), limit=6, attacks=("fgsm",), transfer=False, device="cpu")
    run_experiment(spec, tmp_path, "off")
    assert not [r for r in load_run(tmp_path / "off") if r.attack == "transfer"]
    assert not (tmp_path / "off" / "adversarial").exists()
    third = package_root() / "checkpoints" / "default" / "easy-vqa" / "finetune"
    report, _ = run_experiment(RunSpec(datasets=("easy-vqa",), limit=6, attacks=("fgsm",), transfer_to=str(third),
                                       device="cpu"), tmp_path, "third")
    others = [r for r in load_run(tmp_path / "third") if r.member == "other"]
    assert len(others) == 2 * 6 and {r.details["source_member"] for r in others} == {"prompt", "finetune"}
    assert "finetune (--transfer-to)" in report.read_text()


def test_a_subset_attack_records_only_its_seeded_examples(tmp_path):
    from robustmm.experiment import RunSpec, run_experiment
    from robustmm.records import load_run

    spec = RunSpec(datasets=("easy-vqa",), limit=40, attacks=("fgsm", "pgd-linf:steps=2,subset=0.25"), transfer=False,
                   device="cpu")
    _, summary = run_experiment(spec, tmp_path, "sub")
    records = load_run(tmp_path / "sub")
    pgd = [r for r in records if r.attack == "pgd-linf"]
    fgsm = [r for r in records if r.attack == "fgsm"]
    attack = get_attack("pgd-linf", steps=2, subset=0.25)
    covered = [e.id for e in load_dataset("easy-vqa", split="test", limit=40, seed=0).examples if attack.covers(0, e.id)]
    assert 0 < len(covered) < 40 and sorted({r.example_id for r in pgd}) == sorted(covered)
    assert len(fgsm) == 80 and len(pgd) == 2 * len(covered)
    (c,) = [c for c in summary.comparisons if c.attack == "pgd-linf"]
    assert c.n == len(covered)
    meta = json.loads((tmp_path / "sub" / "meta.json").read_text())
    assert meta["records"] == len(records)
