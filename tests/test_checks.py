"""The evaluation checks (robustmm.checks) on hand-made records, and once on records of real attack results."""

from __future__ import annotations

import pytest
import torch

from robustmm.checks import (
    NOT_RUN,
    PASS,
    WARN,
    checks_table,
    parse_key,
    qualify_verdict,
    run_checks,
    threat_model,
    verdict_warnings,
)
from robustmm.types import AttackRecord, Status

E8, E16, E64 = 8 / 255, 16 / 255, 64 / 255
FGSM8 = "fgsm(eps=8/255)"
PGD8 = "pgd-linf(eps=8/255, steps=10, alpha=2/255, random_start=True)"


def record(key: str, example: int, succeeded: bool | None, member: str = "prompt", eps: float | None = E8,
           details: dict | None = None, dataset: str = "easy-vqa") -> AttackRecord:
    """A record of attack ``key`` on example ``e<example>``: succeeded True / False, or None for SKIPPED."""
    status = Status.SKIPPED if succeeded is None else (Status.SUCCEEDED if succeeded else Status.FAILED)
    clean = 0.0 if succeeded is None else 1.0
    return AttackRecord(run="r", task="vqa", dataset=dataset, member=member, model="m", attack=parse_key(key)[0],
                        attack_key=key, modality="image", eps=eps, example_id=f"e{example}", answers=("a",), text="t",
                        adv_text="t", clean_prediction="a", adv_prediction="b" if succeeded else "a", clean_score=clean,
                        adv_score=0.0 if succeeded else clean, status=status, details=details or {})


def attack(key: str, broken: set[int], n: int = 100, skipped: set[int] = frozenset(), **kwargs) -> list[AttackRecord]:
    return [record(key, i, None if i in skipped else i in broken, **kwargs) for i in range(n)]


def result(results, number: int, member: str = "prompt"):
    [found] = [r for r in results if r.number == number and r.member == member]
    return found


def test_parse_key_and_threat_model():
    assert parse_key(PGD8) == ("pgd-linf", {"eps": "8/255", "steps": "10", "alpha": "2/255", "random_start": "True"})
    nested = "transfer(source=finetune, attack=apgd-ce(norm=l2, eps=0.5, steps=100, restarts=1))"
    assert parse_key(nested) == ("transfer", {"source": "finetune", "attack": "apgd-ce(norm=l2, eps=0.5, steps=100, restarts=1)"})
    assert threat_model(record(nested, 0, True, eps=0.5)) == ("l2", 0.5)
    assert threat_model(record("pgd-l2(eps=1, steps=10, alpha=0.25, random_start=True)", 0, True, eps=1.0))[0] == "l2"
    assert threat_model(record(FGSM8, 0, True))[0] == "linf"


def test_iterative_must_beat_one_step_on_the_same_examples():
    results = run_checks(attack(FGSM8, set(range(30)), skipped={99}) + attack(PGD8, set(range(45))))
    check = result(results, 1)
    assert check.status == PASS and "PGD-10 45.5% vs FGSM 30.3% (n=99)" in check.numbers
    results = run_checks(attack(FGSM8, set(range(30))) + attack(PGD8, set(range(20))))
    assert result(results, 1).status == WARN and result(results, 1).problem == "one-step FGSM beat the iterative attack at 8/255"
    # a different ε, or only one of the two, is not a comparison
    results = run_checks(attack(FGSM8, set(range(30))) + attack(PGD8.replace("8/255", "16/255"), set(range(20)), eps=E16))
    assert result(results, 1).status == NOT_RUN


def pgd(eps_text: str, eps: float, broken: int) -> list[AttackRecord]:
    return attack(f"pgd-linf(eps={eps_text}, steps=10, alpha=1/255, random_start=True)", set(range(broken)), eps=eps)


