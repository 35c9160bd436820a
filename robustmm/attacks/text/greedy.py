"""Text attacks: ``word-sub`` (TextFooler-style synonyms) and ``char-swap`` (DeepWordBug-style typos).

Only the text (VQA question / VE hypothesis) is perturbed; the image tensor is passed
through untouched (the returned pixels are a bit-identical copy). The goal is
TextAttack's ``UntargetedClassification``: change the model's predicted candidate away
from the gold one; an example the model already gets wrong is *skipped*.

Both attacks are assembled from TextAttack parts (:mod:`robustmm.attacks.text.parts`:
transformation, ``RepeatModification``, ``StopwordModification``, ``MaxWordsPerturbed``,
a MiniLM ``SentenceEncoder``) and run TextAttack's ``GreedyWordSwapWIR`` search, but
driven here for the whole batch in lock-step: at every step the candidate texts of all
examples still being attacked are scored together (model calls of 16 texts) and encoded
together (one MiniLM call, texts sorted by token count), and model scores (per example
and text), sentence embeddings (per text), synonym lists (per word) and candidate lists
(per question, current text and word) are cached. Same decisions as a stock
``textattack.Attack`` loop on the same parts, up to float noise in near-tied model scores
(``benchmarks/bench_text.py``: 300/300 identical adversarial texts on the shipped pair,
same success rate), with each distinct text encoded once per attack object where the stock
loop encodes every candidate plus one copy of the original window per candidate: 3.2x the
examples/s of the stock loop at 300 easy-VQA examples on the shipped pair (3.4-3.7x on
earlier ones), 2.1x at 30.

Search (Jin et al. 2020, https://arxiv.org/abs/1907.11932, Alg. 1): rank the modifiable
words by how much deleting (``wir="delete"``) or UNK-ing (``wir="unk"``) them lowers the
gold probability; then, word by word in that order, try every allowed replacement and
keep the one that lowers the gold probability most (only if it lowers it); stop when the
prediction changes, choosing among the successful replacements the most similar text.

TextAttack is imported only when an attack runs, never at ``import robustmm.attacks``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from robustmm.attacks.base import (Attack, AttackBatch, AttackResult, attack_mode, check_batch, empty_result,
                                   register_attack)
from robustmm.errors import RobustMMError

logger = logging.getLogger(__name__)

WIR_METHODS = ("delete", "unk")
UNK = "[UNK]"


def _check_common(name: str, fraction: float, similarity: float, window: int, wir: str) -> None:
    if not 0.0 < fraction <= 1.0:
        raise RobustMMError(f"{name} max_words_fraction must be in (0, 1], not {fraction}.")
    if not -1.0 <= similarity <= 1.0:
        raise RobustMMError(f"{name} min_similarity is a cosine in [-1, 1], not {similarity}.")
    if window < 0:
        raise RobustMMError(f"{name} similarity_window must be 0 (whole text) or a number of words, not {window}.")
    if wir not in WIR_METHODS:
        raise RobustMMError(f"{name} wir must be one of {', '.join(WIR_METHODS)}, not {wir!r}.")


@dataclass(frozen=True)
class WordSubConfig:
    """Parameters of ``word-sub``; defaults and where they come from.

    - ``max_words_fraction`` 0.2: at most ``ceil(0.2 * n)`` of the n words change
      (TextAttack's ``MaxWordsPerturbed`` rounding): 1 word of a <=5-word question, 2 of a
      6-10-word one. Our choice; TextFooler itself has no word budget, only similarity.
    - ``min_similarity`` 0.84: cosine of all-MiniLM-L6-v2 embeddings, original vs
      candidate. TextFooler uses 0.8408 on the Universal Sentence Encoder, an *angular*
      similarity (cosine 0.878), which is unavailable offline. MiniLM cosines run lower
      than USE's for near-paraphrases (0.85 for "a man is playing a guitar" vs "a person
      plays a guitar"), so we keep TextFooler's number as a MiniLM cosine. On easy-VQA
      questions it accepts about a quarter of one-word WordNet swaps (median 0.74): color->colour
      0.99, image->picture 0.97, image->figure 0.93 pass; shape->form 0.80 and
      red->crimson 0.70 do not.
    - ``similarity_window`` 15: words around the swap fed to the encoder (TextFooler's
      window); 0 = whole text. Short texts are never exempt (TextAttack's TextFooler
      recipe skips texts shorter than the window, i.e. every easy-VQA question).
    - ``filter_antonyms`` true: drop WordNet antonyms of the original word from its
      synonyms (``color`` lists ``discolor`` as both).
    - ``wir`` "delete": TextFooler's word-importance ranking by deletion.
    """

    max_words_fraction: float = 0.2
    min_similarity: float = 0.84
    similarity_window: int = 15
    filter_antonyms: bool = True
    wir: str = "delete"

    def __post_init__(self) -> None:
        _check_common("word-sub", self.max_words_fraction, self.min_similarity, self.similarity_window, self.wir)


@dataclass(frozen=True)
class CharSwapConfig:
    """Parameters of ``char-swap`` (DeepWordBug, Gao et al. 2018; TextAttack's ``deepwordbug`` recipe).

    - ``max_words_fraction`` 0.2: as for ``word-sub`` (DeepWordBug bounds the number of
      edited words; one character edit per word).
    - ``edits_per_type`` 1: random variants per edit type (swap, substitute, delete,
      insert) and word, i.e. 4 candidates per word, like TextAttack's recipe (``random_one``).
    - ``seed`` 0: seeds the variants (per word; the global RNG is untouched).
    - ``min_similarity`` 0.0: optional MiniLM cosine floor; 0 = none (DeepWordBug has none).
    - ``similarity_window`` 15, ``wir`` "unk" (DeepWordBug's replace-one score, TextAttack's
      default).
    """

    max_words_fraction: float = 0.2
    edits_per_type: int = 1
    seed: int = 0
    min_similarity: float = 0.0
    similarity_window: int = 15
    wir: str = "unk"

    def __post_init__(self) -> None:
        _check_common("char-swap", self.max_words_fraction, self.min_similarity, self.similarity_window, self.wir)
        if self.edits_per_type < 1:
            raise RobustMMError(f"char-swap edits_per_type must be at least 1, not {self.edits_per_type}.")


@dataclass
class _Example:
    """Search state of one example (``score`` = 1 - p(gold), TextAttack's untargeted score)."""

    original: Any  # textattack AttackedText
    target: int
    current: Any = None
    score: float = 0.0
    order: list[int] = field(default_factory=list)
    pos: int = 0
    status: str = "searching"
    last_index: int = -1  # word index of the latest accepted swap
    queries: int = 0
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # text -> (probs, log-lik)


class GreedyTextAttack(Attack):
    """Shared driver of the text attacks: TextAttack parts + ``GreedyWordSwapWIR`` run batched."""

    modality: ClassVar[str] = "text"
    #: Texts per model call (not part of the config: it does not change results). Small on
    #: purpose: the built-in model's decoder copies its memory once per candidate answer, so
    #: large batches fall out of cache; on one CPU thread the benchmark's model calls take
    #: ~20% less time at 16 than at 32 and ~30% less than at 256.
    batch_size: int = 16

    def __init__(self, config=None, **params) -> None:
        super().__init__(config, **params)
        self._embeddings: dict[str, torch.Tensor] = {}  # text -> (384,) unit MiniLM embedding
        self._candidate_lists: dict[tuple[str, str, int], list] = {}  # see _candidates; emptied per run
        self._parts = None

    # -- building -----------------------------------------------------------
    def transformation(self, parts):
        """The TextAttack transformation (subclasses)."""
        raise NotImplementedError

    def build(self, device: str = "cpu") -> dict[str, Any]:
        """The TextAttack components (built once per attack object; imports TextAttack).

        Keys: ``transformation``, ``pre`` (pre-transformation constraints), ``constraints``
        (MaxWordsPerturbed [+ MiniLMSimilarity]), ``similarity`` (the MiniLM constraint or None),
        ``encoder``. These are exactly the parts a stock ``textattack.Attack`` gets in the benchmark.
        """
        if self._parts is None:
            from robustmm.attacks.text import parts as ta

            c = self.config
            similarity = None
            if c.min_similarity > 0:
                similarity = ta.MiniLMSimilarity(c.min_similarity, c.similarity_window or None, device=device)
            constraints = [ta.MaxWordsPerturbed(max_percent=c.max_words_fraction)] + ([similarity] if similarity else [])
            self._parts = {
                "ta": ta,
                "transformation": self.transformation(ta),
                "pre": [ta.RepeatModification(), ta.stopword_constraint()],
                "constraints": constraints,
                "similarity": similarity,
                "encoder": ta.shared_encoder(device),
            }
        return self._parts

    # -- caches ---------------------------------------------------------------
    def _embed(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """MiniLM unit embeddings of ``texts``, each text encoded once per attack object."""
        missing = sorted({t for t in texts if t not in self._embeddings})
        if len(self._embeddings) + len(missing) > 200_000:  # bound memory (~300 MB)
            self._embeddings.clear()
            missing = sorted(set(texts))
        if missing:
            for text, vector in zip(missing, self._parts["encoder"].encode(missing)):
                self._embeddings[text] = vector
        return self._embeddings

    def _similarity(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each (reference, candidate) text pair."""
        table = self._embed([t for pair in pairs for t in pair])
        return [float(table[a] @ table[b]) for a, b in pairs]

    def _score(self, model, pixels: torch.Tensor, states: list[_Example], requests: list[tuple[int, str]]) -> None:
        """Fill each state's score cache for the (example index, text) requests, in batched model calls."""
        from robustmm.attacks.text.parts import candidate_probabilities

        todo = list(dict.fromkeys((b, t) for b, t in requests if t not in states[b].scores))
        todo.sort(key=lambda bt: len(bt[1]))  # similar lengths per call: less padding
        size = self.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            rows = torch.tensor([b for b, _ in chunk], device=pixels.device)
            probs, loglik = candidate_probabilities(model, pixels.index_select(0, rows), [t for _, t in chunk])
            for (b, text), p, s in zip(chunk, probs, loglik):
                states[b].scores[text] = (p, s)
                states[b].queries += 1

    # -- search ----------------------------------------------------------------
    def _candidates(self, state: _Example, index: int) -> list[tuple[Any, str]]:
        """TextAttack's ``get_transformations`` minus the similarity check: replacements of word
        ``index`` in the current text that pass the pre-transformation constraints and MaxWordsPerturbed,
        each with its similarity window, as [(AttackedText, window text)].

        Cached per (original text, current text, index): examples asking the same question share
        the lists (the constraints see only those texts and the indices already swapped, which
        are the words where current and original differ)."""
        key = (state.original.text, state.current.text, index)
        if key not in self._candidate_lists:
            parts = self._parts
            texts = parts["transformation"](state.current, pre_transformation_constraints=parts["pre"],
                                            indices_to_modify=[index])
            texts = [t for t in texts if t.text != state.current.text]
            for constraint in parts["constraints"]:
                if constraint is not parts["similarity"]:
                    texts = constraint.call_many(texts, state.original)
            self._candidate_lists[key] = [(t, self._window(t, index)) for t in texts]
        return self._candidate_lists[key]

    def _window(self, text, index: int) -> str:
        window = self.config.similarity_window or float("inf")
        return text.text_window_around_index(index, window)

    def _next_candidates(self, states: list[_Example]) -> tuple[dict[int, list[tuple[Any, float]]], dict[int, int]]:
        """For each searching example: move to its next ranked word that has allowed candidates.

        Returns example index -> [(candidate AttackedText, windowed similarity)] sorted by text
        (TextAttack's order), and example index -> the word index swapped; examples whose
        ranking runs out are marked failed. Similarities of all examples are computed in one
        encoder call per round.
        """
        threshold = self.config.min_similarity
        pending: dict[int, list] = {}
        index_of: dict[int, int] = {}
        frontier = [b for b, s in enumerate(states) if s.status == "searching"]
        while frontier:
            raw: dict[int, tuple[int, list]] = {}
            for b in frontier:
                state = states[b]
                if state.pos >= len(state.order):
                    state.status = "failed"
                    continue
                index = int(state.order[state.pos])
                state.pos += 1
                raw[b] = (index, self._candidates(state, index))
            reference = {b: self._window(states[b].original, i) for b, (i, _) in raw.items()}
            pairs = [(reference[b], window) for b, (_, cands) in raw.items() for _, window in cands]
            sims = iter(self._similarity(pairs) if pairs and threshold > 0 else [1.0] * len(pairs))
            frontier = []
            for b, (index, cands) in raw.items():
                kept = [(c, s) for c, s in ((c, next(sims)) for c, _ in cands) if threshold <= 0 or s >= threshold]
                if kept:
                    pending[b], index_of[b] = sorted(kept, key=lambda cs: cs[0].text), index
                else:
                    frontier.append(b)
        return pending, index_of

    def run(self, model, batch: AttackBatch) -> AttackResult:
        """Attack the texts of ``batch`` against ``model``; pixels (B, 3, H, W) in [0, 1] stay fixed.

        Returns the adversarial texts, the bit-identical pixels, the model's (B, C) candidate
        log-likelihoods on them, and per example: ``original``, ``perturbed``, ``status``
        (succeeded / failed / skipped), ``words_changed``, ``words_total``, ``changed_fraction``,
        ``queries`` (texts the model scored for it, cached repeats not counted), ``similarity``
        (MiniLM cosine of original and adversarial text over the constraint's window around the
        latest swap: the whole text up to 15 words; 1.0 if unchanged), ``substitutions`` ([old, new] pairs),
        ``unknown_substitutions`` (new words the model's tokenizer maps to [UNK]) and
        ``seconds`` (the batch's time divided evenly).
        """
        check_batch(batch)
        if len(batch) == 0:
            return empty_result(model, batch)
        start = time.perf_counter()
        with attack_mode(model), torch.no_grad():
            states, pixels = self._search(model, batch)
            return self._result(model, batch, states, pixels, time.perf_counter() - start)

    def _search(self, model, batch: AttackBatch) -> tuple[list[_Example], torch.Tensor]:
        parts = self.build(str(model.device))
        ta, transformation, pre = parts["ta"], parts["transformation"], parts["pre"]
        pixels = batch.pixels.detach().to(model.device)
        targets = [int(t) for t in batch.targets.tolist()]
        states = [_Example(ta.AttackedText(text), target) for text, target in zip(batch.texts, targets)]
        for state in states:
            state.current = state.original
        self._candidate_lists.clear()

        # Clean prediction: skip examples already misclassified (or with a gold answer outside the set).
        self._score(model, pixels, states, [(b, s.original.text) for b, s in enumerate(states)])
        for state in states:
            probs = state.scores[state.original.text][0]
            if state.target < 0 or int(probs.argmax()) != state.target:
                state.status = "skipped"
            else:
                state.score = 1.0 - float(probs[state.target])

        # Word importance ranking (GreedyWordSwapWIR._get_index_order, "delete" / "unk").
        leave_one: dict[int, tuple[list[int], list[str]]] = {}
        for b, state in enumerate(states):
            if state.status != "searching":
                continue
            indices = list(transformation(state.original, pre_transformation_constraints=pre, return_indices=True))
            if self.config.wir == "delete":
                texts = [state.original.delete_word_at_index(i).text for i in indices]
            else:
                texts = [state.original.replace_word_at_index(i, UNK).text for i in indices]
            leave_one[b] = (indices, texts)
        self._score(model, pixels, states, [(b, t) for b, (_, texts) in leave_one.items() for t in texts])
        for b, (indices, texts) in leave_one.items():
            state = states[b]
            scores = np.array([1.0 - float(state.scores[t][0][state.target]) for t in texts])
            state.order = list(np.array(indices)[(-scores).argsort()]) if indices else []

        # Greedy swaps, all examples in lock-step (GreedyWordSwapWIR.perform_search).
        while True:
            pending, index_of = self._next_candidates(states)
            if not pending:
                break
            self._score(model, pixels, states, [(b, c.text) for b, cands in pending.items() for c, _ in cands])
            for b, cands in pending.items():
                state = states[b]
                results = []
                for cand, sim in cands:
                    probs = state.scores[cand.text][0]
                    results.append((1.0 - float(probs[state.target]), int(probs.argmax()) != state.target, sim, cand))
                results.sort(key=lambda r: -r[0])  # stable: ties keep text order, as TextAttack
                if results[0][0] <= state.score:
                    continue
                state.score, state.current, state.last_index = results[0][0], results[0][3], index_of[b]
                if results[0][1]:
                    best, best_sim = results[0], -float("inf")
                    for r in results:
                        if not r[1]:
                            break
                        if r[2] > best_sim:
                            best, best_sim = r, r[2]
                    state.score, state.current, state.status = best[0], best[3], "succeeded"
        return states, pixels

    def _result(self, model, batch: AttackBatch, states: list[_Example], pixels: torch.Tensor, seconds: float) -> AttackResult:
        finals = [s.current.text for s in states]
        # The similarity the constraint compares: windows around the latest swap (whole text up to 15 words).
        changed = [s for s in states if s.last_index >= 0]
        windows = [(self._window(s.original, s.last_index), self._window(s.current, s.last_index)) for s in changed]
        similarity = {id(s): v for s, v in zip(changed, self._similarity(windows))}
        info, new_words = [], []
        for state in states:
            changed = sorted(state.original.all_words_diff(state.current))
            subs = [[state.original.words[i], state.current.words[i]] for i in changed]
            new_words.append([new for _, new in subs])
            total = len(state.original.words)
            info.append({
                "original": state.original.text,
                "perturbed": state.current.text,
                "status": state.status if state.status != "searching" else "failed",
                "words_changed": len(changed),
                "words_total": total,
                "changed_fraction": len(changed) / total if total else 0.0,
                "queries": state.queries,
                "similarity": similarity.get(id(state), 1.0),
                "substitutions": subs,
                "seconds": seconds / max(len(states), 1),
            })
        flat = [w for words in new_words for w in words]
        unknown = iter(model.unknown_words(flat) if flat else [])
        for row, words in zip(info, new_words):
            row["unknown_substitutions"] = sum(bool(next(unknown)) for _ in words)
        scores = torch.stack([s.scores[s.current.text][1] for s in states]).to(batch.pixels.device)
        counts = {k: sum(r["status"] == k for r in info) for k in ("succeeded", "failed", "skipped")}
        logger.info("%s: %d succeeded, %d failed, %d skipped; %d of %d substituted words unknown to the tokenizer; %.1fs",
                    self.name, counts["succeeded"], counts["failed"], counts["skipped"],
                    sum(r["unknown_substitutions"] for r in info), len(flat), seconds)
        return AttackResult(pixels=batch.pixels.detach().clone(), texts=finals, scores=scores, info=info)


@register_attack
class WordSubstitution(GreedyTextAttack):
    """TextFooler-style word substitution with WordNet synonyms (Jin et al. 2020, https://arxiv.org/abs/1907.11932).

    Greedy word-importance search; WordNet synonym swaps (no antonyms); no stop word and
    no word changed twice; at most ``max_words_fraction`` of the words; MiniLM cosine
    similarity to the original >= ``min_similarity``. See :class:`WordSubConfig`.

    Shape: pixels (B, 3, H, W) in [0, 1] unchanged; texts B strings -> B strings.

    Examples::

        attack = get_attack("word-sub", max_words_fraction=0.2)
        result = attack.run(model, batch)
        result.texts[0], result.info[0]["status"]
    """

    name: ClassVar[str] = "word-sub"
    Config: ClassVar[type] = WordSubConfig
    paper: ClassVar[str] = "https://arxiv.org/abs/1907.11932"

    def transformation(self, parts):
        return parts.WordNetSynonymSwap(filter_antonyms=self.config.filter_antonyms)


@register_attack
class CharSwap(GreedyTextAttack):
    """DeepWordBug-style character edits (Gao et al. 2018, https://arxiv.org/abs/1801.04354).

    Same greedy search as ``word-sub``; candidates of a word are random adjacent swaps,
    substitutions, deletions and insertions of one character (seeded). Needs no data.
    See :class:`CharSwapConfig`.

    Shape: pixels (B, 3, H, W) in [0, 1] unchanged; texts B strings -> B strings.

    Examples::

        attack = get_attack("char-swap", max_words_fraction=0.2, seed=0)
        result = attack.run(model, batch)
    """

    name: ClassVar[str] = "char-swap"
    Config: ClassVar[type] = CharSwapConfig
    paper: ClassVar[str] = "https://arxiv.org/abs/1801.04354"

    def transformation(self, parts):
        return parts.CharacterEditSwap(per_edit=self.config.edits_per_type, seed=self.config.seed)
