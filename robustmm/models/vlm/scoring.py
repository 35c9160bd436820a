"""Candidate log-likelihoods and greedy answers from a prompt pass that is shared by all candidates.

The prompt (image tokens, template, question; B rows, left-padded) runs through the language model once,
keeping every layer's keys and values. Each (example, candidate) row then runs only its answer tokens,
attending to its example's cached prompt: the score is the sum of the answer tokens' log-probabilities
(full-vocabulary log-softmax, fp32), the first token read from the prompt pass's last position. Rows go
in chunks of ``rows`` so the (rows, answer length, vocabulary) logits stay within a memory budget.

The caches here never change in place (:class:`SharedPrompt`): attention gets ``cat(cached, new)`` back,
so the same forward can be recomputed (gradient checkpointing) and one prompt serves many chunks.
Gradients flow through the cached keys and values to the image and text inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from robustmm.models.vlm.families import Family


class SharedPrompt(DynamicCache):
    """A key/value cache attention reads but never extends: ``update`` returns ``cat(stored, new)`` and stores
    nothing; with ``record=True`` it remembers what it returned per layer (the prompt pass's keys/values).

    ``past``: per layer (keys, values), each (B, heads, P, head_dim), or None for an empty cache.
    """

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None, record: bool = False) -> None:
        super().__init__(ddp_cache_data=past or None)
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if record else None

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        if layer_idx < len(self.layers) and self.layers[layer_idx].get_seq_length() > 0:
            layer = self.layers[layer_idx]
            key_states = torch.cat([layer.keys, key_states], dim=-2)
            value_states = torch.cat([layer.values, value_states], dim=-2)
        if self.recorded is not None:
            self.recorded[layer_idx] = (key_states, value_states)
        return key_states, value_states


@dataclass
class PromptState:
    """The prompt pass of B examples: per-layer ``past`` (keys, values) (B, heads, P+L, head_dim), the 2-D
    attention ``mask`` (B, P+L) they go with, ``next_position`` (B,) of the first answer token, and
    ``first_logp`` (B, V) fp32: log-probabilities of the first answer token."""

    past: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    next_position: torch.Tensor
    first_logp: torch.Tensor


def run_prompt(family: Family, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
               prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> PromptState:
    """The prompt pass: ``embeds`` (B, L, D) in the model dtype, ``mask`` (B, L), ``positions`` (B, L) or
    (3, B, L); ``prefix``: a prefix-tuning adapter's per-layer (keys, values) of shape (1, heads, P, head_dim)."""
    b, length = mask.shape
    past = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix] if prefix else None
    offset = past[0][0].shape[-2] if past else 0
    full = torch.cat([mask.new_ones(b, offset), mask], dim=1) if offset else mask
    cache = SharedPrompt(past, record=True)
    out = family.language_model(inputs_embeds=embeds, attention_mask=family.prefix_mask(full, length, embeds.dtype), position_ids=positions,
                                past_key_values=cache, use_cache=True,
                                cache_position=torch.arange(offset, offset + length, device=embeds.device))
    last = family.lm_head(out.last_hidden_state[:, -1]).float().log_softmax(dim=-1)
    layers = [cache.recorded[i] for i in sorted(cache.recorded)]
    return PromptState(layers, full, family.next_positions(positions), last)


def answer_log_likelihood(family: Family, state: PromptState, rows: torch.Tensor, tokens: torch.Tensor,
                          valid: torch.Tensor, embed) -> torch.Tensor:
    """Sum of log p(answer tokens | prompt) for R rows: ``rows`` (R,) example index into ``state``, ``tokens``
    (R, n) answer ids (end token included, right-padded), ``valid`` (R, n) bool. Returns (R,) fp32."""
    logp = state.first_logp[rows].gather(1, tokens[:, :1]).squeeze(1)
    n = tokens.shape[1]
    if n == 1:
        return logp
    past = [(k[rows], v[rows]) for k, v in state.past]
    mask = torch.cat([state.mask[rows], valid[:, :-1].to(state.mask.dtype)], dim=1)
    length = state.mask.shape[1]
    out = family.language_model(inputs_embeds=embed(tokens[:, :-1]), attention_mask=mask,
                                position_ids=family.continuation_positions(state.next_position[rows], n - 1),
                                past_key_values=SharedPrompt(past), use_cache=True,
                                cache_position=torch.arange(length, length + n - 1, device=tokens.device))
    logits = family.lm_head(out.last_hidden_state).float()  # (R, n-1, V)
    picked = logits.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
    return logp + picked.masked_fill(~valid[:, 1:], 0.0).sum(dim=1)


def candidate_scores(family: Family, state: PromptState, answers: torch.Tensor, answer_valid: torch.Tensor, embed,
                     rows_per_chunk: int) -> torch.Tensor:
    """(B, C) log-likelihood of every candidate (``answers`` (C, n), ``answer_valid`` (C, n)) for every example."""
    b, c = state.mask.shape[0], answers.shape[0]
    example = torch.arange(b, device=answers.device).repeat_interleave(c)  # example-major rows
    candidate = torch.arange(c, device=answers.device).repeat(b)
    parts = []
    for start in range(0, b * c, max(1, rows_per_chunk)):
        stop = min(b * c, start + rows_per_chunk)
        chosen = candidate[start:stop]
        parts.append(answer_log_likelihood(family, state, example[start:stop], answers[chosen], answer_valid[chosen], embed))
    return torch.cat(parts).view(b, c)


@torch.no_grad()
def greedy_answers(family: Family, state: PromptState, embed, end_ids: set[int], max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding from the prompt state: per example the generated ids, up to (excluding) an end token."""
    b = state.mask.shape[0]
    cache = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in state.past])
    token = state.first_logp.argmax(dim=-1)
    out: list[list[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=token.device)
    mask, position = state.mask, state.next_position
    for step in range(max_new_tokens):
        for i, t in enumerate(token.tolist()):
            if not done[i]:
                if t in end_ids:
                    done[i] = True
                else:
                    out[i].append(t)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        length = mask.shape[1] - 1
        hidden = family.language_model(inputs_embeds=embed(token.unsqueeze(1)), attention_mask=mask,
                                       position_ids=family.continuation_positions(position, 1), past_key_values=cache,
                                       use_cache=True, cache_position=torch.arange(length, length + 1, device=mask.device))
        token = family.lm_head(hidden.last_hidden_state[:, -1]).float().argmax(dim=-1)
        position = position + 1
    return out