def test_success_must_grow_with_eps_and_reach_100_percent():
    check = result(run_checks(pgd("8/255", E8, 40) + pgd("16/255", E16, 70) + pgd("64/255", E64, 99)), 2)
    assert check.status == PASS and "pgd-linf: 8/255 40.0%, 16/255 70.0%, 64/255 99.0% (n=100)" in check.numbers
    check = result(run_checks(pgd("8/255", E8, 40) + pgd("16/255", E16, 30)), 2)
    assert check.status == WARN and check.problem == "pgd-linf's success fell as ε grew to 16/255"
    check = result(run_checks(pgd("8/255", E8, 40) + pgd("64/255", E64, 60)), 2)
    assert check.status == WARN and check.problem == "pgd-linf's success flattens at 60.0% even at 64/255"
    assert result(run_checks(pgd("8/255", E8, 4) + attack("pgd-linf(eps=64/255, steps=10, alpha=1/255, random_start=True)",
                                                         set(range(9)), n=10, eps=E64)), 2).status == PASS, \
        "all but one example of a small sample is ~100%"
    check = result(run_checks(pgd("8/255", E8, 40) + pgd("16/255", E16, 70)), 2)
    assert check.status == NOT_RUN and "no ε ≥ 64/255" in check.numbers
    assert result(run_checks(pgd("8/255", E8, 40)), 2).status == NOT_RUN


def test_noise_must_be_much_weaker_than_white_box():
    noise = "noise-linf(eps=8/255)"
    check = result(run_checks(attack(noise, set(range(5))) + attack(PGD8, set(range(40))) + attack(FGSM8, set(range(20)))), 3)
    assert check.status == PASS and "noise 5.0% vs PGD-10 40.0%" in check.numbers
    check = result(run_checks(attack(noise, set(range(25))) + attack(PGD8, set(range(40)))), 3)
    assert check.status == WARN and "random noise is nearly as strong" in check.problem
    assert result(run_checks(attack(noise, set(range(5)))), 3).status == NOT_RUN


SQUARE8 = "square(norm=linf, eps=8/255, queries=1000)"


def test_black_box_must_not_beat_white_box():
    check = result(run_checks(attack(PGD8, set(range(40))) + attack(SQUARE8, set(range(30)))), 4)
    assert check.status == PASS and check.numbers == "8/255: 0 of 100 broken only by black-box (0.0%)"
    # two examples broken by Square that PGD missed: more than AutoAttack's 0.2% of 100 examples
    check = result(run_checks(attack(PGD8, set(range(40))) + attack(SQUARE8, set(range(30)) | {40, 41})), 4)
    assert check.status == WARN and check.problem == "black-box beat white-box at 8/255"
    assert "2 of 100 broken only by black-box (2.0%)" in check.numbers
    # at another ε Square does not compare with PGD-8/255
    square16 = SQUARE8.replace("8/255", "16/255")
    assert result(run_checks(attack(PGD8, set(range(40))) + attack(square16, {50, 51}, eps=E16)), 4).status == NOT_RUN
    # one example in 1000 is within the tolerance
    assert result(run_checks(attack(PGD8, set(range(40)), n=1000) + attack(SQUARE8, {500}, n=1000)), 4).status == PASS


def worst_case_records(square_breaks: set[int], n: int = 100) -> list[AttackRecord]:
    key = "worst-case(norm=linf, eps=8/255, attacks=apgd-ce+square, steps=100, restarts=1, queries=1000)"
    ce, sq = "apgd-ce(norm=linf, eps=8/255, steps=100, restarts=1)", SQUARE8
    rows = []
    for i in range(n):
        if i < 40:
            details = {"ran": [ce], "broken_by": ce, "zero_grad": False}
        else:
            details = {"ran": [ce, sq], "broken_by": sq if i in square_breaks else None, "zero_grad": False}
        rows.append(record(key, i, details["broken_by"] is not None, details=details))
    return rows


