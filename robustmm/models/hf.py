"""Hugging Face ViLT and BLIP question-answering checkpoints as ``VLModel``\\ s, plain or prompt-tuned (PEFT).

A *member* is one of:

- a finetuned HF folder (``config.json`` with ``model_type`` ``vilt`` or ``blip`` + weights +
  processor files): ``ViltForQuestionAnswering`` or ``BlipForQuestionAnswering``; tuning "finetune";
- a PEFT prompt adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) on the base
  named by ``base_model_name_or_path``: tuning "prompt". ``PROMPT_TUNING`` and ``P_TUNING``
  adapters are supported (learned input embeddings); ``PREFIX_TUNING`` is refused (ViLT/BLIP
  take no ``past_key_values``), as are non-prompt adapters (LoRA, ...).

Either may be a local folder or a Hub id already in the local HF cache; nothing is downloaded
(every load passes ``local_files_only=True``), and an uncached id is one RobustMMError sentence.

Inputs follow the ``VLModel`` contract: pixels (B, 3, H, W) float in [0, 1]. Inside, each model
resizes them (bicubic, only if H, W differ) to its processor's size and normalises with the
processor's mean/std, in fp32, then casts to the model dtype. Scores come back as fp32.

**Candidate scoring.**

- ViLT is a classifier over its answer vocabulary ``config.id2label`` (VQA: 3129 answers), trained
  with a per-answer sigmoid (BCE). Candidates must be labels of that vocabulary (VE labels are
  verbalised to yes / maybe / no first); a candidate outside it is a RobustMMError (not silently
  dropped: an answer the model can never give would bias accuracy). Scores are
  ``log_softmax`` of the logits *restricted to the candidates*: a proper log-distribution over the
  closed answer set like the built-in model's, whose argmax equals ViLT's own (sigmoid is
  monotone) prediction among the candidates.
- BLIP is generative: a candidate's score is the teacher-forced log-likelihood, under the text
  decoder over the full vocabulary, of its tokens followed by ``[SEP]`` given ``[DEC]``
  (``text_config.bos_token_id``) and the question encoding (which cross-attends to the image):
  BLIP's own ``rank_answer``. Scores are *not* normalised over the candidates (a softmax over
  them, as ``loss`` and the text attacks take, gives the candidate distribution). All candidates
  are decoded in one batch of B x C rows (in chunks of ``decoder_rows`` without gradients), so
  memory grows with B x C x answer length x vocabulary: attack big answer sets on a GPU.

**Embeddings** (what the seed paper's embedding FGSM perturbs), (B, N, D) and (B, T, D):

- ViLT: ``image`` = patch projections (the conv ``patch_embeddings`` output, before the [CLS]
  token, position and modality embeddings); ``text`` = word embeddings of the question tokens.
  ``scores_from_embeddings`` adds [CLS], (interpolated) positions and runs ViLT with
  ``image_embeds``. This replaces ViLT's ``visual_embed``, which draws patches with
  ``torch.multinomial`` (a random permutation even when nothing is dropped): here every patch is
  kept in raster order, so outputs are deterministic and equal ViLT's up to float summation order.
- BLIP: ``image`` = patch projections of the vision model (before class token and positions);
  ``text`` = word embeddings of the question tokens in the text encoder.
- A prompt adapter's virtual tokens are prepended *after* ``embed`` (they are parameters, not input),
  exactly where PEFT puts them: before the question embeddings (ViLT: so ViLT's pooler reads the
  first virtual token, as in PEFT's forward; BLIP: in the question encoder).

The image of the ViLT path is resized to a square ``image_size`` x ``image_size`` (the
processor's ``shortest_edge``) instead of ViLT's aspect-preserving resize.

**Pairs.** ``info.base`` is ``<family>@<hash of the backbone config>`` (the HF config without
labels, dtype and loading flags); for an adapter, the config of the base it sits on. A finetuned
HF checkpoint does not record which checkpoint it was finetuned from, and finetuning changes every
weight, so weights cannot be compared: ``check_pair`` refuses a different architecture, family,
tokenizer (``tokenizer_id``: vocabulary hash) or answer set, but not two different pretrainings
of an identical architecture. ``info.extra`` names the folders (``path``, ``source``, ``base_model``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustmm.errors import RobustMMError
from robustmm.files import read_json
from robustmm.models.base import Embeddings, ModelInfo, VLModel, kept_characters
from robustmm.models.unified import VE_TEMPLATE, VE_VERBALISER
from robustmm.types import VE_LABELS, Task

logger = logging.getLogger(__name__)

FAMILIES = ("vilt", "blip")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
PROMPT_ADAPTERS = ("PROMPT_TUNING", "P_TUNING")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# Config keys that describe loading, training or labels rather than the backbone (left out of its hash).
_NOT_ARCHITECTURE = {
    "id2label", "label2id", "num_labels", "_name_or_path", "architectures", "torch_dtype", "dtype",
    "transformers_version", "problem_type", "return_dict", "output_attentions", "output_hidden_states",
    "use_cache", "max_image_length", "label_smoothing", "finetuning_task", "task_specific_params",
    "_attn_implementation_autoset", "_commit_hash", "tokenizer_class", "prefix",
}


# ---------------------------------------------------------------------------
# Small helpers: dtype, folders, hashes
# ---------------------------------------------------------------------------


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``float32``/``fp32`` (default) or ``bfloat16``/``bf16`` (CUDA only) -> torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype, str(dtype))
    else:
        name = str(dtype).lower()
    if name not in DTYPES:
        raise RobustMMError(f"Unknown dtype {dtype!r}: use float32 or bfloat16.")
    resolved = DTYPES[name]
    if resolved is torch.bfloat16 and torch.device(device).type != "cuda":
        raise RobustMMError("dtype bfloat16 needs a CUDA device; use float32 on CPU.")
    return resolved


def resolve_folder(ref: str | Path, what: str = "Checkpoint", relative_to: Path | None = None) -> Path:
    """A checkpoint folder from a local path (also tried relative to ``relative_to``) or a cached Hub id.

    Never downloads: a Hub id that is not in the local HF cache is a RobustMMError.
    """
    path = Path(ref).expanduser()
    tries = [path] + ([Path(relative_to) / path] if relative_to is not None and not path.is_absolute() else [])
    for candidate in tries:
        if candidate.is_dir():
            return candidate
        if candidate.exists():
            raise RobustMMError(f"{what} {candidate} is a file, not a checkpoint folder.")
    text = str(ref)
    if not path.is_absolute() and HUB_ID.fullmatch(text):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        try:
            return Path(snapshot_download(text, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
            raise RobustMMError(
                f"{what} {text!r} is neither a local folder nor a Hugging Face model in the local cache "
                f"(robustmm never downloads; fetch it first, e.g. `huggingface-cli download {text}`)."
            ) from None
    raise RobustMMError(f"{what} {ref} does not exist.")


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _architecture(config: dict) -> dict:
    return {k: _architecture(v) if isinstance(v, dict) else v for k, v in config.items() if k not in _NOT_ARCHITECTURE}


def config_hash(config) -> str:
    """16 hex digits identifying a backbone's architecture: the HF config minus labels and loading flags."""
    return _digest(_architecture(config.to_dict()))


