"""Models: the ``VLModel`` interface, the built-in unified model, prompts, Hugging Face ViLT/BLIP adapters, the
instruction-following VLMs (``robustmm.models.vlm``: LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL, Idefics3, BLIP-2), pairs."""

from robustmm.models.base import Embeddings, ModelInfo, VLModel
from robustmm.models.pair import ModelPair, load_pair, resolve_device

__all__ = ["VLModel", "ModelInfo", "Embeddings", "ModelPair", "load_pair", "resolve_device", "load_model"]


def load_model(path, device="cpu", **options):
    """Load one finetuned or prompt-tuned checkpoint (robustmm, HF ViLT/BLIP, a VLM, a PEFT adapter or M²PT prompts)
    as a ``VLModel``.

    ``options``: ``dtype``, ``task``, ``candidates`` for the HF models, ``vlm`` for the VLMs (see
    ``robustmm.models.pair.load_member``).
    """
    from robustmm.models.pair import load_member, resolve_device

    return load_member(path, resolve_device(device), **options)
