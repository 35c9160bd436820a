"""The built-in generative vision-language model: a small unified encoder-decoder in OFA's spirit.

Image: a 3-stage convolutional stem turns a (3, 64, 64) image (pixels in [0, 1],
normalised inside with OFA's mean = std = 0.5) into an 8 x 8 grid of D-dim patch
embeddings. Text: WordPiece tokens -> frozen MiniLM embeddings (384) -> trainable
projection to D. Image and text tokens, with position and type embeddings, enter one
pre-LayerNorm transformer encoder; a transformer decoder generates the answer text
token by token (tied to the same frozen word table through a projection). Feed-forward
blocks are gated (GEGLU) by default: with plain GELU blocks the model did not learn
image-text matching (probe at chance), with GEGLU it did (see ``robustmm.tuning``).

Tasks in the OFA style: VQA as ``question -> answer``; visual entailment as
``does the image describe " <hypothesis> "? -> yes / maybe / no``.

Candidate scoring follows OFA's constrained all-candidate inference: the log-likelihood
of each candidate's token sequence (plus [SEP]), where at each step the softmax runs
over the tokens the candidate trie allows after the prefix (OFA's ``constraint_trie``).
Scores over the candidates are therefore a proper log-distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustmm.errors import RobustMMError
from robustmm.models.base import Embeddings, ModelInfo, VLModel, kept_characters
from robustmm.models.prompts import PromptModule, Prompts
from robustmm.types import Task

VE_VERBALISER = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
VE_TEMPLATE = 'does the image describe " {} "?'
FFN_KINDS = ("geglu", "gelu")


@dataclass(frozen=True)
class UnifiedConfig:
    dim: int = 128
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 2
    ffn_mult: int = 4
    image_size: int = 64
    stem_channels: tuple[int, ...] = (32, 64)  # three stride-2 convs: 64x64 -> 8x8 = 64 image tokens
    max_text_len: int = 48
    max_answer_len: int = 8
    lexicon_dim: int = 384
    vocab_size: int = 30522
    dropout: float = 0.0
    global_image_token: bool = True  # prepend the mean of the patch embeddings as one more image token
    ffn: str = "geglu"  # "geglu" (gated: Shazeer 2020, as in T5 v1.1) or "gelu" (Linear-GELU-Linear)

    def __post_init__(self) -> None:
        if self.ffn not in FFN_KINDS:
            raise RobustMMError(f"Model ffn must be one of {', '.join(FFN_KINDS)}, not {self.ffn!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UnifiedConfig":
        from robustmm.files import config_from_dict

        data = dict(data) if isinstance(data, dict) else data
        if isinstance(data, dict):
            data.setdefault("ffn", "gelu")  # configs written before the option existed had GELU blocks
        config = config_from_dict(cls, data, "The model section of a checkpoint config")
        return replace(config, stem_channels=tuple(config.stem_channels))

    @property
    def image_tokens(self) -> int:
        side = self.image_size // 2 ** (len(self.stem_channels) + 1)
        return side * side + int(self.global_image_token)


class Attention(nn.Module):
    """Multi-head attention with optional prefix key/values (P, D) prepended to the keys."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k(context), self.v(context)

    def forward(self, x, mask, context=None, kv=None, prefix=None) -> torch.Tensor:
        """x (B, N, D); mask bool (B or 1, 1, N, [P+]M), True = may attend; kv precomputed (B, M, D) pair."""
        b, n, d = x.shape
        k, v = kv if kv is not None else self.kv(x if context is None else context)
        if prefix is not None:
            pk, pv = prefix
            k = torch.cat([pk.unsqueeze(0).expand(b, -1, -1), k], dim=1)
            v = torch.cat([pv.unsqueeze(0).expand(b, -1, -1), v], dim=1)
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k = k.view(b, -1, h, d // h).transpose(1, 2)
        v = v.view(b, -1, h, d // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(out.transpose(1, 2).reshape(b, n, d))


class GEGLU(nn.Module):
    """Gated feed-forward block: ``W_o (GELU(W_g x) * (W_u x))``, (B, N, D) -> (B, N, D).

    The elementwise product lets one layer compare two features carried in the same token
    (e.g. a colour word and the colour it read from the image), which a plain GELU MLP must
    approximate.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up, self.down = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.gelu(gate) * up)


def _ffn(dim: int, mult: int, kind: str) -> nn.Module:
    if kind == "geglu":
        return GEGLU(dim, dim * mult)
    return nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mult: int, ffn: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.ffn = Attention(dim, heads), _ffn(dim, mult, ffn)

    def forward(self, x, mask, prefix=None):
        x = x + self.attn(self.norm1(x), mask, prefix=prefix)
        return x + self.ffn(self.norm2(x))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mult: int, ffn: str) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn, self.cross_attn, self.ffn = Attention(dim, heads), Attention(dim, heads), _ffn(dim, mult, ffn)

    def forward(self, x, self_mask, memory_kv, memory_mask, prefix=None):
        x = x + self.self_attn(self.norm1(x), self_mask, prefix=prefix)
        x = x + self.cross_attn(self.norm2(x), memory_mask, kv=memory_kv)
        return x + self.ffn(self.norm3(x))


class UnifiedBackbone(nn.Module):
    """The transformer itself (no tokenizer, no task): embeddings, encoder, decoder, output head.

    ``lexicon`` (V, 384) is the frozen pretrained word table; it is a non-persistent buffer
    (never saved in checkpoints) set by :func:`robustmm.models.lexicon.load_lexicon`.
    """

    def __init__(self, config: UnifiedConfig, lexicon: torch.Tensor) -> None:
        super().__init__()
        c = self.config = config
        layers, channels = [], (3, *c.stem_channels, c.dim)
        for i in range(len(channels) - 1):
            layers += [nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1)]
            if i < len(channels) - 2:
                layers += [nn.GroupNorm(8, channels[i + 1]), nn.GELU()]
        self.stem = nn.Sequential(*layers)
        self.image_pos = nn.Parameter(torch.randn(1, c.image_tokens, c.dim) * 0.02)
        self.text_proj = nn.Linear(c.lexicon_dim, c.dim)
        self.text_pos = nn.Embedding(c.max_text_len, c.dim)
        self.type_embed = nn.Embedding(2, c.dim)
        self.encoder = nn.ModuleList(EncoderLayer(c.dim, c.heads, c.ffn_mult, c.ffn) for _ in range(c.encoder_layers))
        self.encoder_norm = nn.LayerNorm(c.dim)
        self.answer_pos = nn.Embedding(c.max_answer_len + 1, c.dim)
        self.decoder = nn.ModuleList(DecoderLayer(c.dim, c.heads, c.ffn_mult, c.ffn) for _ in range(c.decoder_layers))
        self.decoder_norm = nn.LayerNorm(c.dim)
        self.out_proj = nn.Linear(c.dim, c.lexicon_dim)
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.register_buffer("lexicon", lexicon, persistent=False)
        self.lexicon.requires_grad_(False)

    # -- embeddings -------------------------------------------------------
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, N_img, D) patch embeddings (before positions); with
        ``global_image_token`` the first one is the mean over the patches (a global summary)."""
        x = self.stem((pixels - 0.5) / 0.5).flatten(2).transpose(1, 2)
        if self.config.global_image_token:
            x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        return x

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, D) token embeddings (before positions)."""
        return self.text_proj(self.lexicon[ids])

    # -- encoder ----------------------------------------------------------
    def encode(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, prompts: Prompts | None):
        """Encoder over [prompt?; image; text] -> memory (B, N, D) and its key mask (B, N) bool."""
        b = image.shape[0]
        image = image + self.image_pos + self.type_embed.weight[0]
        positions = torch.arange(text.shape[1], device=text.device)
        text = text + self.text_pos(positions) + self.type_embed.weight[1]
        parts, masks = [image, text], [torch.ones(b, image.shape[1], dtype=torch.bool, device=image.device), text_mask]
        if prompts is not None and prompts.encoder_input is not None:
            p = prompts.encoder_input.unsqueeze(0).expand(b, -1, -1)
            parts.insert(0, p)
            masks.insert(0, torch.ones(b, p.shape[1], dtype=torch.bool, device=image.device))
        x, keys = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        prefixes = prompts.encoder_prefix if prompts is not None else None
        mask = self._with_prefix(keys[:, None, None, :], prefixes)
        for i, layer in enumerate(self.encoder):
            x = layer(x, mask, prefix=prefixes[i] if prefixes else None)
        return self.encoder_norm(x), keys

    @staticmethod
    def _with_prefix(mask: torch.Tensor, prefixes) -> torch.Tensor:
        if not prefixes:
            return mask
        length = prefixes[0][0].shape[0]
        ones = torch.ones(*mask.shape[:-1], length, dtype=torch.bool, device=mask.device)
        return torch.cat([ones, mask], dim=-1)

    # -- decoder ----------------------------------------------------------
    def decode(self, memory, memory_keys, inputs: torch.Tensor, prompts: Prompts | None, repeat: int = 1) -> torch.Tensor:
        """Decoder hidden states (B*repeat, T, D) for input ids (B*repeat, T).

        Memory (B, N, D) is shared by ``repeat`` consecutive decoder rows (one per candidate).
        """
        rows, t = inputs.shape
        x = self.embed_tokens(inputs) + self.answer_pos(torch.arange(t, device=inputs.device))
        causal = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()
        if prompts is not None and prompts.decoder_input is not None:
            p = prompts.decoder_input.shape[0]
            x = torch.cat([prompts.decoder_input.unsqueeze(0).expand(rows, -1, -1), x], dim=1)
            full = torch.ones(p + t, p + t, dtype=torch.bool, device=inputs.device)
            full[:p, p:] = False
            full[p:, p:] = causal
            causal = full
        prefixes = prompts.decoder_prefix if prompts is not None else None
        self_mask = self._with_prefix(causal[None, None], prefixes)
        memory_mask = memory_keys[:, None, None, :].repeat_interleave(repeat, dim=0)
        for i, layer in enumerate(self.decoder):
            k, v = layer.cross_attn.kv(memory)
            kv = (k.repeat_interleave(repeat, dim=0), v.repeat_interleave(repeat, dim=0))
            x = layer(x, self_mask, kv, memory_mask, prefix=prefixes[i] if prefixes else None)
        x = self.decoder_norm(x)
        return x[:, -t:]

    def token_logits(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Output logits (..., V) over the whole vocabulary, or (..., K) over ``token_ids`` (K,)."""
        h = self.out_proj(hidden)
        if token_ids is None:
            return h @ self.lexicon.T + self.out_bias
        return h @ self.lexicon[token_ids].T + self.out_bias[token_ids]


@dataclass
class CandidateTrie:
    """Teacher-forcing tensors for constrained scoring of C candidates (OFA's constraint trie).

    ``inputs`` (C, L): [CLS] + candidate tokens; ``targets`` (C, L): indices into ``vocab``
    of the next token ([SEP] after the last); ``allowed`` (C, L, K) bool: tokens the trie
    allows after each prefix; ``valid`` (C, L): positions inside the candidate.
    """

    vocab: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    allowed: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def build(cls, token_lists: Sequence[Sequence[int]], bos: int, eos: int, pad: int) -> "CandidateTrie":
        sequences = [list(tokens) + [eos] for tokens in token_lists]
        vocab = sorted({t for seq in sequences for t in seq})
        where = {t: i for i, t in enumerate(vocab)}
        length = max(len(s) for s in sequences)
        c = len(sequences)
        inputs = torch.full((c, length), pad, dtype=torch.long)
        targets = torch.zeros((c, length), dtype=torch.long)
        allowed = torch.zeros((c, length, len(vocab)), dtype=torch.bool)
        valid = torch.zeros((c, length), dtype=torch.bool)
        for i, seq in enumerate(sequences):
            inputs[i, : len(seq)] = torch.tensor([bos] + seq[:-1])
            for j, token in enumerate(seq):
                targets[i, j], valid[i, j] = where[token], True
                for other in sequences:
                    if len(other) > j and other[:j] == seq[:j]:
                        allowed[i, j, where[other[j]]] = True
        return cls(torch.tensor(vocab), inputs, targets, allowed, valid)

    def to(self, device) -> "CandidateTrie":
        return CandidateTrie(*(t.to(device) for t in (self.vocab, self.inputs, self.targets, self.allowed, self.valid)))


# Text widths a row is padded to in batch-invariant scoring: the smallest that holds its tokens (else the encoded
# width, max_text_len). A row's width depends on its own length only, and rows of one width are scored together.
TEXT_BUCKETS = (16, 32)


def _even_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (B, ...) with its last row repeated once when B is odd (B + 1 rows), else unchanged.

    Matrix products and convolutions over an odd number of rows (one row above all) take other CPU
    kernels, whose rounding differs; callers compute on the even batch and keep the first B rows.
    """
    return torch.cat([tensor, tensor[-1:]]) if tensor.shape[0] % 2 else tensor


class UnifiedVLM(VLModel):
    """The built-in model for one task: backbone (+ optional prompts), tokenizer, candidates.

    ``batch_invariant`` (set by :func:`robustmm.models.checkpoint.load_model`, i.e. for every loaded
    pair member; off while training) makes every example's scores and input gradients bit-identical
    whatever other examples share its batch, so attack records do not depend on ``--batch-size``,
    order or shard: each text is padded to a width fixed by its own length (16, 32 or ``max_text_len``
    tokens, :data:`TEXT_BUCKETS`; rows of one width are scored together), never to the batch's longest,
    attention runs the plain softmax(QK^T/sqrt(d))V kernel (PyTorch's fused CPU kernel splits its
    reductions by batch shape), and an odd batch is computed with its last row repeated (see :func:`_even_rows`).
    Measured on this project's CPU at 1 and 2 threads: identical scores and input gradients for
    blocks of 1 to 64 rows in any order (tests/test_evaluate.py checks whole records). On a GPU,
    kernels may still round differently by batch shape.
    """

    family = "unified"
    batch_invariant = False

    def __init__(self, backbone: UnifiedBackbone, tokenizer, task: Task, candidates: Sequence[str],
                 prompts: PromptModule | None = None, info: ModelInfo | None = None) -> None:
        super().__init__()
        self.backbone, self.tokenizer, self.task = backbone, tokenizer, Task(task)
        self.prompts = prompts
        self.candidates = tuple(candidates)
        self.image_size = backbone.config.image_size
        answer_texts = [VE_VERBALISER.get(c, c) if self.task is Task.VE else c for c in self.candidates]
        tokens = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answer_texts]
        self._trie = CandidateTrie.build(tokens, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        self.info = info or ModelInfo("unified", "unified", "base", self.task, "", 0, 0)

    def _trie_on(self, device) -> CandidateTrie:
        if self._trie.vocab.device != device:
            self._trie = self._trie.to(device)
        return self._trie

    def template(self, text: str) -> str:
        return VE_TEMPLATE.format(text) if self.task is Task.VE else text

    def encode_texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask (B, T) of the templated texts ([CLS] ... [SEP], truncated to max_text_len)."""
        batch = self.tokenizer(
            [self.template(t) for t in texts], padding="max_length" if self.batch_invariant else True,
            truncation=True, max_length=self.backbone.config.max_text_len, return_tensors="pt",
        )
        device = self.device
        return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].bool().to(device)}

    def embed(self, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor]) -> Embeddings:
        b = pixels.shape[0]
        image = self.backbone.embed_image(_even_rows(pixels) if self.batch_invariant else pixels)[:b]
        return Embeddings(
            image=image,
            text=self.backbone.embed_tokens(text_inputs["input_ids"]),
            context={"attention_mask": text_inputs["attention_mask"]},
        )

    def _prompts(self) -> Prompts | None:
        return self.prompts() if self.prompts is not None else None

    def _encode(self, embeddings: Embeddings) -> tuple[torch.Tensor, torch.Tensor, Prompts | None]:
        """Encoder memory (B, N, D), its key mask (B, N) and the prompts the decoder needs too."""
        prompts = self._prompts()
        memory, keys = self.backbone.encode(embeddings.image, embeddings.text, embeddings.context["attention_mask"], prompts)
        return memory, keys, prompts

    def _candidate_logp(self, memory, keys, prompts: Prompts | None, rows: torch.Tensor, repeat: int) -> torch.Tensor:
        """Constrained log-likelihood (B*repeat,) of candidate ``rows`` (B*repeat,) given memory (B, N, D)."""
        trie = self._trie_on(memory.device)
        hidden = self.backbone.decode(memory, keys, trie.inputs[rows], prompts, repeat=repeat)
        logits = self.backbone.token_logits(hidden, trie.vocab).masked_fill(~trie.allowed[rows], float("-inf"))
        logp = logits.log_softmax(dim=-1).gather(-1, trie.targets[rows].unsqueeze(-1)).squeeze(-1)
        return logp.masked_fill(~trie.valid[rows], 0.0).sum(dim=-1)

    def scores_from_embeddings(self, embeddings: Embeddings) -> torch.Tensor:
        """Constrained log-likelihood of every candidate, (B, C)."""
        if not self.batch_invariant:
            return self._all_candidates(embeddings)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        mask = embeddings.context["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        width = mask.shape[1]
        buckets = [next((w for w in TEXT_BUCKETS if w >= n), width) for n in lengths]  # per row: its own length only
        scores = None
        with sdpa_kernel(SDPBackend.MATH):
            for bucket in sorted(set(buckets)):
                rows = [i for i, w in enumerate(buckets) if w == bucket]
                index = torch.tensor(rows, device=mask.device)
                part = Embeddings(_even_rows(embeddings.image[index]), _even_rows(embeddings.text[index, :bucket]),
                                  {k: _even_rows(v[index, :bucket]) for k, v in embeddings.context.items()})
                out = self._all_candidates(part)[:len(rows)]
                scores = out.new_zeros(len(lengths), out.shape[1]) if scores is None else scores
                scores = scores.index_copy(0, index, out)
        return scores

    def _all_candidates(self, embeddings: Embeddings) -> torch.Tensor:
        memory, keys, prompts = self._encode(embeddings)
        b, c = memory.shape[0], len(self.candidates)
        rows = torch.arange(c, device=memory.device).repeat(b)  # (B*C,): every candidate of every example
        return self._candidate_logp(memory, keys, prompts, rows, repeat=c).view(b, c)

    def loss(self, pixels: torch.Tensor, texts, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the candidates against target indices (B,), -100 = ignored.

        The constrained scores are a proper log-distribution over the candidates (their
        exp sums to 1), so the cross-entropy is exactly ``-score[target]``: only the gold
        candidate is decoded (C times less decoder work than scoring every candidate).
        """
        text_inputs = self.encode_texts(texts) if not isinstance(texts, dict) else texts
        memory, keys, prompts = self._encode(self.embed(pixels, text_inputs))
        keep = targets != -100
        if not bool(keep.any()):
            return memory.sum() * 0.0
        logp = self._candidate_logp(memory[keep], keys[keep], prompts, targets[keep], repeat=1)
        return -logp.mean()

    @torch.no_grad()
    def generate_answers(self, pixels: torch.Tensor, texts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Open-ended greedy answers in the task's label space (visual entailment's yes / maybe / no are read
        back as entailment / neutral / contradiction; any other text is returned as generated)."""
        inverse = {v: k for k, v in VE_VERBALISER.items()} if self.task is Task.VE else {}
        return [inverse.get(a, a) for a in self.generate(pixels, texts, max_new_tokens)]

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, texts: Sequence[str], max_tokens: int | None = None) -> list[str]:
        """Free greedy decoding over the whole vocabulary (no candidate constraint)."""
        memory, keys, prompts = self._encode(self.embed(pixels, self.encode_texts(texts)))
        b = memory.shape[0]
        ids = torch.full((b, 1), self.tokenizer.cls_token_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(max_tokens or self.backbone.config.max_answer_len):
            hidden = self.backbone.decode(memory, keys, ids, prompts)
            nxt = self.backbone.token_logits(hidden[:, -1]).argmax(-1)
            nxt = nxt.masked_fill(done, self.tokenizer.pad_token_id)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == self.tokenizer.sep_token_id
            if bool(done.all()):
                break
        return [self.tokenizer.decode(row[1:], skip_special_tokens=True).replace(" ##", "") for row in ids.tolist()]

    def unknown_words(self, words: Sequence[str]) -> list[bool]:
        unk = self.tokenizer.unk_token_id
        return [unk in self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]

    def text_reach(self, text: str) -> int:
        """Characters of ``text`` inside the ``max_text_len``-token budget (template and [CLS]/[SEP] included)."""
        return kept_characters(self.tokenizer, self.template, text, self.backbone.config.max_text_len)