def tokenizer_hash(tokenizer) -> str:
    """16 hex digits identifying a tokenizer: its vocabulary and special tokens."""
    return _digest([sorted(tokenizer.get_vocab().items()), sorted(tokenizer.all_special_tokens)])


# ---------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------


class HFQAModel(VLModel):
    """Shared parts of the ViLT and BLIP adapters: preprocessing, tokenising, prompts.

    ``model``: the HF question-answering model (eval mode, frozen); ``prompt``: (P, D) virtual
    token embeddings of a prompt adapter, or None; ``image_processor``: its mean, std and size
    are read once here.
    """

    family = ""

    def __init__(self, model: nn.Module, tokenizer, image_processor, task: Task, candidates: Sequence[str],
                 prompt: torch.Tensor | None, info: ModelInfo, max_text_len: int) -> None:
        super().__init__()
        self.model, self.tokenizer, self.task = model, tokenizer, Task(task)
        self.candidates = tuple(candidates)
        self.prompt = nn.Parameter(prompt.detach().clone(), requires_grad=False) if prompt is not None else None
        self.info = info
        self.tokenizer_id = tokenizer_hash(tokenizer)
        self.max_text_len = max_text_len - (0 if prompt is None else prompt.shape[0])
        if self.max_text_len < 4:
            raise RobustMMError(f"Model {info.name} leaves only {self.max_text_len} text positions after its prompt.")
        size, mean, std = _processor_geometry(image_processor)
        self.input_size = size  # (height, width) the model sees
        self.image_size = size[0]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if not self.candidates:
            raise RobustMMError(f"Model {info.name} has an empty candidate answer set.")

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def answer_text(self, candidate: str) -> str:
        """The text a candidate is scored as (VE labels verbalised to yes / maybe / no)."""
        return VE_VERBALISER.get(candidate, candidate) if self.task is Task.VE else candidate

    def template(self, text: str) -> str:
        return VE_TEMPLATE.format(text) if self.task is Task.VE else text

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> resized, normalised (B, 3, h, w) in the model dtype (differentiable)."""
        x = pixels.float()
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", align_corners=False, antialias=True)
        x = (x - self.mean.float()) / self.std.float()
        return x.to(self.model_dtype)

    def encode_texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask (B, T) long of the templated texts ([CLS] ... [SEP], truncated)."""
        batch = self.tokenizer([self.template(t) for t in texts], padding=True, truncation=True,
                               max_length=self.max_text_len, return_tensors="pt")
        device = self.device
        return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}

    def with_prompt(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepend the virtual tokens (if any): text (B, T, D), mask (B, T) -> (B, P+T, D), (B, P+T)."""
        text = text.to(self.model_dtype)
        if self.prompt is None:
            return text.clone(), mask  # a copy: BLIP's text embeddings add positions in place
        b = text.shape[0]
        prompt = self.prompt.to(text.dtype).unsqueeze(0).expand(b, -1, -1)
        ones = torch.ones(b, prompt.shape[1], dtype=mask.dtype, device=mask.device)
        return torch.cat([prompt, text], dim=1), torch.cat([ones, mask], dim=1)

    def unknown_words(self, words: Sequence[str]) -> list[bool]:
        unk = self.tokenizer.unk_token_id
        return [unk in self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]

    def text_reach(self, text: str) -> int:
        """Characters of ``text`` inside the tokenizer's budget (``max_text_len`` minus the prompt, template included)."""
        return kept_characters(self.tokenizer, self.template, text, self.max_text_len)


def _processor_geometry(image_processor) -> tuple[tuple[int, int], list[float], list[float]]:
    """(height, width), mean, std from an HF image processor (ViLT: shortest_edge; BLIP: height/width)."""
    size = dict(getattr(image_processor, "size", None) or {})
    if "height" in size and "width" in size:
        hw = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        hw = (int(size["shortest_edge"]),) * 2
    else:
        raise RobustMMError(f"The image processor's size {size} has neither height/width nor shortest_edge.")
    if getattr(image_processor, "do_normalize", True):
        mean, std = list(image_processor.image_mean), list(image_processor.image_std)
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    return hw, mean, std


class ViltQA(HFQAModel):
    """``ViltForQuestionAnswering`` scored over candidates of its answer vocabulary (see module docstring)."""

    family = "vilt"

    def __init__(self, model, tokenizer, image_processor, task, candidates, prompt, info) -> None:
        config = model.config
        super().__init__(model, tokenizer, image_processor, task, candidates, prompt, info, config.max_position_embeddings)
        label2id = {str(k): int(v) for k, v in config.label2id.items()}
        answers = [self.answer_text(c) for c in self.candidates]
        missing = [a for a in answers if a not in label2id]
        if missing:
            raise RobustMMError(
                f"{len(missing)} of the {len(answers)} candidate answers are not in the ViLT model's answer vocabulary "
                f"(e.g. {', '.join(repr(a) for a in missing[:3])}); use candidates from its config.id2label."
            )
        self.register_buffer("label_ids", torch.tensor([label2id[a] for a in answers]), persistent=False)
        patch = config.patch_size
        if self.input_size[0] % patch or self.input_size[1] % patch:
            raise RobustMMError(f"ViLT image size {self.input_size} is not a multiple of its patch size {patch}.")
        self.grid = (self.input_size[0] // patch, self.input_size[1] // patch)

    def embed(self, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor]) -> Embeddings:
        """image (B, N, D): patch projections in raster order; text (B, T, D): word embeddings."""
        vilt = self.model.vilt
        patches = vilt.embeddings.patch_embeddings(self.preprocess(pixels))  # (B, D, h, w)
        text = vilt.embeddings.text_embeddings.word_embeddings(text_inputs["input_ids"])
        return Embeddings(image=patches.flatten(2).transpose(1, 2), text=text,
                          context={"attention_mask": text_inputs["attention_mask"]})

    def _image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Patch projections (B, N, D) -> ViLT image tokens (B, 1+N, D): [CLS] + patches, plus positions."""
        emb, config = self.model.vilt.embeddings, self.model.config
        b, n, d = image.shape
        h, w = self.grid
        if n != h * w:
            raise RobustMMError(f"ViLT image embeddings have {n} patches, expected {h * w}.")
        side = config.image_size // config.patch_size
        spatial = emb.position_embeddings[:, 1:, :].transpose(1, 2).reshape(1, d, side, side)
        # The same bilinear interpolation ViLT's visual_embed applies (an identity when the grid matches).
        pos = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=True).flatten(2).transpose(1, 2)
        x = torch.cat([emb.cls_token.expand(b, -1, -1), image], dim=1)
        pos = torch.cat([emb.position_embeddings[:, :1, :], pos], dim=1)
        return emb.dropout(x + pos)

    def scores_from_embeddings(self, embeddings: Embeddings) -> torch.Tensor:
        """Candidate log-probabilities (B, C) fp32: log_softmax of the answer logits over the candidates."""
        image = self._image_tokens(embeddings.image.to(self.model_dtype))
        text, mask = self.with_prompt(embeddings.text, embeddings.context["attention_mask"])
        b = image.shape[0]
        out = self.model.vilt(
            inputs_embeds=text, attention_mask=mask, token_type_ids=torch.zeros_like(mask),
            image_embeds=image, pixel_mask=torch.ones(b, image.shape[1], dtype=mask.dtype, device=image.device),
        )
        logits = self.model.classifier(out.pooler_output).float()  # (B, L)
        return logits.index_select(1, self.label_ids).log_softmax(dim=-1)


class BlipQA(HFQAModel):
    """``BlipForQuestionAnswering`` scored by the decoder's log-likelihood of each candidate (see module docstring)."""

    family = "blip"
    #: decoder rows (examples x candidates) per chunk when no gradient is needed (memory bound, same result)
    decoder_rows: int = 512

    def __init__(self, model, tokenizer, image_processor, task, candidates, prompt, info) -> None:
        text_config = model.config.text_config
        super().__init__(model, tokenizer, image_processor, task, candidates, prompt, info,
                         text_config.max_position_embeddings)
        bos, eos, pad = text_config.bos_token_id, text_config.sep_token_id, text_config.pad_token_id
        if bos is None or eos is None or not 0 <= bos < text_config.vocab_size:
            raise RobustMMError(f"BLIP model {info.name} has no usable decoder start ({bos}) / end ({eos}) token ids.")
        tokens = [tokenizer(self.answer_text(c), add_special_tokens=False)["input_ids"] + [eos] for c in self.candidates]
        length = max(len(t) for t in tokens)
        inputs = torch.full((len(tokens), length), pad if pad is not None else 0, dtype=torch.long)
        targets = torch.zeros((len(tokens), length), dtype=torch.long)
        valid = torch.zeros((len(tokens), length), dtype=torch.bool)
        for i, seq in enumerate(tokens):
            inputs[i, : len(seq)] = torch.tensor([bos] + seq[:-1])
            targets[i, : len(seq)] = torch.tensor(seq)
            valid[i, : len(seq)] = True
        # (C, L): decoder inputs [DEC] a1..an, targets a1..an [SEP], and which positions are real.
        self.register_buffer("answer_inputs", inputs, persistent=False)
        self.register_buffer("answer_targets", targets, persistent=False)
        self.register_buffer("answer_valid", valid, persistent=False)

    def embed(self, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor]) -> Embeddings:
        """image (B, N, D_v): vision patch projections; text (B, T, D_t): question word embeddings."""
        x = self.preprocess(pixels)
        patches = self.model.vision_model.embeddings.patch_embedding(x)  # (B, D_v, h, w)
        text = self.model.text_encoder.embeddings.word_embeddings(text_inputs["input_ids"])
        return Embeddings(image=patches.flatten(2).transpose(1, 2), text=text,
                          context={"attention_mask": text_inputs["attention_mask"]})

    def _vision(self, image: torch.Tensor) -> torch.Tensor:
        """Patch projections (B, N, D_v) -> vision encoder output (B, 1+N, D_v)."""
        vision = self.model.vision_model
        emb = vision.embeddings
        b = image.shape[0]
        x = torch.cat([emb.class_embedding.to(image.dtype).expand(b, -1, -1), image], dim=1)
        x = x + emb.interpolate_pos_encoding(x, *self.input_size).to(image.dtype)
        hidden = vision.encoder(inputs_embeds=x).last_hidden_state
        return vision.post_layernorm(hidden)

    def scores_from_embeddings(self, embeddings: Embeddings) -> torch.Tensor:
        """Candidate log-likelihoods (B, C) fp32: sum over each answer's tokens (+[SEP]) of log p(token)."""
        image = self._vision(embeddings.image.to(self.model_dtype))
        text, mask = self.with_prompt(embeddings.text, embeddings.context["attention_mask"])
        image_mask = torch.ones(image.shape[:2], dtype=mask.dtype, device=image.device)
        question = self.model.text_encoder(inputs_embeds=text, attention_mask=mask, encoder_hidden_states=image,
                                           encoder_attention_mask=image_mask, return_dict=True).last_hidden_state
        b, c = question.shape[0], len(self.candidates)
        step = c if torch.is_grad_enabled() else max(1, self.decoder_rows // max(b, 1))
        return torch.cat([self._decode(question, mask, start, min(c, start + step)) for start in range(0, c, step)], dim=1)

    def _decode(self, question: torch.Tensor, mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Log-likelihoods (B, stop-start) of candidates [start, stop) given question states (B, T, D)."""
        b, c = question.shape[0], stop - start
        inputs = self.answer_inputs[start:stop].repeat(b, 1)  # (B*c, L): example-major
        targets = self.answer_targets[start:stop].repeat(b, 1)
        valid = self.answer_valid[start:stop].repeat(b, 1)
        logits = self.model.text_decoder(
            input_ids=inputs, attention_mask=valid.long(), encoder_hidden_states=question.repeat_interleave(c, dim=0),
            encoder_attention_mask=mask.repeat_interleave(c, dim=0), use_cache=False, return_dict=True,
        ).logits.float()  # (B*c, L, V)
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
        return logp.masked_fill(~valid, 0.0).sum(dim=-1).view(b, c)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

_CLASSES = {"vilt": ("ViltForQuestionAnswering", ViltQA), "blip": ("BlipForQuestionAnswering", BlipQA)}


def _family(folder: Path) -> str:
    model_type = read_json(folder / "config.json", "Checkpoint file").get("model_type")
    if model_type not in FAMILIES:
        from robustmm.models.vlm.members import supported_families

        raise RobustMMError(f"Hugging Face model {folder} is a {model_type!r} model; robustmm supports {supported_families()}.")
    return model_type


def _load_hf(folder: Path, family: str, allowed_missing: Sequence[str] = ()) -> tuple[nn.Module, object, object]:
    """(question-answering model in eval mode, tokenizer, image processor) of a local HF folder."""
    import transformers

    class_name, _ = _CLASSES[family]
    try:
        model, loading = getattr(transformers, class_name).from_pretrained(folder, local_files_only=True, output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        image_processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True, use_fast=False)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RobustMMError(f"Could not load the {class_name} model, tokenizer or image processor from {folder} ({first}).") from err
    missing = [k for k in loading.get("missing_keys", []) if k.split(".")[0] not in allowed_missing]
    if missing:
        raise RobustMMError(f"{folder} is not a {class_name} checkpoint: it lacks {len(missing)} weights (e.g. {missing[0]}).")
    return model.eval(), tokenizer, image_processor


def _candidates(family: str, task: Task, model, candidates: Sequence[str] | None, name: str) -> tuple[str, ...]:
    """The candidate set: given, else VE labels (VE) or ViLT's answer vocabulary; BLIP VQA needs them given."""
    if candidates is not None:
        return tuple(dict.fromkeys(str(c) for c in candidates))
    if task is Task.VE:
        return VE_LABELS
    if family == "vilt":
        id2label = model.config.id2label
        return tuple(str(id2label[i]) for i in sorted(id2label))
    raise RobustMMError(f"BLIP model {name} is generative and has no answer set of its own: give candidates (the dataset's answers).")


def _count(module: nn.Module) -> int:
    """Parameters used at inference (PEFT's saved copies counted once, not with the originals they replace)."""
    return sum(p.numel() for n, p in module.named_parameters() if ".original_module." not in n)


def member_basics(path: str | Path, device: torch.device | str, dtype: str | torch.dtype | None,
                  task: str | Task | None, name: str | None) -> tuple[Path, torch.device, torch.dtype, Task, str, dict]:
    """What every Hugging Face member loader starts from: the checkpoint folder (local or cached, never downloaded),
    the device, the torch dtype, the task (vqa by default), the member's name (default: the folder's name) and the
    ``ModelInfo.extra`` entries every such member records (path, source, dtype)."""
    folder = resolve_folder(path)
    device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        task = Task(task or "vqa")
    except ValueError as err:
        raise RobustMMError(f"Unknown task {task!r}: use vqa or ve.") from err
    name = name or (Path(path).name if Path(path).exists() else str(path))
    extra = {"path": str(folder), "source": str(path), "dtype": str(torch_dtype).replace("torch.", "")}
    return folder, device, torch_dtype, task, name, extra


def load_hf_member(path: str | Path, device: torch.device, *, dtype: str | torch.dtype | None = "float32",
                   task: str | Task | None = None, candidates: Sequence[str] | None = None,
                   name: str | None = None) -> HFQAModel:
    """A HF ViLT/BLIP folder or PEFT prompt-adapter folder as a ready ``VLModel`` (eval, frozen) on ``device``.

    ``task`` vqa (default) or ve; ``candidates``: the closed answer set (default: VE labels for VE,
    ViLT's ``id2label`` for VQA; required for BLIP VQA); ``dtype`` float32 or bfloat16 (CUDA).
    """
    folder, device, torch_dtype, task, name, extra = member_basics(path, device, dtype, task, name)
    prompt = None
    adapter_file = folder / "adapter_config.json"
    if adapter_file.is_file():
        adapter = read_json(adapter_file, "Checkpoint file")
        peft_type = str(adapter.get("peft_type", ""))
        if peft_type == "PREFIX_TUNING":
            raise RobustMMError(f"Adapter {folder} uses prefix tuning, which needs past_key_values that ViLT and BLIP do not take; use prompt tuning.")
        if peft_type not in PROMPT_ADAPTERS:
            raise RobustMMError(f"Adapter {folder} is a {peft_type or 'unknown'} adapter, not a prompt adapter ({' or '.join(PROMPT_ADAPTERS)}).")
        if int(adapter.get("num_transformer_submodules") or 1) != 1:
            raise RobustMMError(f"Adapter {folder} has prompts for {adapter['num_transformer_submodules']} submodules; only one is supported.")
        base_ref = adapter.get("base_model_name_or_path")
        if not base_ref:
            raise RobustMMError(f"Adapter {adapter_file} does not name its base model (base_model_name_or_path).")
        base_folder = resolve_folder(base_ref, "Base model", relative_to=folder)
        family = _family(base_folder)
        saved = [str(m) for m in (adapter.get("modules_to_save") or [])]
        model, tokenizer, image_processor = _load_hf(base_folder, family, allowed_missing=saved)
        try:
            from peft import PeftModel

            peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False, local_files_only=True)
            with torch.no_grad():
                prompt = peft_model.get_prompt(batch_size=1)[0].detach().float()  # (P, D)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RobustMMError(f"Adapter {folder} does not fit its base model {base_ref} ({first}).") from err
        model = peft_model.get_base_model()  # the base, with PEFT's restored heads (modules_to_save) in place
        from safetensors import safe_open

        weights = folder / "adapter_model.safetensors"
        trainable = prompt.numel()  # what the adapter stores: prompts (+ heads PEFT trained and saved)
        if weights.is_file():
            with safe_open(str(weights), "pt") as handle:
                trainable = sum(_numel(handle.get_slice(k).get_shape()) for k in handle.keys())
        tuning, total = "prompt", _count(model) + prompt.numel()
        extra.update({"base_model": str(base_ref), "peft_type": peft_type, "num_virtual_tokens": int(prompt.shape[0]),
                      "modules_to_save": saved})
    else:
        family = _family(folder)
        model, tokenizer, image_processor = _load_hf(folder, family)
        tuning, total = "finetune", _count(model)
        trainable = total
    base = f"{family}@{config_hash(model.config)}"
    info = ModelInfo(name, family, tuning, task, base, trainable, total, extra)
    chosen = _candidates(family, task, model, candidates, name)
    cls = _CLASSES[family][1]
    vl = cls(model, tokenizer, image_processor, task, chosen, prompt, info)
    for p in vl.parameters():
        p.requires_grad_(False)
    vl.model.to(dtype=torch_dtype)
    if vl.prompt is not None:
        vl.prompt.data = vl.prompt.data.to(torch_dtype)
    return vl.to(device).eval()


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= int(size)
    return total
