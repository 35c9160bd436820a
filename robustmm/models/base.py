"""The ``VLModel`` interface every attack sees, whatever the model family.

Pixels go in as float tensors (B, 3, H, W) in [0, 1]; normalisation lives inside the
model. Texts go in as strings (the VQA question or the VE hypothesis); the model applies
its own task template and tokenizer. A model is a classifier over a closed answer set
(``candidates``, the dataset's answers/labels): ``candidate_scores`` returns one
log-likelihood per candidate, which is how a generative model is scored (OFA's
all-candidate inference) and what attacks differentiate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from robustmm.types import Task


@dataclass(frozen=True)
class ModelInfo:
    """Metadata the reports show about a model."""

    name: str
    family: str  # "unified" (built-in), "vilt", "blip"
    tuning: str  # "base", "finetune" or "prompt"
    task: Task
    base: str  # the base checkpoint as "<label>@<hash>"; pairs must share the hash (the label is for people)
    trainable_parameters: int  # parameters the tuning method updated
    total_parameters: int  # all parameters used at inference (frozen ones included)
    extra: dict = field(default_factory=dict)

    @property
    def trainable_share(self) -> float:
        """Share of the parameters used at inference that the tuning trained (0 when unknown)."""
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0

    @property
    def base_hash(self) -> str:
        """The base's identity: the hash part of ``base`` (two members pair only if theirs are equal)."""
        return self.base.rsplit("@", 1)[-1]


@dataclass
class Embeddings:
    """Input embeddings as the encoder receives them (the seed paper perturbs these).

    ``image``: (B, N_img, D) image-patch embeddings; ``text``: (B, N_txt, D) token
    embeddings; ``context``: whatever else the model needs to finish the forward pass
    (attention masks, token ids), passed back untouched.
    """

    image: torch.Tensor
    text: torch.Tensor
    context: dict[str, Any]


class VLModel(nn.Module, ABC):
    """A vision-language model scored over a closed candidate-answer set."""

    info: ModelInfo
    candidates: tuple[str, ...]
    image_size: int
    tokenizer_id: str = ""  # identifies the tokenizer (e.g. vocab hash); pairs must share it

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def fingerprint(self) -> str:
        """First 16 hex digits of a sha256 over every stored weight (name, dtype, shape, bytes) and the
        candidates: two models with the same fingerprint compute the same scores. A run folder keeps its
        members' fingerprints, so resuming it with changed weights is refused."""
        import hashlib

        digest = hashlib.sha256(repr(self.candidates).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts (task template applied) into tensors on the model's device."""

    @abstractmethod
    def embed(self, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor]) -> Embeddings:
        """Input embeddings of a batch: pixels (B,3,H,W) in [0,1] and encoded texts."""

    @abstractmethod
    def scores_from_embeddings(self, embeddings: Embeddings) -> torch.Tensor:
        """Candidate log-likelihoods (B, C) from (possibly perturbed) input embeddings."""

    def candidate_scores(self, pixels: torch.Tensor, texts: Sequence[str] | dict[str, torch.Tensor]) -> torch.Tensor:
        """Log-likelihood of each candidate answer, shape (B, C); differentiable in ``pixels``."""
        text_inputs = self.encode_texts(texts) if not isinstance(texts, dict) else texts
        return self.scores_from_embeddings(self.embed(pixels, text_inputs))

    def loss(self, pixels: torch.Tensor, texts, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the candidate scores against target candidate indices (B,)."""
        return nn.functional.cross_entropy(self.candidate_scores(pixels, texts), targets)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, texts) -> list[str]:
        """The highest-scoring candidate answer of each example."""
        best = self.candidate_scores(pixels, texts).argmax(dim=1).tolist()
        return [self.candidates[i] for i in best]

    def target_indices(self, answers: Sequence[str]) -> torch.Tensor:
        """Candidate indices (B,) of gold answers; an answer outside the set maps to -100 (ignored)."""
        index = {c: i for i, c in enumerate(self.candidates)}
        return torch.tensor([index.get(a, -100) for a in answers], dtype=torch.long, device=self.device)

    def unknown_words(self, words: Sequence[str]) -> list[bool]:
        """For each word: does the model's tokenizer map it (partly) to an unknown token?"""
        return [False for _ in words]

    def text_reach(self, text: str) -> int:
        """How many leading characters of ``text`` the model sees after its template and truncation:
        ``len(text)`` when nothing is cut (the default: a model with no token budget). Text attacks
        neither rank nor substitute words beyond it."""
        return len(text)


def kept_characters(tokenizer, template, text: str, max_length: int) -> int:
    """:meth:`VLModel.text_reach` for a fast (offset-mapping) tokenizer that encodes ``template(text)``
    truncated to ``max_length`` tokens: the end, within ``text``, of the last token kept (0 when
    none is), or ``len(text)`` when the templated text is not cut at all."""
    start = template("\x00").index("\x00")
    templated = template(text)
    encoded = tokenizer(templated, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
    ends = [end for (_, end), special in zip(encoded["offset_mapping"], encoded["special_tokens_mask"]) if not special]
    last = max(ends, default=0)
    if last >= len(templated.rstrip()):
        return len(text)
    return min(max(last - start, 0), len(text))
