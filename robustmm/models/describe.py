"""What the report says about a pair's members: one markdown table from their ``ModelInfo`` (pure; no I/O).

Columns: member, model, family, tuning (with the PEFT / M²PT kind), trainable parameters and their share, base,
prompt (``chat template`` or the fallback format a VLM used), and notes (dtype, image size, answer-end token,
gradient checkpointing, the batch scoring fell back to after running out of GPU memory).
"""

from __future__ import annotations

from robustmm.models.base import ModelInfo


def _tuning(info: ModelInfo) -> str:
    kind = info.extra.get("peft_type")
    return f"{info.tuning} ({kind})" if kind else info.tuning


def _notes(info: ModelInfo) -> str:
    extra = info.extra
    notes = []
    if extra.get("dtype"):
        notes.append(str(extra["dtype"]))
    if extra.get("image_size"):
        notes.append(f"{extra['image_size']} px images")
    if extra.get("answer_end"):
        notes.append(f"answers end with `{extra['answer_end']}`")
    if extra.get("gradient_checkpointing"):
        notes.append("gradient checkpointing")
    if extra.get("scoring_batch"):
        notes.append(f"out of GPU memory: scored {extra['scoring_batch']} examples at a time")
    return "; ".join(notes)


def member_table(members: dict[str, ModelInfo]) -> list[str]:
    """Markdown lines of a table with one row per member (``{"prompt": info, "finetune": info}``, report order)."""
    lines = ["| member | model | family | tuning | trainable parameters | base | prompt | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for member, info in members.items():
        prompt = str(info.extra.get("prompt", "")).replace("\n", "\\n").replace("|", "\\|")
        trained = f"{info.trainable_parameters:,} of {info.total_parameters:,} ({100 * info.trainable_share:.3g}%)"
        base = info.extra.get("base_model") or info.base
        lines.append(f"| {member} | {info.name} | {info.family} | {_tuning(info)} | {trained} | {base} | {prompt} | {_notes(info)} |")
    return lines
