"""Learnable prompts for a frozen backbone, as in Yang et al. 2022 (arXiv 2208.02532).

Two styles:
- ``prefix`` (the paper's recommendation, "deep" prompts): ``length`` learnable key and
  value vectors prepended to the self-attention of *every* layer of the encoder, the
  decoder or both (Li & Liang 2021; Liu et al. 2022, P-tuning v2);
- ``prompt`` (input-level): ``length`` learnable embeddings prepended to the input
  sequence of the encoder and/or the decoder (Lester et al. 2021).

With ``reparam=True`` the prompts are produced by a two-layer MLP from a smaller
embedding during training (the paper's optional reparameterisation); a checkpoint
stores only the materialised prompts, so the MLP costs nothing at inference.

``init="activations"`` starts the prompts at what the frozen backbone computes for real
inputs (Li & Liang 2021 initialise prefixes with real words' activations): a fixed offset
holds the key/values (or input embeddings) of ``length`` positions drawn from training
examples, and the learnt part (plain tensor or MLP output layer) starts at zero, so the
trainable parameters are the same as with ``init="random"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from robustmm.errors import RobustMMError

STYLES = ("prefix", "prompt")
PLACES = ("encoder", "decoder", "both")
INITS = ("random", "activations")


@dataclass(frozen=True)
class PromptConfig:
    style: str = "prefix"
    where: str = "both"
    length: int = 16
    reparam: bool = False
    reparam_hidden: int = 256
    init: str = "random"  # or "activations": start at the backbone's own activations of real inputs

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise RobustMMError(f"Prompt style must be one of {', '.join(STYLES)}, not {self.style!r}.")
        if self.where not in PLACES:
            raise RobustMMError(f"Prompt place must be one of {', '.join(PLACES)}, not {self.where!r}.")
        if self.init not in INITS:
            raise RobustMMError(f"Prompt init must be one of {', '.join(INITS)}, not {self.init!r}.")
        if self.length < 1:
            raise RobustMMError(f"Prompt length must be at least 1, got {self.length}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def in_encoder(self) -> bool:
        return self.where in ("encoder", "both")

    @property
    def in_decoder(self) -> bool:
        return self.where in ("decoder", "both")


@dataclass
class Prompts:
    """Materialised prompts for one forward pass.

    ``encoder_prefix`` / ``decoder_prefix``: per layer a (key, value) pair of (P, D) tensors, or None.
    ``encoder_input`` / ``decoder_input``: (P, D) input embeddings, or None.
    """

    encoder_prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    decoder_prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    encoder_input: torch.Tensor | None = None
    decoder_input: torch.Tensor | None = None


class _Source(nn.Module):
    """A (rows, width) tensor: a plain parameter, or an MLP over a (length, dim) embedding, plus an
    optional fixed ``offset`` (rows, width) set by :meth:`start_at`."""

    def __init__(self, length: int, width: int, dim: int, reparam: bool, hidden: int) -> None:
        super().__init__()
        self.reparam = reparam
        if reparam:
            self.embedding = nn.Parameter(torch.randn(length, dim) * 0.02)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
        else:
            self.value = nn.Parameter(torch.randn(length, width) * 0.02)
        self.register_buffer("offset", None)

    def start_at(self, offset: torch.Tensor) -> None:
        """Make ``offset`` (rows, width) the fixed starting point: the learnt part is zeroed."""
        with torch.no_grad():
            if self.reparam:
                self.mlp[2].weight.zero_()
                self.mlp[2].bias.zero_()
            else:
                self.value.zero_()
        self.offset = offset.detach().clone()

    def forward(self) -> torch.Tensor:
        learnt = self.mlp(self.embedding) if self.reparam else self.value
        return learnt if self.offset is None else learnt + self.offset


class PromptModule(nn.Module):
    """The trainable prompts for a backbone with ``encoder_layers``/``decoder_layers`` of width ``dim``."""

    def __init__(self, config: PromptConfig, dim: int, encoder_layers: int, decoder_layers: int) -> None:
        super().__init__()
        self.config = config
        self.dim, self.encoder_layers, self.decoder_layers = dim, encoder_layers, decoder_layers
        c = config
        deep = c.style == "prefix"
        self.encoder = (
            _Source(c.length, (2 * encoder_layers if deep else 1) * dim, dim, c.reparam, c.reparam_hidden) if c.in_encoder else None
        )
        self.decoder = (
            _Source(c.length, (2 * decoder_layers if deep else 1) * dim, dim, c.reparam, c.reparam_hidden) if c.in_decoder else None
        )
        self._frozen: dict[str, torch.Tensor] | None = None

    def _split(self, flat: torch.Tensor, layers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        per_layer = flat.view(flat.shape[0], layers, 2, self.dim)  # (P, L, 2, D)
        return [(per_layer[:, i, 0], per_layer[:, i, 1]) for i in range(layers)]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The materialised prompts: ``encoder`` / ``decoder`` tensors of shape (P, L*2*D) or (P, D)."""
        if self._frozen is not None:
            return self._frozen
        out = {}
        if self.encoder is not None:
            out["encoder"] = self.encoder()
        if self.decoder is not None:
            out["decoder"] = self.decoder()
        return out

    def start_at(self, tensors: dict[str, torch.Tensor]) -> None:
        """Start the ``encoder`` / ``decoder`` prompts at the given (P, L*2*D) or (P, D) tensors
        (see :func:`robustmm.tuning.real_activations`); shapes are checked."""
        for name, source in (("encoder", self.encoder), ("decoder", self.decoder)):
            if source is None:
                continue
            expected = tuple(source().shape)
            if name not in tensors or tuple(tensors[name].shape) != expected:
                got = tuple(tensors[name].shape) if name in tensors else None
                raise RobustMMError(f"Starting {name} prompts need shape {expected}, got {got}.")
            source.start_at(tensors[name])

    def load_materialised(self, tensors: dict[str, torch.Tensor]) -> None:
        """Use stored prompts as fixed buffers (no MLP); shapes are checked."""
        expected = {name: t.shape for name, t in self.tensors().items()}
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if {k: tuple(v) for k, v in expected.items()} != got:
            raise RobustMMError(f"Prompt tensors have shapes {got}, but the prompt config needs {dict(expected)}.")
        for name, tensor in tensors.items():
            self.register_buffer(f"stored_{name}", tensor.clone())
        self.encoder = self.decoder = None
        self._frozen = {name: getattr(self, f"stored_{name}") for name in tensors}

    def forward(self) -> Prompts:
        t = self.tensors()
        if self._frozen is not None:  # buffers may have moved device
            t = {name: getattr(self, f"stored_{name}") for name in t}
        prompts = Prompts()
        if self.config.style == "prefix":
            if "encoder" in t:
                prompts.encoder_prefix = self._split(t["encoder"], self.encoder_layers)
            if "decoder" in t:
                prompts.decoder_prefix = self._split(t["decoder"], self.decoder_layers)
        else:
            prompts.encoder_input = t.get("encoder")
            prompts.decoder_input = t.get("decoder")
        return prompts
