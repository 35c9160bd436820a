"""Label-change audit of text attacks: pure functions over ``AttackRecord`` rows.

A text adversarial example only counts if a person would still give the original answer. For
each (dataset, member, text attack) :func:`audit_text_attacks` reports, over the successful
examples: how many of them edited a protected or label-bearing word (must be 0 for ``word-sub``,
``wordnet-nn`` and ``char-swap``), the mean number of words changed, the share of substituted
words the model's tokenizer maps to an unknown token, the words beyond the model's token budget,
and why examples were skipped; :func:`audit_gallery` draws 10 random successes (seeded) with the
edit highlighted, so a reader can judge validity by eye. :func:`audit_markdown` renders both.

Which edits touch a label-bearing word: by default what the attack recorded in ``details``
(``protected_indices`` of the text, ``protected_edits``); give ``label_word(dataset, word) -> bool``
to judge every substitution independently (e.g. records of an attack without protection, or an
audit with another protection list). Records without ``details["substitutions"]`` are diffed word
by word (``text`` vs ``adv_text``).
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

TEXT_MODALITY = "text"
_WORD = re.compile(r"[\w'\-]+")


@dataclass(frozen=True)
class TextAudit:
    """Audit numbers of one (dataset, member, attack key); shares are in [0, 1] (None when undefined)."""

    dataset: str
    member: str
    attack: str
    attack_key: str
    examples: int
    succeeded: int
    attacked: int  # examples not skipped
    label_edit_successes: int  # successes whose edits touch a protected / label-bearing word
    words_changed: int  # over the successes
    unknown_substitutions: int  # over the successes
    out_of_reach_words: int  # over all examples
    out_of_reach_examples: int
    queries: int  # over all examples
    skipped: dict[str, int] = field(default_factory=dict)  # skipped_reason -> count

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.attacked if self.attacked else None

    @property
    def label_edit_share(self) -> float | None:
        return self.label_edit_successes / self.succeeded if self.succeeded else None

    @property
    def mean_words_changed(self) -> float | None:
        return self.words_changed / self.succeeded if self.succeeded else None

    @property
    def unknown_share(self) -> float | None:
        return self.unknown_substitutions / self.words_changed if self.words_changed else None

    @property
    def mean_queries(self) -> float | None:
        return self.queries / self.examples if self.examples else None


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def substitutions(record) -> list[tuple[int | None, str, str]]:
    """(word index or None, old, new) of each edit: the record's ``details["substitutions"]``, else a
    word-by-word diff of ``text`` and ``adv_text``."""
    details = record.details or {}
    if "substitutions" in details:
        return [(int(i), str(old), str(new)) for i, old, new in details["substitutions"]]
    old, new = _words(record.text), _words(record.adv_text)
    out = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op != "equal":
            out.append((a0 if a1 - a0 == 1 else None, " ".join(old[a0:a1]), " ".join(new[b0:b1])))
    return out


def touches_label(record, label_word: Callable[[str, str], bool] | None = None) -> bool:
    """Whether any edit of ``record`` changes or introduces a protected / label-bearing word."""
    subs = substitutions(record)
    if label_word is not None:
        return any(label_word(record.dataset, w) for _, old, new in subs for w in _words(old) + _words(new))
    details = record.details or {}
    protected = set(details.get("protected_indices", ()))
    return bool(details.get("protected_edits", 0)) or any(i in protected for i, _, _ in subs if i is not None)


def _text_records(records: Iterable) -> list:
    return [r for r in records if r.modality == TEXT_MODALITY]


def audit_text_attacks(records: Iterable, label_word: Callable[[str, str], bool] | None = None) -> list[TextAudit]:
    """One :class:`TextAudit` per (dataset, member, attack key) of the text-attack records, sorted."""
    groups: dict[tuple[str, str, str], list] = {}
    for record in _text_records(records):
        groups.setdefault((record.dataset, record.member, record.attack_key), []).append(record)
    out = []
    for (dataset, member, key), rows in sorted(groups.items()):
        status = [getattr(r.status, "value", r.status) for r in rows]
        wins = [r for r, s in zip(rows, status) if s == "succeeded"]
        skipped: dict[str, int] = {}
        for r, s in zip(rows, status):
            if s == "skipped":
                reason = (r.details or {}).get("skipped_reason", "clean prediction wrong")
                skipped[reason] = skipped.get(reason, 0) + 1
        out.append(TextAudit(
            dataset=dataset, member=member, attack=rows[0].attack, attack_key=key, examples=len(rows),
            succeeded=len(wins), attacked=sum(s != "skipped" for s in status),
            label_edit_successes=sum(touches_label(r, label_word) for r in wins),
            words_changed=sum(r.words_changed if r.words_changed is not None else len(substitutions(r)) for r in wins),
            unknown_substitutions=sum(r.unknown_substitutions or 0 for r in wins),
            out_of_reach_words=sum(int((r.details or {}).get("out_of_reach", 0)) for r in rows),
            out_of_reach_examples=sum(bool((r.details or {}).get("out_of_reach", 0)) for r in rows),
            queries=sum(r.queries for r in rows),
            skipped=dict(sorted(skipped.items())),
        ))
    return out


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_~|<>\[\]])", r"\\\1", text)


def highlight(text: str, adv_text: str) -> str:
    """Markdown of ``adv_text`` (whitespace-separated chunks) with each edit shown as ``~~old~~ **new**``;
    everything else escaped."""
    a, b = text.split(), adv_text.split()
    out = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out += [_escape(w) for w in a[a0:a1]]
            continue
        if a1 > a0:
            out.append(f"~~{_escape(' '.join(a[a0:a1]))}~~")
        if b1 > b0:
            out.append(f"**{_escape(' '.join(b[b0:b1]))}**")
    return " ".join(out)


def audit_gallery(records: Iterable, size: int = 10, seed: int = 0) -> dict[tuple[str, str], list[str]]:
    """(dataset, attack key) -> markdown lines of ``size`` random successful examples (both members
    pooled), drawn by ``random.Random`` seeded with (seed, dataset, key) from the successes sorted by
    (example id, member): the same records give the same gallery."""
    groups: dict[tuple[str, str], list] = {}
    for record in _text_records(records):
        if getattr(record.status, "value", record.status) == "succeeded":
            groups.setdefault((record.dataset, record.attack_key), []).append(record)
    out = {}
    for (dataset, key), rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: (r.example_id, r.member))
        chosen = random.Random(f"{seed}/{dataset}/{key}").sample(rows, min(size, len(rows)))
        out[(dataset, key)] = [
            f"- {r.member} `{r.example_id}`: {highlight(r.text, r.adv_text)} "
            f"({_escape(r.clean_prediction)} → {_escape(r.adv_prediction)})"
            for r in sorted(chosen, key=lambda r: (r.example_id, r.member))
        ]
    return out


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def audit_markdown(records: Iterable, label_word: Callable[[str, str], bool] | None = None, gallery: int = 10,
                   seed: int = 0) -> list[str]:
    """Markdown lines of the label-change audit: one table row per (dataset, member, text attack),
    then each attack's gallery. No lines when there are no text-attack records."""
    records = list(records)
    audits = audit_text_attacks(records, label_word)
    if not audits:
        return []
    lines = [
        "### Text attacks: label-change audit",
        "",
        "A success counts only if the original answer still holds: protected words (answers, colours, shapes, "
        "numbers, negations, quantifiers) are never edited. *label edits* = successes whose edits touch such a "
        "word (must be 0%); *[UNK]* = substituted words the model's tokenizer does not know; *out of reach* = "
        "words beyond the model's token budget, never attacked.",
        "",
        "| dataset | member | attack | success | label edits | words changed | [UNK] | out of reach | queries | skipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in audits:
        skipped = ", ".join(f"{reason} {n}" for reason, n in a.skipped.items()) or "0"
        words = "–" if a.mean_words_changed is None else f"{a.mean_words_changed:.2f}"
        queries = "–" if a.mean_queries is None else f"{a.mean_queries:.1f}"
        lines.append(
            f"| {a.dataset} | {a.member} | `{a.attack_key}` | {a.succeeded}/{a.attacked} ({_percent(a.success_rate)}) "
            f"| {a.label_edit_successes} ({_percent(a.label_edit_share)}) | {words} | {_percent(a.unknown_share)} "
            f"| {a.out_of_reach_words} words in {a.out_of_reach_examples} examples | {queries} | {skipped} |"
        )
    for (dataset, key), rows in audit_gallery(records, gallery, seed).items():
        lines += ["", f"{len(rows)} random successes of `{key}` on {dataset} (seed {seed}):", ""] + rows
    return lines
