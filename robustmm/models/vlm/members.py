"""Loading a VLM member: a full checkpoint, a PEFT adapter on its base, or an M²PT prompt folder on its base.

- **Full checkpoint** (``config.json`` of a supported ``model_type``): tuning ``finetune``, every parameter counted
  as trained.
- **PEFT adapter** (``adapter_config.json``; the base is ``base_model_name_or_path``, a local folder, a folder
  relative to the adapter, or a Hub id in the local cache):
  - weight adapters (LoRA, IA³, LoHa, LoKr, AdaLoRA, ...: anything PEFT can ``merge_and_unload``) are merged into
    the base weights: tuning ``finetune`` (parameter-efficient finetuning: the weights change);
  - prompt tuning and P-tuning: the learned virtual token embeddings (P, D) go in front of the language model's
    input: tuning ``prompt``;
  - prefix tuning: the learned per-layer keys/values are the cache the prompt pass starts from: tuning ``prompt``.
- **M²PT prompts** (``m2pt_config.json`` + ``m2pt.safetensors``, :mod:`.m2pt`): tuning ``prompt``.

``info.trainable_parameters`` is what the tuning trained (a full checkpoint: all; an adapter: the tensors it
stores; M²PT: its prompts), ``info.trainable_share`` that over ``info.total_parameters``.

**Pairs.** ``info.base`` is ``<family>@<hash of the architecture config>`` as for the ViLT/BLIP members; a member
on a base (adapter, M²PT) also records ``info.extra["base_weights"]``, a digest of the base's weight files
(the HF cache's content hashes where the files are cache blobs, else sha256 of the bytes), and
``check_pair`` refuses two such members whose base weights differ. A full finetuned checkpoint does not
record its base, so against it only the architecture can be compared.

Nothing is downloaded: every ``from_pretrained`` passes ``local_files_only=True``. The image processor, the
tokenizer and the chat template are loaded on their own (not through ``AutoProcessor``, whose Qwen2-VL video
processor needs torchvision).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch

from robustmm.errors import RobustMMError
from robustmm.models.base import ModelInfo
from robustmm.models.vlm.families import FAMILIES, family_for
from robustmm.types import VE_LABELS, Task

PROMPT_ADAPTERS = ("PROMPT_TUNING", "P_TUNING")


def is_vlm_member(folder: Path) -> bool:
    """Whether ``folder`` is an M²PT folder, a checkpoint of a VLM family (or of a model type robustmm does not
    support: the VLM loader names the supported ones), or a PEFT adapter whose base is one of those."""
    from robustmm.models.hf import FAMILIES as HF_QA_FAMILIES
    from robustmm.files import read_json
    from robustmm.models.hf import resolve_folder
    from robustmm.models.vlm.m2pt import CONFIG_FILE

    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return True
    if (folder / "adapter_config.json").is_file():
        base = read_json(folder / "adapter_config.json", "Checkpoint file").get("base_model_name_or_path")
        if not base:
            return False  # the ViLT/BLIP loader says the base is missing
        folder = resolve_folder(base, "Base model", relative_to=folder)
    if (folder / "config.json").is_file():
        return read_json(folder / "config.json", "Checkpoint file").get("model_type") not in HF_QA_FAMILIES
    return False


def supported_families() -> str:
    return ", ".join(["vilt", "blip"] + [f"{name} ({'/'.join(cls.model_types)})" for name, cls in FAMILIES.items()])


def load_vlm_member(path: str | Path, device: torch.device, *, dtype: str | torch.dtype | None = "float32",
                    task: str | Task | None = None, candidates: Sequence[str] | None = None, name: str | None = None,
                    image_size: int | None = None, memory_mb: float = 1024.0, gradient_checkpointing: bool = False):
    """A VLM folder (full checkpoint, PEFT adapter or M²PT prompts) as a ready ``GenerativeVLM`` (eval, frozen).

    ``task`` vqa (default) or ve; ``candidates``: the closed answer set (VE: the three labels by default; VQA:
    required, the dataset's answers); ``dtype`` float32 or bfloat16 (CUDA); ``image_size``: side of the square
    images attacks perturb (default: the processor's working size); ``memory_mb`` and
    ``gradient_checkpointing``: see :mod:`.model`.
    """
    from robustmm.files import read_json
    from robustmm.models.hf import member_basics, resolve_folder
    from robustmm.models.vlm.m2pt import CONFIG_FILE

    folder, device, torch_dtype, task, name, extra = member_basics(path, device, dtype, task, name)
    if (folder / CONFIG_FILE).is_file():
        kind, base_ref = "m2pt", _m2pt_base(folder)
    elif (folder / "adapter_config.json").is_file():
        adapter = read_json(folder / "adapter_config.json", "Checkpoint file")
        kind, base_ref = "peft", adapter.get("base_model_name_or_path")
        if not base_ref:
            raise RobustMMError(f"Adapter {folder / 'adapter_config.json'} does not name its base model (base_model_name_or_path).")
    else:
        kind, base_ref = "full", None
    base_folder = resolve_folder(base_ref, "Base model", relative_to=folder) if base_ref else folder
    model, image_processor, tokenizer, family_cls = _load_base(base_folder, torch_dtype)
    from robustmm.models.hf import config_hash

    base = f"{family_cls.name}@{config_hash(model.config)}"  # before an adapter is merged (merging may edit the config)
    total = _count(model)
    prompt = prefix = m2pt = None
    if kind != "full":
        extra.update({"base_model": str(base_ref), "base_weights": weights_digest(base_folder)})
    if kind == "full":
        tuning, trainable = "finetune", total
    elif kind == "peft":
        peft_type = str(adapter.get("peft_type", ""))
        model, prompt, prefix = _apply_peft(model, folder, peft_type, str(base_ref))
        trainable = _stored_numel(folder / "adapter_model.safetensors") if (folder / "adapter_model.safetensors").is_file() \
            else sum(t.numel() for t in ([prompt] if prompt is not None else []) + [t for kv in prefix or [] for t in kv])
        tuning = "prompt" if (prompt is not None or prefix is not None) else "finetune"
        extra["peft_type"] = peft_type
        if prompt is not None:
            extra["num_virtual_tokens"] = int(prompt.shape[0])
            total += prompt.numel()
        if prefix is not None:
            extra["num_virtual_tokens"] = int(prefix[0][0].shape[-2])
            total += sum(t.numel() for kv in prefix for t in kv)
    else:
        m2pt, m2pt_config = _m2pt_prompts(folder, model, family_cls)
        tuning, trainable = "prompt", sum(p.numel() for p in m2pt.parameters())
        total += trainable
        extra.update({"peft_type": "M2PT", "visual_tokens": m2pt_config.visual_tokens, "visual_layers": int(m2pt.visual.shape[0]),
                      "text_tokens": m2pt_config.text_tokens})
    family = family_cls(model, image_processor, tokenizer)
    chosen = _candidates(task, candidates, name)
    from robustmm.models.vlm.model import GenerativeVLM
    from robustmm.models.vlm.prompting import chat_template_of

    info = ModelInfo(name, family.name, tuning, task, base, trainable, total, extra)
    vl = GenerativeVLM(family, task, chosen, info, chat_template=chat_template_of(base_folder, tokenizer),
                       answer_end=_answer_end(model, tokenizer, name), image_size=image_size, prompt=prompt, prefix=prefix,
                       m2pt=m2pt, memory_mb=memory_mb, gradient_checkpointing=gradient_checkpointing)
    for p in vl.parameters():
        p.requires_grad_(False)
    if vl.prompt is not None:
        vl.prompt.data = vl.prompt.data.to(torch_dtype)
    return vl.to(device).eval()


def _load_base(folder: Path, torch_dtype: torch.dtype):
    """(model in eval mode, image processor, tokenizer, family class) of a local checkpoint folder."""
    import transformers

    from robustmm.files import read_json

    model_type = read_json(folder / "config.json", "Checkpoint file").get("model_type") if (folder / "config.json").is_file() else None
    family_cls = family_for(model_type)
    if family_cls is None:
        raise RobustMMError(f"Hugging Face model {folder} is a {model_type!r} model; robustmm supports {supported_families()}.")
    try:
        model, loading = transformers.AutoModelForImageTextToText.from_pretrained(
            folder, local_files_only=True, dtype=torch_dtype, output_loading_info=True)
        image_processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True, use_fast=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RobustMMError(f"Could not load the {family_cls.name} model, image processor or tokenizer from {folder} ({first}).") from err
    missing = [k for k in loading.get("missing_keys", []) if "position_ids" not in k]
    if missing:
        raise RobustMMError(f"{folder} is not a complete {family_cls.name} checkpoint: it lacks {len(missing)} weights (e.g. {missing[0]}).")
    if not getattr(tokenizer, "is_fast", False):
        raise RobustMMError(f"The tokenizer of {folder} is not a fast tokenizer (robustmm locates the question by its offsets).")
    return model.eval(), image_processor, tokenizer, family_cls


def _apply_peft(model, folder: Path, peft_type: str, base_ref: str):
    """(model, prompt (P, D) or None, prefix [(k, v)] or None) with a PEFT adapter applied (see module docstring)."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RobustMMError(f"Adapter {folder} does not fit its base model {base_ref} ({first}).") from err
    if peft_type in PROMPT_ADAPTERS:
        with torch.no_grad():
            prompt = peft_model.get_prompt(batch_size=1)[0].detach().float()  # (P, D)
        return peft_model.get_base_model(), prompt, None
    if peft_type == "PREFIX_TUNING":
        with torch.no_grad():
            past = peft_model.get_prompt(batch_size=1, max_cache_len=-1)
        layers = [(layer.keys, layer.values) for layer in past.layers] if hasattr(past, "layers") else [tuple(kv) for kv in past]
        return peft_model.get_base_model(), None, [(k.detach().float(), v.detach().float()) for k, v in layers]
    if peft_model.peft_config["default"].is_prompt_learning:
        raise RobustMMError(f"Adapter {folder} is a {peft_type} adapter; robustmm takes prompt tuning, P-tuning, prefix tuning "
                            "and adapters PEFT can merge (LoRA, IA³, ...).")
    try:
        return peft_model.merge_and_unload(), None, None
    except (ValueError, RuntimeError, AttributeError, NotImplementedError) as err:
        raise RobustMMError(f"Adapter {folder} ({peft_type}) cannot be merged into its base ({err}).") from err


def _m2pt_base(folder: Path) -> str:
    from robustmm.models.vlm.m2pt import read_m2pt

    return read_m2pt(folder)[0].base_model_name_or_path


def _m2pt_prompts(folder: Path, model, family_cls):
    from robustmm.models.vlm.m2pt import M2PTPrompts, read_m2pt

    config, tensors = read_m2pt(folder)
    if config.family != family_cls.name:
        raise RobustMMError(f"M²PT prompts {folder} were made for a {config.family} model, not {family_cls.name}.")
    visual, text = tensors["visual"], tensors["text"]
    prompts = M2PTPrompts(visual.shape[0], visual.shape[1], visual.shape[2], text.shape[0], text.shape[1])
    try:
        prompts.load_state_dict({"visual": visual, "text": text})
    except RuntimeError as err:
        raise RobustMMError(f"M²PT prompts {folder} do not fit their base ({err}).") from err
    embedding_dim = model.get_input_embeddings().weight.shape[1]
    if text.numel() and text.shape[1] != embedding_dim:
        raise RobustMMError(f"M²PT textual prompts of {folder} have width {text.shape[1]}, the base's embeddings {embedding_dim}.")
    return prompts.to(model.get_input_embeddings().weight.dtype), config


def _candidates(task: Task, candidates: Sequence[str] | None, name: str) -> tuple[str, ...]:
    if candidates is not None:
        return tuple(dict.fromkeys(str(c) for c in candidates))
    if task is Task.VE:
        return VE_LABELS
    raise RobustMMError(f"Model {name} is generative and has no answer set of its own: give candidates (the dataset's answers).")


def _answer_end(model, tokenizer, name: str) -> int:
    """The token that ends an answer: the generation config's (first) end-of-sequence token, else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    eos = eos if eos is not None else tokenizer.eos_token_id
    if eos is None:
        raise RobustMMError(f"Model {name} names no end-of-sequence token (generation_config.json or tokenizer).")
    return int(eos)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _stored_numel(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), "pt") as handle:
        for key in handle.keys():
            n = 1
            for size in handle.get_slice(key).get_shape():
                n *= int(size)
            total += n
    return total


_DIGESTS: dict[tuple, str] = {}


def weights_digest(folder: Path) -> str:
    """16 hex digits identifying a checkpoint's weights: over its weight files (``*.safetensors``, ``*.bin``) in name
    order, each by its HF-cache blob name when it is a link into the cache (the blob is named by the content's
    sha256), else by the sha256 of its bytes (computed once per file, size and mtime)."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    for path in files:
        target = Path(os.path.realpath(path))
        stat = target.stat()
        key = (str(target), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            if path.is_symlink() and len(target.name) == 64 and all(c in "0123456789abcdef" for c in target.name):
                _DIGESTS[key] = target.name
            else:
                content = hashlib.sha256()
                with open(target, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 24), b""):
                        content.update(block)
                _DIGESTS[key] = content.hexdigest()
        digest.update(f"{path.name}:{_DIGESTS[key]}".encode())
    return digest.hexdigest()[:16]
