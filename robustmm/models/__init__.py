"""Models: the ``VLModel`` interface, the built-in unified model, prompts, pairs."""

from robustmm.models.base import Embeddings, ModelInfo, VLModel
from robustmm.models.pair import ModelPair, load_pair, resolve_device

__all__ = ["VLModel", "ModelInfo", "Embeddings", "ModelPair", "load_pair", "resolve_device", "load_model"]


def load_model(path, device="cpu"):
    """Load one finetuned or prompt-tuned checkpoint folder as a ``VLModel``."""
    from robustmm.models.pair import load_member, resolve_device

    return load_member(path, resolve_device(device))
