"""Text attacks: ``word-sub`` (TextFooler-style synonyms), ``wordnet-nn`` (its wider-pool, BAE-style
counterpart) and ``char-swap`` (DeepWordBug-style typos), all keeping the label.

Only the text (VQA question / VE hypothesis) is perturbed; the image tensor is passed
through untouched (the returned pixels are a bit-identical copy). The goal is
TextAttack's ``UntargetedClassification``: change the model's predicted candidate away
from the gold one; an example the model already gets wrong, or with nothing to attack, is
*skipped* (``details["skipped_reason"]``).

Label keeping (docs/text-attacks.md): protected words (:mod:`robustmm.attacks.text.protect`)
are never edited nor introduced; word swaps stay within the word's part of speech in its
sentence (:mod:`robustmm.attacks.text.pos`); only the words within the model's token budget
(``VLModel.text_reach``) are ranked or swapped, and the model scores each candidate as that
visible head plus a short piece of the rest that it still truncates (:func:`split_at_reach`), so
the cost does not grow with the invisible words.

The attacks are assembled from TextAttack parts (:mod:`robustmm.attacks.text.parts`:
transformation, ``RepeatModification``, ``StopwordModification``, ``ProtectedWords``,
``MaxWordsPerturbed``, ``NoProtectedReplacement``, a MiniLM ``SentenceEncoder`` keeping the
``max_candidates`` closest replacements) and run TextAttack's ``GreedyWordSwapWIR`` search, but
driven here for the whole batch in lock-step: at every step the candidate texts of all
examples still being attacked are scored together (model calls of 16 texts) and encoded
together (one MiniLM call, texts sorted by token count), and model scores (per example
and text), sentence embeddings (per text), synonym lists (per word and tag) and candidate lists
(per question, current text, word and protection) are cached. Same decisions as a stock
``textattack.Attack`` loop on the same parts, up to float noise in near-tied model scores
(``benchmarks/bench_text.py``: 300/300 identical adversarial texts on the shipped pair,
same success rate), with each distinct text encoded once per attack object where the stock
loop encodes every candidate plus one copy of the original window per candidate: 3.4x the
stock loop's CPU time at 300 easy-VQA examples on the shipped pair (4.6x its wall time on a loaded
machine; 3.1-3.7x before the label-keeping constraints).

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

from robustmm.attacks.base import (IF_SET, Attack, AttackBatch, AttackResult, attack_mode, check_batch, empty_result,
                                   register_attack)
from robustmm.attacks.text.protect import DEFAULT_LISTS, check_lists
from robustmm.errors import RobustMMError

logger = logging.getLogger(__name__)

WIR_METHODS = ("delete", "unk")
POS_OPTIONS = ("context", "any")
UNK = "[UNK]"


def _check_common(name: str, fraction: float, similarity: float, window: int, wir: str, protect) -> None:
    if not 0.0 < fraction <= 1.0:
        raise RobustMMError(f"{name} max_words_fraction must be in (0, 1], not {fraction}.")
    if not -1.0 <= similarity <= 1.0:
        raise RobustMMError(f"{name} min_similarity is a cosine in [-1, 1], not {similarity}.")
    if window < 0:
        raise RobustMMError(f"{name} similarity_window must be 0 (whole text) or a number of words, not {window}.")
    if wir not in WIR_METHODS:
        raise RobustMMError(f"{name} wir must be one of {', '.join(WIR_METHODS)}, not {wir!r}.")
    check_lists(protect, name)


def _check_word_options(name: str, pos: str, max_candidates: int) -> None:
    if pos not in POS_OPTIONS:
        raise RobustMMError(f"{name} pos must be one of {', '.join(POS_OPTIONS)}, not {pos!r}.")
    if max_candidates < 0:
        raise RobustMMError(f"{name} max_candidates must be 0 (all) or a positive number, not {max_candidates}.")


@dataclass(frozen=True)
class WordSubConfig:
    """Parameters of ``word-sub``; defaults and where they come from.

    - ``max_words_fraction`` 0.2: at most ``ceil(0.2 * n)`` of the n words the model sees change
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
    - ``pos`` "context": candidates come only from the WordNet senses of the word's part of
      speech in its sentence (spaCy tagger, :mod:`robustmm.attacks.text.pos`), inflected like the
      word ("contains" -> "holds"); "any" reads every sense, uninflected (TextAttack's
      ``WordSwapWordNet``; "red" -> "Marxist").
    - ``protect_answers`` true, ``protect`` negations+quantifiers+numbers, ``protect_words`` none:
      the label-bearing words never changed nor introduced (:mod:`robustmm.attacks.text.protect`;
      answers = VQA answer words / VE colours, shapes, numbers and objects).
    - ``max_candidates`` 50: of the replacements of a word that pass the similarity check, the 50
      nearest in the sentence encoder's view (TextFooler's N = 50); 0 = all.
    - ``multiword`` false: drop hyphenated WordNet lemmas ("gray-headed"); multi-word lemmas
      ("red_ink") are always dropped.
    """

    max_words_fraction: float = 0.2
    min_similarity: float = 0.84
    similarity_window: int = 15
    filter_antonyms: bool = True
    wir: str = "delete"
    pos: str = "context"
    protect_answers: bool = True
    protect: tuple[str, ...] = DEFAULT_LISTS
    max_candidates: int = 50
    protect_words: tuple[str, ...] = field(default=(), metadata=IF_SET)
    multiword: bool = field(default=False, metadata=IF_SET)

    def __post_init__(self) -> None:
        _check_common("word-sub", self.max_words_fraction, self.min_similarity, self.similarity_window, self.wir,
                      self.protect)
        _check_word_options("word-sub", self.pos, self.max_candidates)


@dataclass(frozen=True)
class CharSwapConfig:
    """Parameters of ``char-swap`` (DeepWordBug, Gao et al. 2018; TextAttack's ``deepwordbug`` recipe).

    - ``max_words_fraction`` 0.2: as for ``word-sub`` (DeepWordBug bounds the number of
      edited words; one character edit per word).
    - ``edits_per_type`` 1: random variants per edit type (swap, substitute, delete,
      insert) and word, i.e. 4 candidates per word, like TextAttack's recipe (``random_one``);
      drawn from the example's seed (run seed, attack key, example id: :mod:`robustmm.seeding`).
    - ``min_similarity`` 0.0: optional MiniLM cosine floor; 0 = none (DeepWordBug has none).
    - ``similarity_window`` 15, ``wir`` "unk" (DeepWordBug's replace-one score, TextAttack's
      default).
    - ``protect_answers``, ``protect``, ``protect_words``: as for ``word-sub`` (a typo inside
      "red" can make it "rod"; an edit that turns a word into a protected one is refused too).
    """

    max_words_fraction: float = 0.2
    edits_per_type: int = 1
    min_similarity: float = 0.0
    similarity_window: int = 15
    wir: str = "unk"
    protect_answers: bool = True
    protect: tuple[str, ...] = DEFAULT_LISTS
    protect_words: tuple[str, ...] = field(default=(), metadata=IF_SET)

    def __post_init__(self) -> None:
        _check_common("char-swap", self.max_words_fraction, self.min_similarity, self.similarity_window, self.wir,
                      self.protect)
        if self.edits_per_type < 1:
            raise RobustMMError(f"char-swap edits_per_type must be at least 1, not {self.edits_per_type}.")


@dataclass
class _Example:
    """Search state of one example (``score`` = 1 - p(gold), TextAttack's untargeted score).

    The search sees only ``original`` = the words of the text within the model's token budget
    (the *head*); ``tail`` is the rest, appended unchanged to the result; ``tail_cut`` is the
    shortest prefix of the tail that the model still truncates, appended to every text it scores
    (same tokens after truncation as the whole tail, at a fraction of the tokenizing cost).
    """

    original: Any  # textattack AttackedText of the head
    target: int
    tail: str = ""
    tail_cut: str = ""
    out_of_reach: int = 0
    protection: Any = None  # robustmm.attacks.text.protect.Protection
    seed: int = 0
    context: tuple = ()  # cache key of what, besides the texts, decides the candidates
    pre: list = field(default_factory=list)  # pre-transformation constraints
    post: list = field(default_factory=list)  # constraints other than the similarity
    current: Any = None
    score: float = 0.0
    order: list[int] = field(default_factory=list)
    pos: int = 0
    status: str = "searching"
    skipped_reason: str | None = None
    last_index: int = -1  # word index of the latest accepted swap
    queries: int = 0
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # head text -> (probs, log-lik)


def split_at_reach(model, text: str) -> tuple[str, str, str]:
    """(head, tail, tail_cut) of ``text`` for ``model``: ``head`` = the text up to the last whitespace
    inside the model's token budget (:meth:`VLModel.text_reach`; every word of it is seen whole),
    ``tail`` = the rest, ``tail_cut`` = the shortest whitespace-bounded prefix of ``tail`` that the
    model truncates on its own, so that ``any_head + tail_cut`` truncates to the same tokens as
    ``any_head + tail`` (WordPiece tokenizes whitespace-separated chunks independently)."""
    reach = model.text_reach(text)
    if reach >= len(text):
        return text, "", ""
    cut = reach
    while cut > 0 and not text[cut].isspace():
        cut -= 1
    head, tail = text[:cut], text[cut:]
    end = model.text_reach(tail)
    while end < len(tail):
        while end < len(tail) and tail[end].isspace():
            end += 1
        while end < len(tail) and not tail[end].isspace():
            end += 1
        if model.text_reach(tail[:end]) < len(tail[:end].rstrip()):
            break
    return head, tail, tail[:end]


class GreedyTextAttack(Attack):
    """Shared driver of the text attacks: TextAttack parts + ``GreedyWordSwapWIR`` run batched."""

    modality: ClassVar[str] = "text"
    #: Texts per model call (not part of the config: it does not change results). Small on
    #: purpose: the built-in model's decoder copies its memory once per candidate answer, so
    #: large batches fall out of cache; on one CPU thread the benchmark's model calls take
    #: ~20% less time at 16 than at 32 and ~30% less than at 256.
    batch_size: int = 16
    #: Whether the candidates of a word depend on the example's seed (char-swap's random edits).
    seeded: ClassVar[bool] = False
    #: Whether the transformation reads parts of speech (then ``details`` lists each swap's tag).
    tags_words: ClassVar[bool] = False

    def __init__(self, config=None, **params) -> None:
        super().__init__(config, **params)
        self._embeddings: dict[str, torch.Tensor] = {}  # text -> (384,) unit MiniLM embedding
        self._candidate_lists: dict[tuple, list] = {}  # see _candidates; emptied per run
        self._protections: dict[tuple, tuple[list, list]] = {}  # Protection.key -> (pre, post) constraints
        self._seeded_transformations: dict[int, Any] = {}
        self._parts = None

    # -- building -----------------------------------------------------------
    def transformation(self, parts, seed: int = 0):
        """The TextAttack transformation (subclasses); ``seed`` only matters for a ``seeded`` attack."""
        raise NotImplementedError

    def tagger(self):
        """The part-of-speech tagger the transformation reads, or None (subclasses that tag words)."""
        return None

    def build(self, device: str = "cpu") -> dict[str, Any]:
        """The TextAttack components (built once per attack object; imports TextAttack).

        Keys: ``transformation``, ``pre`` (pre-transformation constraints without the protected
        words), ``constraints`` (MaxWordsPerturbed [+ MiniLMSimilarity]), ``similarity`` (the MiniLM
        constraint or None), ``encoder``. With :meth:`protection_constraints` these are exactly the
        parts a stock ``textattack.Attack`` gets in the benchmark.
        """
        if self._parts is None:
            from robustmm.attacks.text import parts as ta

            c = self.config
            similarity = None
            if c.min_similarity > 0:
                similarity = ta.MiniLMSimilarity(c.min_similarity, c.similarity_window or None, device=device,
                                                 max_candidates=getattr(c, "max_candidates", 0))
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

    def protection_constraints(self, protection) -> tuple[list, list]:
        """(pre-transformation, other) TextAttack constraints that keep ``protection``'s words:
        ``ProtectedWords`` and ``NoProtectedReplacement``, shared by examples with equal protections."""
        if protection.key not in self._protections:
            ta = self._parts["ta"]
            self._protections[protection.key] = ([ta.ProtectedWords(protection)], [ta.NoProtectedReplacement(protection)])
        return self._protections[protection.key]

    def protection_for(self, model, example, dataset_words) -> Any:
        """The :class:`~robustmm.attacks.text.protect.Protection` of one example (its gold answers,
        the model's candidates for VQA, the dataset's protected words, the preset's lists and words)."""
        from robustmm.attacks.text.protect import example_protection

        c = self.config
        task = getattr(example.task, "value", example.task)
        return example_protection(task, tuple(example.answers), getattr(model, "candidates", ()), dataset_words,
                                  c.protect, c.protect_answers, c.protect_words)

    def _transformation(self, state: _Example):
        if not self.seeded:
            return self._parts["transformation"]
        if state.seed not in self._seeded_transformations:
            if len(self._seeded_transformations) > 10_000:
                self._seeded_transformations.clear()
            self._seeded_transformations[state.seed] = self.transformation(self._parts["ta"], state.seed)
        return self._seeded_transformations[state.seed]

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
        """Fill each state's score cache for the (example index, head text) requests, in batched model
        calls; the model reads each head text followed by its example's ``tail_cut``."""
        from robustmm.attacks.text.parts import candidate_probabilities

        todo = list(dict.fromkeys((b, t) for b, t in requests if t not in states[b].scores))
        todo.sort(key=lambda bt: len(bt[1]))  # similar lengths per call: less padding
        size = self.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            rows = torch.tensor([b for b, _ in chunk], device=pixels.device)
            texts = [t + states[b].tail_cut for b, t in chunk]
            probs, loglik = candidate_probabilities(model, pixels.index_select(0, rows), texts)
            for (b, text), p, s in zip(chunk, probs, loglik):
                states[b].scores[text] = (p, s)
                states[b].queries += 1

    # -- search ----------------------------------------------------------------
    def _candidates(self, state: _Example, index: int) -> list[tuple[Any, str]]:
        """TextAttack's ``get_transformations`` minus the similarity check: replacements of word
        ``index`` in the current text that pass the pre-transformation constraints, MaxWordsPerturbed
        and NoProtectedReplacement, each with its similarity window, as [(AttackedText, window text)].

        Cached per (original text, current text, index, protection [, seed]): examples asking the
        same question share the lists (the constraints see only those texts and the indices already
        swapped, which are the words where current and original differ)."""
        key = (state.original.text, state.current.text, index, state.context)
        if key not in self._candidate_lists:
            texts = self._transformation(state)(state.current, pre_transformation_constraints=state.pre,
                                                indices_to_modify=[index])
            texts = [t for t in texts if t.text != state.current.text]
            for constraint in state.post:
                texts = constraint.call_many(texts, state.original)
            self._candidate_lists[key] = [(t, self._window(t, index)) for t in texts]
        return self._candidate_lists[key]

    def _window(self, text, index: int) -> str:
        window = self.config.similarity_window or float("inf")
        return text.text_window_around_index(index, window)

    def _next_candidates(self, states: list[_Example]) -> tuple[dict[int, list[tuple[Any, float]]], dict[int, int]]:
        """For each searching example: move to its next ranked word that has allowed candidates.

        Returns example index -> [(candidate AttackedText, windowed similarity)]: those at or above
        the similarity threshold, at most ``max_candidates`` of them (the most similar), sorted by text
        (TextAttack's order); and example index -> the word index swapped. Examples whose ranking
        runs out are marked failed. Similarities of all examples are computed in one encoder call
        per round.
        """
        from robustmm.attacks.text.parts import top_candidates

        threshold = self.config.min_similarity
        limit = getattr(self.config, "max_candidates", 0) if threshold > 0 else 0
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
                if limit and len(kept) > limit:
                    similarity = {id(c): s for c, s in kept}
                    chosen = top_candidates([c for c, _ in kept], [s for _, s in kept], limit)
                    kept = [(c, similarity[id(c)]) for c in chosen]
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
        ``unknown_substitutions`` (new words the model's tokenizer maps to [UNK]),
        ``seconds`` (the batch's time divided evenly) and ``details`` (JSON facts for the record):

        - ``substitutions``: [[word index, old, new], ...] in word order;
        - ``substitution_pos`` (attacks that tag words): the universal POS tag of each old word in its sentence;
        - ``protected_indices``: word indices of the (visible) text that are protected;
        - ``protected_edits``: substitutions whose old or new word is protected (0 by construction: an audit);
        - ``out_of_reach``: words beyond the model's token budget (neither ranked nor substituted);
        - ``words_in_reach``: words the search could see;
        - ``unknown_substitutions``: new words the tokenizer maps to [UNK];
        - ``queries``: texts the model scored for the example;
        - ``skipped_reason`` (skipped examples only): "empty text", "clean prediction wrong",
          "gold answer not a candidate", "no word within the model's token budget", "only stop words",
          "only protected words" or "only stop words and protected words".
        """
        check_batch(batch)
        if len(batch) == 0:
            return empty_result(model, batch)
        start = time.perf_counter()
        with attack_mode(model), torch.no_grad():
            states, pixels = self._search(model, batch)
            return self._result(model, batch, states, pixels, time.perf_counter() - start)

    def _prepare(self, model, batch: AttackBatch) -> list[_Example]:
        """One search state per example: the visible head, the protection and its constraints, the seed."""
        ta = self._parts["ta"]
        from textattack.shared.utils import words_from_text

        seeds = self.example_seeds(batch)
        states = []
        for b, text in enumerate(batch.texts):
            head, tail, tail_cut = split_at_reach(model, text)
            protection = self.protection_for(model, batch.examples[b], batch.protected)
            pre, post = self.protection_constraints(protection)
            state = _Example(ta.AttackedText(head), int(batch.targets[b]), tail=tail, tail_cut=tail_cut,
                             out_of_reach=len(words_from_text(tail)) if tail else 0, protection=protection,
                             seed=seeds[b], context=(protection.key, seeds[b] if self.seeded else None),
                             pre=self._parts["pre"] + pre,
                             post=[c for c in self._parts["constraints"] if c is not self._parts["similarity"]] + post)
            state.current = state.original
            states.append(state)
        return states

    @staticmethod
    def _nothing_to_attack(state: _Example, stopwords: frozenset[str]) -> str | None:
        """Why an example has no word to attack (see ``skipped_reason``), or None."""
        words = state.original.words
        if not words:
            return "no word within the model's token budget" if state.out_of_reach else "empty text"
        stop = [w.lower() in stopwords for w in words]
        protected = [w in state.protection for w in words]
        if not all(s or p for s, p in zip(stop, protected)):
            return None
        if all(stop):
            return "only stop words"
        return "only protected words" if all(protected) else "only stop words and protected words"

    def _search(self, model, batch: AttackBatch) -> tuple[list[_Example], torch.Tensor]:
        parts = self.build(str(model.device))
        pixels = batch.pixels.detach().to(model.device)
        self._candidate_lists.clear()
        states = self._prepare(model, batch)
        stopwords = parts["pre"][1].stopwords

        # Clean prediction: skip examples already misclassified (or with a gold answer outside the set).
        self._score(model, pixels, states, [(b, s.original.text) for b, s in enumerate(states)])
        for state in states:
            probs = state.scores[state.original.text][0]
            if state.target < 0:
                state.status, state.skipped_reason = "skipped", "gold answer not a candidate"
            elif int(probs.argmax()) != state.target:
                state.status, state.skipped_reason = "skipped", "clean prediction wrong"
            else:
                reason = self._nothing_to_attack(state, stopwords)
                if reason:
                    state.status, state.skipped_reason = "skipped", reason
                state.score = 1.0 - float(probs[state.target])

        # Word importance ranking (GreedyWordSwapWIR._get_index_order, "delete" / "unk").
        leave_one: dict[int, tuple[list[int], list[str]]] = {}
        for b, state in enumerate(states):
            if state.status != "searching":
                continue
            indices = sorted(self._transformation(state)(state.original, pre_transformation_constraints=state.pre,
                                                         return_indices=True))
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
        finals = [s.current.text + s.tail for s in states]
        # The similarity the constraint compares: windows around the latest swap (whole text up to 15 words).
        changed = [s for s in states if s.last_index >= 0]
        windows = [(self._window(s.original, s.last_index), self._window(s.current, s.last_index)) for s in changed]
        similarity = {id(s): v for s, v in zip(changed, self._similarity(windows))}
        tagger = self.tagger()
        info, new_words = [], []
        for state in states:
            changed = sorted(state.original.all_words_diff(state.current))
            old_words = state.original.words
            subs = [[old_words[i], state.current.words[i]] for i in changed]
            new_words.append([new for _, new in subs])
            total = len(old_words) + state.out_of_reach
            details = {
                "substitutions": [[i, old, new] for i, (old, new) in zip(changed, subs)],
                "protected_indices": [i for i, w in enumerate(old_words) if w in state.protection],
                "protected_edits": sum(old in state.protection or new in state.protection for old, new in subs),
                "out_of_reach": state.out_of_reach,
                "words_in_reach": len(old_words),
                "queries": state.queries,
            }
            if tagger is not None and changed:
                tags = tagger.tags(state.original.text, old_words)
                details["substitution_pos"] = [tags[i] for i in changed]
            if state.skipped_reason:
                details["skipped_reason"] = state.skipped_reason
            info.append({
                "original": state.original.text + state.tail,
                "perturbed": state.current.text + state.tail,
                "status": state.status if state.status != "searching" else "failed",
                "words_changed": len(changed),
                "words_total": total,
                "changed_fraction": len(changed) / total if total else 0.0,
                "queries": state.queries,
                "similarity": similarity.get(id(state), 1.0),
                "substitutions": subs,
                "seconds": seconds / max(len(states), 1),
                "details": details,
            })
        flat = [w for words in new_words for w in words]
        unknown = iter(model.unknown_words(flat) if flat else [])
        for row, words in zip(info, new_words):
            row["unknown_substitutions"] = row["details"]["unknown_substitutions"] = sum(bool(next(unknown)) for _ in words)
        scores = torch.stack([s.scores[s.current.text][1] for s in states]).to(batch.pixels.device)
        counts = {k: sum(r["status"] == k for r in info) for k in ("succeeded", "failed", "skipped")}
        logger.info("%s: %d succeeded, %d failed, %d skipped; %d of %d substituted words unknown to the tokenizer; %.1fs",
                    self.name, counts["succeeded"], counts["failed"], counts["skipped"],
                    sum(r["unknown_substitutions"] for r in info), len(flat), seconds)
        return AttackResult(pixels=batch.pixels.detach().clone(), texts=finals, scores=scores, info=info)


@register_attack
class WordSubstitution(GreedyTextAttack):
    """TextFooler-style word substitution with WordNet synonyms (Jin et al. 2020, https://arxiv.org/abs/1907.11932).

    Greedy word-importance search; WordNet synonyms of the word's part of speech in its
    sentence (spaCy tagger; no antonyms, single words); never a protected (label-bearing) word,
    a stop word, a word changed twice or a word beyond the model's token budget; at most
    ``max_words_fraction`` of the visible words; MiniLM cosine similarity to the original >=
    ``min_similarity``, the ``max_candidates`` most similar replacements per word.
    See :class:`WordSubConfig`; ``details`` keys in :meth:`GreedyTextAttack.run`.

    Shape: pixels (B, 3, H, W) in [0, 1] unchanged; texts B strings -> B strings.

    Examples::

        attack = get_attack("word-sub", max_words_fraction=0.2)
        result = attack.run(model, batch)
        result.texts[0], result.info[0]["status"], result.info[0]["details"]["substitutions"]
    """

    name: ClassVar[str] = "word-sub"
    Config: ClassVar[type] = WordSubConfig
    paper: ClassVar[str] = "https://arxiv.org/abs/1907.11932"
    tags_words: ClassVar[bool] = True

    def __init__(self, config=None, **params) -> None:
        super().__init__(config, **params)
        self._tagger = None

    def tagger(self):
        if self.config.pos == "any":
            return None
        if self._tagger is None:
            from robustmm.attacks.text.pos import PosTagger

            self._tagger = PosTagger()
        return self._tagger

    def transformation(self, parts, seed: int = 0):
        return parts.WordNetSynonymSwap(filter_antonyms=self.config.filter_antonyms, tagger=self.tagger(),
                                        multiword=self.config.multiword)


@dataclass(frozen=True)
class WordNetNNConfig(WordSubConfig):
    """Parameters of ``wordnet-nn``: those of ``word-sub`` (:class:`WordSubConfig`, same defaults);
    the pool is wider (:class:`~robustmm.attacks.text.parts.WordNetNeighbourSwap`), so the
    sentence encoder's ranking and ``max_candidates`` decide more often which replacements are tried."""

    def __post_init__(self) -> None:
        _check_common("wordnet-nn", self.max_words_fraction, self.min_similarity, self.similarity_window, self.wir,
                      self.protect)
        _check_word_options("wordnet-nn", self.pos, self.max_candidates)


@register_attack
class WordNetNeighbours(WordSubstitution):
    """Sentence-encoder nearest neighbours over a wide WordNet pool: the offline stand-in for BAE
    (Garg & Ramakrishnan 2020, https://arxiv.org/abs/2004.01970) and BERT-Attack (Li et al. 2020,
    https://arxiv.org/abs/2004.09984), which draw candidates from a masked language model.

    No English masked LM can be installed offline here (see docs/text-attacks.md), so the pool is
    WordNet's: synonyms of the word's senses of its part of speech in the sentence plus one-step
    neighbours that keep the meaning close (similar adjectives, "see also", verb groups,
    hypernyms), ranked in context by the MiniLM sentence encoder, the ``max_candidates`` nearest
    tried (BAE's top-K). Everything else is ``word-sub``'s: the greedy word-importance search, the
    protected words, POS, similarity, word budget and visible-words rules.

    Shape: pixels (B, 3, H, W) in [0, 1] unchanged; texts B strings -> B strings.

    Examples::

        attack = get_attack("wordnet-nn", max_candidates=50)
        result = attack.run(model, batch)
    """

    name: ClassVar[str] = "wordnet-nn"
    Config: ClassVar[type] = WordNetNNConfig
    paper: ClassVar[str] = "https://arxiv.org/abs/2004.01970"

    def transformation(self, parts, seed: int = 0):
        return parts.WordNetNeighbourSwap(filter_antonyms=self.config.filter_antonyms, tagger=self.tagger(),
                                          multiword=self.config.multiword)


@register_attack
class CharSwap(GreedyTextAttack):
    """DeepWordBug-style character edits (Gao et al. 2018, https://arxiv.org/abs/1801.04354).

    Same greedy search as ``word-sub``; candidates of a word are random adjacent swaps,
    substitutions, deletions and insertions of one character, drawn from the example's seed
    (run seed ``batch.seed``, attack key, example id). Protected words are never edited and no
    edit may produce one. Needs no data. See :class:`CharSwapConfig`.

    Shape: pixels (B, 3, H, W) in [0, 1] unchanged; texts B strings -> B strings.

    Examples::

        attack = get_attack("char-swap", max_words_fraction=0.2)
        result = attack.run(model, batch)
    """

    name: ClassVar[str] = "char-swap"
    Config: ClassVar[type] = CharSwapConfig
    paper: ClassVar[str] = "https://arxiv.org/abs/1801.04354"
    seeded: ClassVar[bool] = True

    def transformation(self, parts, seed: int = 0):
        return parts.CharacterEditSwap(per_edit=self.config.edits_per_type, seed=seed)