def test_black_box_inside_the_worst_case_ensemble_and_transfer_count():
    assert result(run_checks(worst_case_records(set())), 4).status == PASS
    check = result(run_checks(worst_case_records({50, 60, 70})), 4)
    assert check.status == WARN and "3 of 100 broken only by black-box" in check.numbers
    # a standalone white-box attack that broke those examples too clears the ensemble's Square
    assert result(run_checks(worst_case_records({50, 60, 70}) + attack(PGD8, set(range(40)) | {50, 60, 70})), 4).status == PASS
    transfer = "transfer(source=finetune, attack=" + PGD8 + ")"
    rows = attack(PGD8, set(range(40))) + attack(transfer, set(range(20)) | {80, 81, 82},
                                                  details={"source_member": "finetune"})
    check = result(run_checks(rows), 4)
    assert check.status == WARN and check.problem == "transfer beat white-box at 8/255"


def test_convergence_of_steps_and_restarts_on_the_subset():
    weak = "apgd-ce(norm=linf, eps=8/255, steps=10, restarts=1)"
    strong = "apgd-ce(norm=linf, eps=8/255, steps=100, restarts=5, subset=0.2)"
    inside = set(range(0, 100, 5))
    outside = {"outside_subset": True}
    rows = attack(weak, set(range(30))) + [record(strong, i, i < 30, details={} if i in inside else outside) for i in range(100)]
    check = result(run_checks(rows), 5)
    assert check.status == PASS and "10 steps × 1 restarts 70.0% → 100 steps × 5 restarts 70.0% robust (n=20)" in check.numbers
    rows = attack(weak, set(range(30))) + [record(strong, i, i < 30 or i == 35, details={} if i in inside else outside)
                                           for i in range(100)]
    assert result(run_checks(rows), 5).status == PASS  # one example of 20: more than 1 point, but a single example
    rows = attack(weak, set(range(30))) + [record(strong, i, i < 30 or i in (35, 40), details={} if i in inside else outside)
                                           for i in range(100)]
    check = result(run_checks(rows), 5)
    assert check.status == WARN and check.problem == ("apgd-ce at 8/255 had not converged at 10 steps × 1 restarts "
                                                      "(100 steps × 5 restarts lowered robust accuracy by 10.0 points)")
    # PGD with 10 and 100 steps is one family (alpha follows steps); a different ε is not
    pgd100 = "pgd-linf(eps=8/255, steps=100, alpha=0.2/255, random_start=True)"
    assert result(run_checks(attack(PGD8, set(range(30))) + attack(pgd100, set(range(30)))), 5).status == PASS
    assert result(run_checks(attack(PGD8, set(range(30))) + pgd("16/255", E16, 60)), 5).status == NOT_RUN


def test_the_worst_case_first_component_counts_as_run_alone():
    """APGD-CE-10 on a subset against the worst-case ensemble's APGD-CE-100 x 5 (its first component) on the same subset."""
    ce100 = "apgd-ce(norm=linf, eps=8/255, steps=100, restarts=5)"
    key = "worst-case(norm=linf, eps=8/255, attacks=apgd-ce+square, steps=100, restarts=5, queries=1000, subset=0.2)"
    weak = "apgd-ce(norm=linf, eps=8/255, steps=10, restarts=1, subset=0.2)"
    rows = []
    for i in range(20):
        broken_by = ce100 if i < 8 else SQUARE8 if i == 8 else None
        ran = [ce100] if i < 8 else [ce100, SQUARE8]
        rows.append(record(key, i, broken_by is not None, details={"ran": ran, "broken_by": broken_by, "zero_grad": False}))
        rows.append(record(weak, i, i < 5, details={"zero_grad": False}))
    check = result(run_checks(rows), 5)
    assert check.status == WARN and "10 steps × 1 restarts 75.0% → 100 steps × 5 restarts 60.0% robust (n=20)" in check.numbers
    assert result(run_checks(rows), 6).numbers == "0 of 40 attacked examples (0.0%)", "no zero_grad counted twice"
    assert "APGD-CE-100 40.0% vs FGSM" in result(run_checks(rows + attack(FGSM8, set(range(3)), n=20)), 1).numbers


def test_zero_gradients():
    rows = [record(PGD8, i, i < 10, details={"zero_grad": i == 3}) for i in range(100)]
    check = result(run_checks(rows), 6)
    assert check.status == PASS and check.numbers == "1 of 100 attacked examples (1.0%)"
    rows = [record(PGD8, i, i < 10, details={"zero_grad": i < 5}) for i in range(100)]
    assert result(run_checks(rows), 6).status == WARN
    assert result(run_checks(attack(SQUARE8, {1})), 6).status == NOT_RUN


