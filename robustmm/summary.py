"""Records -> Summary: every number the report shows, computed from AttackRecords only.

Per (task, dataset, attack setting) the prompt-tuned and the finetuned member are compared on
the *same* examples with :func:`robustmm.comparison.compare` (side ``a`` = prompt-tuned, ``b`` =
finetuned; a positive difference means the prompt-tuned member was broken less often), and the
settings of each dataset are Holm-adjusted together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from robustmm.comparison import Comparison, adjust_holm, compare
from robustmm.types import AttackRecord

MEMBERS = ("prompt", "finetune")
LABELS = ("prompt-tuned", "finetuned")  # how the report names the two sides
NAMES = ("the prompt-tuned member", "the finetuned member")  # ... and in verdict sentences


@dataclass
class Summary:
    comparisons: list[Comparison]
    records: list[AttackRecord] = field(repr=False)

    def datasets(self) -> list[tuple[str, str]]:
        return sorted({(c.task, c.dataset) for c in self.comparisons})

    def for_dataset(self, task: str, dataset: str) -> list[Comparison]:
        return [c for c in self.comparisons if (c.task, c.dataset) == (task, dataset)]

    def task_verdict(self, task: str, dataset: str) -> str:
        """One sentence per dataset: which member was more robust under how many settings, after Holm."""
        from robustmm.report import dataset_verdict

        return dataset_verdict(self.for_dataset(task, dataset), NAMES)


def summarize(records: Sequence[AttackRecord], seed: int = 0) -> Summary:
    """Group records by (task, dataset, attack setting) and compare the two members on the examples both hold."""
    groups: dict[tuple, dict[str, dict[str, AttackRecord]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        groups[(r.task, r.dataset, r.attack_key)][r.member][r.example_id] = r
    comparisons = []
    for key, by_member in groups.items():
        if not all(m in by_member for m in MEMBERS):
            continue
        shared = sorted(i for i in by_member["prompt"] if i in by_member["finetune"])  # record order must not matter
        if not shared:
            continue
        comparisons.append(compare([by_member["prompt"][i] for i in shared], [by_member["finetune"][i] for i in shared],
                                   LABELS, seed))
    return Summary(adjust_holm(comparisons), list(records))
