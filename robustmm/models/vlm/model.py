"""``GenerativeVLM``: any supported instruction-following VLM as a ``VLModel`` scored over a closed answer set.

Inputs follow the ``VLModel`` contract: pixels (B, 3, H, W) float in [0, 1] (the family's processor pipeline
runs inside, in torch: :mod:`.families`), texts as strings (the VQA question or the VE hypothesis; the
chat template and task instruction are added here: :mod:`.prompting`). Scores (B, C) fp32 are the
candidates' log-likelihoods under the language model, all candidates of a batch from one prompt pass
(:mod:`.scoring`); they are not normalised over the candidates (``loss`` and the text attacks take a
softmax over them).

A member adds one of: ``prompt`` (P, D_lm) virtual token embeddings in front of the language model's input
(PEFT prompt tuning / P-tuning, M²PT's textual prompts), ``prefix`` per-layer (keys, values) (PEFT prefix
tuning), ``m2pt`` visual prompts in the vision encoder (:mod:`.m2pt`). Weight adapters (LoRA, IA³) are merged
into the weights at load time (:mod:`.members`).

**Embeddings** (the seed paper's embedding FGSM): ``image`` (B, N, D_v) is the output of the vision tower's
patch embedding (the patch projections before position embeddings; Qwen2-VL: its 3-D patch convolution,
N = patches; Idefics3: all tiles' patches, tile-major); ``text`` (B, T, D_lm) is the word embeddings of the
question's tokens only (``context["attention_mask"]`` (B, T) marks real ones): template, instruction,
image tokens and learned prompts are never perturbed. ``scores_from_embeddings`` feeds perturbed patch
embeddings into the vision tower through a forward hook on the patch-embedding module.

**Memory.** Candidate rows go in chunks sized to ``memory_mb`` (default 1024 MB) of logits and cached
keys/values. On a CUDA out-of-memory error inside scoring, the batch is split in halves (recursively)
and ``info.extra["scoring_batch"]`` records the examples per pass that fitted; a backward pass that runs out
of memory is not retried (use ``gradient_checkpointing`` or a smaller batch). ``gradient_checkpointing``
recomputes each vision and language layer in the backward pass instead of storing its activations
(torch's non-reentrant checkpoint; eval mode, so no dropout draw differs). Weights may be bfloat16 (CUDA);
pixels, preprocessing and scores stay fp32.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from robustmm.errors import RobustMMError
from robustmm.models.base import Embeddings, ModelInfo, VLModel
from robustmm.models.vlm.families import Family, PixelInputs
from robustmm.models.vlm.m2pt import M2PTPrompts
from robustmm.models.vlm.prompting import PromptFormat
from robustmm.models.vlm.scoring import answer_log_likelihood, candidate_scores, greedy_answers, run_prompt
from robustmm.types import Task

logger = logging.getLogger(__name__)


class _Captured(Exception):
    """Raised by a forward hook once it has what it came for, to skip the rest of a forward pass."""


class GenerativeVLM(VLModel):
    """A VLM of a supported family (see module docstring); built by :func:`robustmm.models.vlm.members.load_vlm_member`."""

    def __init__(self, family: Family, task: Task, candidates: Sequence[str], info: ModelInfo, *, chat_template: str | None,
                 answer_end: int, image_size: int | None = None, prompt: torch.Tensor | None = None,
                 prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None, m2pt: M2PTPrompts | None = None,
                 memory_mb: float = 1024.0, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        from robustmm.models.hf import tokenizer_hash

        self.model, self.family, self.tokenizer = family.model, family, family.tokenizer
        self.task, self.info = Task(task), info
        self.candidates = tuple(candidates)
        if not self.candidates:
            raise RobustMMError(f"Model {info.name} has an empty candidate answer set.")
        self.tokenizer_id = tokenizer_hash(self.tokenizer)
        self.image_size = int(image_size or family.default_image_size())
        self.format = PromptFormat(family, self.task, chat_template, answer_end)
        self._blocks: dict[tuple[int, int], str] = {}
        self.prompt = nn.Parameter(prompt.detach().clone(), requires_grad=False) if prompt is not None else None
        self.prefix = nn.ParameterList([nn.Parameter(t.detach().clone(), requires_grad=False) for kv in prefix for t in kv]) \
            if prefix else None
        self.m2pt = None
        if m2pt is not None:
            self.attach_m2pt(m2pt)
        self.memory_mb = float(memory_mb)
        self.end_ids = {answer_end} | _ids(self.model.generation_config.eos_token_id) | _ids(self.tokenizer.eos_token_id)
        answers = [self.format.answer_ids(c) for c in self.candidates]
        length = max(len(a) for a in answers)
        self.context = int(getattr(family.text_config, "max_position_embeddings", 0) or 0)
        if self.context and length >= self.context:
            raise RobustMMError(f"The longest candidate answer takes {length} tokens, more than {info.name}'s context of {self.context}.")
        ids = torch.full((len(answers), length), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        valid = torch.zeros(len(answers), length, dtype=torch.bool)
        for i, answer in enumerate(answers):
            ids[i, : len(answer)], valid[i, : len(answer)] = torch.tensor(answer), True
        self.register_buffer("answer_ids", ids, persistent=False)  # (C, n): answer tokens + end token
        self.register_buffer("answer_valid", valid, persistent=False)
        self.info.extra.update({"prompt": self.format.kind, "answer_end": self.tokenizer.convert_ids_to_tokens(answer_end),
                                "image_size": self.image_size})
        if gradient_checkpointing:
            _checkpoint_layers(self.model)
        self.info.extra["gradient_checkpointing"] = bool(gradient_checkpointing)

    # -- text ------------------------------------------------------------------------------------------
    @property
    def model_dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def _image_block(self, height: int, width: int) -> str:
        """The prompt text of one image of this size (computed once per size)."""
        if (height, width) not in self._blocks:
            blank = torch.zeros(1, 3, height, width, device=self.device)
            self._blocks[(height, width)] = self.family.image_block(self.family.preprocess(blank))
        return self._blocks[(height, width)]

    def encode_texts(self, texts: Sequence[str], image_shape: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Left-padded prompt ids, attention mask and question mask (B, L), for images of ``image_shape``
        (default ``image_size`` square)."""
        height, width = image_shape or (self.image_size, self.image_size)
        rendered = self.format.render(list(texts), self._image_block(int(height), int(width)))
        encoded = self.family.tokenize([r.text for r in rendered])
        rows = encoded["input_ids"]
        length = max(len(r) for r in rows)
        learned = self._learned_prompt()
        prompt_tokens = 0 if learned is None else learned.shape[0]
        prefix_tokens = 0 if self.prefix is None else self.prefix[0].shape[-2]
        total = length + prompt_tokens + prefix_tokens + self.answer_ids.shape[1]
        if self.context and total > self.context:
            raise RobustMMError(f"A prompt of {length} tokens with its answer ({total} tokens in all) exceeds {self.info.name}'s "
                                f"context of {self.context} tokens; use shorter texts or smaller images.")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        question = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (row, spans, r) in enumerate(zip(rows, encoded["offset_mapping"], rendered)):
            start = length - len(row)
            ids[i, start:], mask[i, start:] = torch.tensor(row), 1
            question[i, start:] = torch.tensor([b > a and a < r.stop and b > r.start for a, b in spans], dtype=torch.bool)
        device = self.device
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "question_mask": question.to(device)}

    def unknown_words(self, words: Sequence[str]) -> list[bool]:
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return [False for _ in words]
        return [unk in self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]

    # -- images ----------------------------------------------------------------------------------------
    def preprocess(self, pixels: torch.Tensor) -> PixelInputs:
        """(B, 3, H, W) in [0, 1] -> the family's pixel inputs (fp32, differentiable)."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise RobustMMError(f"Pixels must be a (B, 3, H, W) tensor, not {tuple(pixels.shape)}.")
        return self.family.preprocess(pixels.float())

    # -- the VLModel interface ------------------------------------------------------------------------------
    def candidate_scores(self, pixels: torch.Tensor, texts) -> torch.Tensor:
        """(B, C) fp32 candidate log-likelihoods; differentiable in ``pixels``."""
        text_inputs = self.encode_texts(list(texts), tuple(pixels.shape[-2:])) if not isinstance(texts, dict) else texts
        return self._split_on_oom(lambda rows: self._score(self.preprocess(pixels[rows]), _select(text_inputs, rows)),
                                  pixels.shape[0])

    def embed(self, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor]) -> Embeddings:
        """image (B, N, D_v): patch embeddings; text (B, T, D_lm): the question tokens' word embeddings."""
        inputs = self.preprocess(pixels)
        captured = {}

        def grab(module, args, output):
            captured["out"] = output
            raise _Captured

        handle = self.family.patch_embedding.register_forward_hook(grab)
        try:
            self.family.image_features(inputs)
        except _Captured:
            pass
        finally:
            handle.remove()
        patches = captured["out"]
        b = pixels.shape[0]
        image = patches.flatten(2).transpose(1, 2).reshape(b, -1, patches.shape[1]) if patches.dim() == 4 \
            else patches.reshape(b, -1, patches.shape[-1])
        question = text_inputs["question_mask"]
        width = max(1, int(question.sum(dim=1).max()))
        index = torch.zeros(b, width, dtype=torch.long, device=question.device)
        valid = torch.zeros(b, width, dtype=torch.long, device=question.device)
        for i in range(b):
            where = question[i].nonzero().flatten()
            index[i, : len(where)], valid[i, : len(where)] = where, 1
        words = self.embed_tokens(text_inputs["input_ids"].gather(1, index))
        return Embeddings(image=image, text=words, context={
            "attention_mask": valid, "question_index": index, "prompt": text_inputs, "pixels": inputs.detach(),
            "patch_shape": tuple(patches.shape)})

    def scores_from_embeddings(self, embeddings: Embeddings) -> torch.Tensor:
        """(B, C) fp32 candidate log-likelihoods from (perturbed) patch and question embeddings."""
        context = embeddings.context
        patches = embeddings.image.to(self.model_dtype)
        shape = context["patch_shape"]
        if len(shape) == 4:  # conv output (B*T, D, h, w)
            patches = patches.reshape(shape[0], shape[2] * shape[3], shape[1]).transpose(1, 2).reshape(shape)
        else:
            patches = patches.reshape(shape)
        handle = self.family.patch_embedding.register_forward_hook(lambda module, args, output: patches)
        try:
            features = self.family.image_features(context["pixels"])
        finally:
            handle.remove()
        text_inputs = context["prompt"]
        words = self.embed_tokens(text_inputs["input_ids"])
        valid = context["attention_mask"].bool()
        rows = torch.arange(words.shape[0], device=words.device).unsqueeze(1).expand_as(valid)[valid]
        cols = context["question_index"][valid]
        words = words.index_put((rows, cols), embeddings.text.to(words.dtype)[valid])
        return self._score_features(features, words, text_inputs, context["pixels"])

    @torch.no_grad()
    def generate_answers(self, pixels: torch.Tensor, texts: Sequence[str], max_new_tokens: int = 16) -> list[str]:
        """Open-ended greedy answers (for clean accuracy with the official VQA metric): one string per example."""
        text_inputs = self.encode_texts(list(texts), tuple(pixels.shape[-2:]))
        inputs = self.preprocess(pixels)
        state = self._prompt_state(self.family.image_features(inputs), self.embed_tokens(text_inputs["input_ids"]), text_inputs, inputs)
        ids = greedy_answers(self.family, state, self.embed_tokens, self.end_ids, max_new_tokens)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def attach_m2pt(self, prompts: M2PTPrompts) -> None:
        """Give this model M²PT prompts (visual ones hooked into the vision tower, textual ones in front of the prompt)."""
        if self.m2pt is not None or self.prompt is not None or self.prefix is not None:
            raise RobustMMError(f"{self.info.name} already has learned prompts; M²PT prompts go on a plain checkpoint.")
        prompts.attach(self.family)
        self.m2pt = prompts

    def gold_log_likelihood(self, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """(B,) log-likelihood of each example's target candidate (indices (B,)) only: the training objective, cheaper
        than scoring every candidate."""
        inputs = self.preprocess(pixels)
        state = self._prompt_state(self.family.image_features(inputs), self.embed_tokens(text_inputs["input_ids"]), text_inputs, inputs)
        rows = torch.arange(pixels.shape[0], device=targets.device)
        return answer_log_likelihood(self.family, state, rows, self.answer_ids[targets], self.answer_valid[targets], self.embed_tokens)

    # -- internals -------------------------------------------------------------------------------------
    def _score(self, inputs: PixelInputs, text_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        features = self.family.image_features(inputs)
        return self._score_features(features, self.embed_tokens(text_inputs["input_ids"]), text_inputs, inputs)

    def _score_features(self, features, words, text_inputs, inputs) -> torch.Tensor:
        state = self._prompt_state(features, words, text_inputs, inputs)
        return candidate_scores(self.family, state, self.answer_ids, self.answer_valid, self.embed_tokens, self._rows_per_chunk(state))

    def _prompt_state(self, features: torch.Tensor, words: torch.Tensor, text_inputs: dict[str, torch.Tensor], inputs: PixelInputs):
        """Merge image features into the image-token positions, put the learned prompt in front, run the prompt pass."""
        ids, mask = text_inputs["input_ids"], text_inputs["attention_mask"]
        image = ids == self.family.config.image_token_id
        dtype = words.dtype
        if int(image.sum()) != features.shape[0] * features.shape[1]:
            raise RobustMMError(f"The prompts hold {int(image.sum())} image tokens for {features.shape[0]} x {features.shape[1]} "
                                "image features; encode the texts for images of this size.")
        embeds = words.masked_scatter(image.unsqueeze(-1).expand_as(words), features.to(dtype))
        offset = 0
        learned = self._learned_prompt()
        if learned is not None:
            learned = learned.to(dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
            offset = learned.shape[1]
            embeds = torch.cat([learned, embeds], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], offset), mask], dim=1)
        positions = self.family.positions(mask, ids, inputs, offset)
        prefix = None
        if self.prefix is not None:
            flat = [t.to(dtype) for t in self.prefix]
            prefix = list(zip(flat[0::2], flat[1::2]))
            positions = positions + prefix[0][0].shape[-2]  # the prefix's virtual tokens come first
        return run_prompt(self.family, embeds, mask, positions, prefix)

    def _learned_prompt(self) -> torch.Tensor | None:
        """(P, D) embeddings that go in front of the prompt: a PEFT prompt adapter's or M²PT's textual prompts, if any."""
        if self.m2pt is not None and self.m2pt.text.numel():
            return self.m2pt.text
        return self.prompt

    def _rows_per_chunk(self, state) -> int:
        """Candidate rows per chunk so logits and each row's copy of the cached keys/values fit ``memory_mb``."""
        n = self.answer_ids.shape[1]
        vocab = self.family.lm_head.weight.shape[0]
        cache = sum(k[0].numel() + v[0].numel() for k, v in state.past) * state.past[0][0].element_size()
        per_row = 2 * 4 * max(n - 1, 1) * vocab + cache
        return max(1, int(self.memory_mb * 2**20 // per_row))

    def _split_on_oom(self, run, n: int) -> torch.Tensor:
        """``run(rows)`` over all n examples; on CUDA out-of-memory, over halves of them (recursively)."""
        def attempt(rows: torch.Tensor) -> torch.Tensor:
            try:
                return run(rows)
            except torch.OutOfMemoryError:
                if len(rows) == 1:
                    raise RobustMMError(f"{self.info.name} runs out of GPU memory scoring a single example; "
                                        "lower memory_mb, use bfloat16 or a larger GPU.") from None
                torch.cuda.empty_cache()
                half = len(rows) // 2
                self.info.extra["scoring_batch"] = min(half, self.info.extra.get("scoring_batch", half))
                logger.warning("%s: out of GPU memory; scoring %d examples at a time", self.info.name, half)
                return torch.cat([attempt(rows[:half]), attempt(rows[half:])])

        return attempt(torch.arange(n, device=self.device))


def _select(text_inputs: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    if len(rows) == next(iter(text_inputs.values())).shape[0]:
        return text_inputs
    return {k: v[rows] for k, v in text_inputs.items()}


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple)) else {int(value)}


def _checkpoint_layers(model: nn.Module) -> None:
    """Make every transformer layer of ``model`` recompute its activations in the backward pass (when gradients are
    being taken) instead of storing them: torch's non-reentrant checkpoint around each layer's forward."""
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and not getattr(module, "_robustmm_checkpointed", False):
            forward = module.forward

            def checkpointed(*args, _forward=forward, **kwargs):
                if not torch.is_grad_enabled():
                    return _forward(*args, **kwargs)
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

            module.forward = checkpointed
            module._robustmm_checkpointed = True