def test_verdict_sentences_and_table():
    rows = (attack(PGD8, set(range(40))) + attack(SQUARE8, set(range(30)) | {40, 41})
            + attack(PGD8, set(range(40)), member="finetune") + attack(SQUARE8, set(range(30)), member="finetune"))
    results = run_checks(rows)
    assert verdict_warnings(results) == [
        "prompt-tuned member: WARN — black-box beat white-box at 8/255; robust accuracy may be overestimated"]
    assert verdict_warnings(results, scope="vqa/easy-vqa") == verdict_warnings(results)
    assert verdict_warnings(results, scope="ve/easy-ve") == []
    sentence = "The prompt-tuned member is more robust (ASR 40% vs 55%)."
    assert qualify_verdict(sentence, "prompt", results, "vqa/easy-vqa") == (
        "The prompt-tuned member is more robust (ASR 40% vs 55%), but the prompt-tuned member's evaluation checks warn "
        "(black-box beat white-box at 8/255): its robust accuracy may be overestimated.")
    assert qualify_verdict(sentence, "finetune", results, "vqa/easy-vqa") == sentence
    lines = checks_table(results)
    assert lines[0] == "**easy-vqa**" and lines[2] == "| check | prompt-tuned member | finetuned member |"
    assert len(lines) == 4 + 6 and lines[4 + 3].startswith("| 4. black-box / transfer ≤ white-box | WARN — ")
    # two datasets: sentences name theirs
    both = run_checks(rows + [record(SQUARE8, i, i < 3, dataset="easy-ve") for i in range(10)]
                      + [record(PGD8, i, False, dataset="easy-ve") for i in range(10)])
    assert "easy-ve, prompt-tuned member: WARN — black-box beat white-box at 8/255; robust accuracy may be overestimated" \
        in verdict_warnings(both)


def test_checks_read_what_the_attacks_write(default_pair_records):
    """Records built from real attack results (as the runner builds them) feed checks 4 and 6."""
    results = run_checks(default_pair_records)
    assert {r.member for r in results} == {"prompt", "finetune"}
    for member in ("prompt", "finetune"):
        assert result(results, 6, member).status in (PASS, WARN)
        assert result(results, 4, member).status in (PASS, WARN)
        assert result(results, 1, member).status in (PASS, WARN)


@pytest.fixture(scope="module")
def default_pair_records():
    from robustmm.attacks import AttackBatch, parse_attack_spec
    from robustmm.data import load_dataset, to_tensor
    from robustmm.evaluate import gold_targets
    from robustmm.models.pair import load_pair

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pair = load_pair("default", task="ve", device="cpu")
    examples = list(load_dataset("easy-ve", split="test", limit=6, seed=5))
    pixels = to_tensor([e.image for e in examples], 64)
    rows = []
    for member, model in pair.members().items():
        targets = gold_targets(examples, model.candidates, "ve")
        batch = AttackBatch(examples, pixels, [e.text for e in examples], targets, seed=0)
        for spec in ("fgsm", "pgd-linf:steps=3", "worst-case:steps=3,queries=10"):
            attack = parse_attack_spec(spec)
            out = attack.run(model, batch)
            for i, e in enumerate(examples):
                broken = int(out.scores[i].argmax()) != int(targets[i])
                rows.append(AttackRecord(
                    run="r", task="ve", dataset="easy-ve", member=member, model="m", attack=attack.name,
                    attack_key=attack.key(), modality="image", eps=attack.config.eps, example_id=e.id, answers=e.answers,
                    text=e.text, adv_text=e.text, clean_prediction="x", adv_prediction="y" if broken else "x", clean_score=1.0,
                    adv_score=0.0 if broken else 1.0, status=Status.SUCCEEDED if broken else Status.FAILED,
                    details=out.info[i]["details"]))
    torch.set_num_threads(threads)
    return rows
