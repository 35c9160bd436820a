"""Prompts of instruction-following VLMs: the chat template, the task instruction, the question's tokens,
and how each candidate answer is tokenised.

The prompt is the processor's chat template applied to one user turn holding the image and
``<question>\\n<instruction>`` (VQA: "Answer the question using a single word or phrase.", the LLaVA-1.5
short-answer instruction; visual entailment: the three verbalised labels as options), with the assistant
turn opened (``add_generation_prompt``). A processor without a chat template gets the family's
fallback prompt (PaliGemma: its ``answer en <question>`` task prefix; BLIP-2: ``Question: <question>
Answer:``; others: image, question, instruction, ``Answer:``), and ``GenerativeVLM.info.extra["prompt"]``
says which was used so the report can state it.

The question's characters are located in the rendered prompt, so its tokens are known from the fast
tokenizer's offsets (the embedding attack perturbs exactly those; the template and the instruction are
never touched).

A candidate answer is scored as the tokens the model would emit after the prompt: the tokenisation of
``tail + joiner + answer`` minus that of ``tail`` (``tail`` is the prompt after the question; ``joiner`` a
space when the prompt ends in a non-space character, as "ASSISTANT:" or "Answer:"), followed by the
answer-end token (the generation config's end-of-sequence token, e.g. ``<|im_end|>``, ``</s>``,
``<end_of_utterance>``), so "red" and "red circle" are told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from robustmm.errors import RobustMMError
from robustmm.models.unified import VE_VERBALISER
from robustmm.models.vlm.families import QUESTION, Family
from robustmm.types import Task

VQA_INSTRUCTION = "Answer the question using a single word or phrase."
VE_QUESTION = 'Does the image describe "{hypothesis}"?'
VE_INSTRUCTION = "Options: yes, maybe, no. Answer with one of the options."


def chat_template_of(folder, tokenizer) -> str | None:
    """The chat template saved with a checkpoint: ``chat_template.jinja`` / ``chat_template.json`` (processor),
    else the tokenizer's."""
    import json
    from pathlib import Path

    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        try:
            return json.loads((folder / "chat_template.json").read_text()).get("chat_template")
        except ValueError as err:
            raise RobustMMError(f"{folder / 'chat_template.json'} is not valid JSON ({err}).") from err
    return getattr(tokenizer, "chat_template", None) or None


@dataclass(frozen=True)
class Rendered:
    """One prompt string and where its question lies in it (character span [start, stop))."""

    text: str
    start: int
    stop: int


class PromptFormat:
    """Renders the prompts of one model for one task and tokenises candidate answers."""

    def __init__(self, family: Family, task: Task, chat_template: str | None, answer_end: int) -> None:
        self.family, self.task, self.answer_end = family, Task(task), answer_end
        content = f"{QUESTION}\n{VQA_INSTRUCTION}" if self.task is Task.VQA else \
            f"{VE_QUESTION.format(hypothesis=QUESTION)}\n{VE_INSTRUCTION}"
        if chat_template:
            from jinja2.exceptions import TemplateError

            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": content}]}]
            try:
                rendered = family.tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                                                add_generation_prompt=True)
            except (TemplateError, ValueError, TypeError, KeyError) as err:
                raise RobustMMError(f"The {family.name} chat template cannot render an image and a question ({err}).") from err
            self.kind = "chat template"
        else:
            # No template: the family's fallback; PaliGemma's and BLIP-2's take the bare question (their task formats).
            bare = QUESTION if self.task is Task.VQA else VE_QUESTION.format(hypothesis=QUESTION) + " " + VE_INSTRUCTION
            rendered = family.fallback_prompt(bare if family.name in ("paligemma", "blip2") else content)
            self.kind = "fallback: " + rendered.replace(QUESTION, "{question}")
        if rendered.count(QUESTION) != 1:
            raise RobustMMError(f"The {family.name} chat template does not keep the question text intact.")
        self.head, self.tail = rendered.split(QUESTION)
        if family.image_in_text and family.image_token not in self.head:
            raise RobustMMError(f"The {family.name} prompt has no image placeholder {family.image_token!r} before the question.")

    def render(self, texts: Sequence[str], image_block: str) -> list[Rendered]:
        """The prompt of each text, with the image placeholder replaced by ``image_block``."""
        head = self.head.replace(self.family.image_token, image_block, 1) if self.family.image_in_text else self.head
        return [Rendered(head + text + self.tail, len(head), len(head) + len(text)) for text in texts]

    def answer_text(self, candidate: str) -> str:
        """The text a candidate is scored as (VE labels verbalised to yes / maybe / no)."""
        return VE_VERBALISER.get(candidate, candidate) if self.task is Task.VE else candidate

    def answer_ids(self, candidate: str) -> list[int]:
        """Token ids the model emits for ``candidate`` after the prompt, ending with the answer-end token."""
        tokenizer = self.family.tokenizer
        joiner = " " if self.tail and not self.tail[-1].isspace() else ""
        tail = tokenizer(self.tail, add_special_tokens=False)["input_ids"]
        both = tokenizer(self.tail + joiner + self.answer_text(candidate), add_special_tokens=False)["input_ids"]
        answer = both[len(tail):] if both[: len(tail)] == tail else \
            tokenizer(joiner + self.answer_text(candidate), add_special_tokens=False)["input_ids"]
        if not answer:
            raise RobustMMError(f"The candidate answer {candidate!r} tokenises to nothing.")
        return answer + [self.answer_end]
