"""Hand-made AttackRecords for tests of the statistics, comparison, compare and pool (no models)."""

from __future__ import annotations

from robustmm.types import AttackRecord, Status


def make_record(member: str, example: str, clean: float, adv: float, key: str = "fgsm(eps=8/255)", dataset: str = "easy-vqa",
                text: str | None = None, model: str | None = None, task: str = "vqa") -> AttackRecord:
    """One record; ``clean`` / ``adv`` are the clean and adversarial scores (1 correct, 0 wrong)."""
    status = Status.SKIPPED if clean < 0.5 else (Status.FAILED if adv >= 0.5 else Status.SUCCEEDED)
    text = text or f"question {example}?"
    return AttackRecord(run="r", task=task, dataset=dataset, member=member, model=model or f"m-{member}",
                        attack=key.split("(")[0], attack_key=key, modality="image", eps=8 / 255, example_id=example,
                        answers=("yes",), text=text, adv_text=text, clean_prediction="yes" if clean else "no",
                        adv_prediction="yes" if adv else "no", clean_score=float(clean), adv_score=float(adv), status=status)


def rows(member: str, outcomes: list[tuple[int, int]], key: str = "fgsm(eps=8/255)", dataset: str = "easy-vqa",
         model: str | None = None) -> list:
    """Records e0, e1, ... from (clean, adv) pairs."""
    return [make_record(member, f"e{i}", c, a, key, dataset, model=model) for i, (c, a) in enumerate(outcomes)]
