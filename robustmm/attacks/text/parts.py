"""TextAttack building blocks of robustmm's text attacks (importing this module imports TextAttack).

Imported only when a text attack is built or run: the import first prepares the offline
NLTK data (:func:`robustmm.attacks.text.resources.import_textattack`). Everything here is a
plain TextAttack component, usable in a stock ``textattack.Attack`` too (the benchmark
does exactly that):

- :class:`WordNetSynonymSwap`: ``WordSwapWordNet`` reading our offline WordNet, restricted to
  the synsets of the word's part of speech in its sentence (spaCy tagger), single words only,
  minus case-only variants and minus WordNet antonyms of the original word;
- :class:`WordNetNeighbourSwap`: the same plus WordNet's one-step neighbours of those senses
  (similar adjectives, verb groups, "see also", hypernyms), a wider pool for ``wordnet-nn``;
- :class:`CharacterEditSwap`: DeepWordBug's four character edits, seeded;
- :class:`ProtectedWords` / :class:`NoProtectedReplacement`: label-bearing words are never
  changed, and never introduced;
- :class:`MiniLMSimilarity`: a ``SentenceEncoder`` constraint on all-MiniLM-L6-v2 cosines that
  keeps only the ``max_candidates`` most similar replacements of a word;
- :class:`ImageBoundModelWrapper`: a ``ModelWrapper`` holding one image fixed.
"""

from __future__ import annotations

import random
import string
import zlib
from functools import lru_cache

import torch

from robustmm.attacks.text.resources import MiniLMEncoder, english_stopwords, import_textattack

textattack = import_textattack()

from nltk.corpus import wordnet  # noqa: E402  (after import_textattack put our data on nltk.data.path)
from textattack.constraints import Constraint, PreTransformationConstraint  # noqa: E402
from textattack.constraints.overlap import MaxWordsPerturbed  # noqa: E402
from textattack.constraints.pre_transformation import RepeatModification, StopwordModification  # noqa: E402
from textattack.constraints.semantics.sentence_encoders import SentenceEncoder  # noqa: E402
from textattack.models.wrappers import ModelWrapper  # noqa: E402
from textattack.shared import AttackedText  # noqa: E402
from textattack.shared.utils import is_one_word  # noqa: E402
from textattack.transformations import WordSwap, WordSwapWordNet  # noqa: E402

__all__ = ["AttackedText", "MaxWordsPerturbed", "RepeatModification", "StopwordModification", "WordNetSynonymSwap",
           "WordNetNeighbourSwap", "CharacterEditSwap", "ProtectedWords", "NoProtectedReplacement",
           "MiniLMSimilarity", "ImageBoundModelWrapper", "candidate_probabilities", "stopword_constraint",
           "shared_encoder", "top_candidates", "wordnet_antonyms"]


def wordnet_antonyms(word: str) -> frozenset[str]:
    """Lower-cased WordNet antonyms of every lemma in every synset of ``word``.

    Broad on purpose: ``color`` has the sense "discolor" *and* the antonym "discolor", so a
    synonym list built from all senses can contain an antonym (TextFooler's known flaw).
    """
    return frozenset(ant.name().lower() for synset in wordnet.synsets(word)
                     for lemma in synset.lemmas() for ant in lemma.antonyms())


class WordNetSynonymSwap(WordSwapWordNet):
    """Swap a word for a WordNet synonym of its part of speech in the sentence, never for an antonym.

    Differs from ``WordSwapWordNet`` in these ways: with a ``tagger``
    (:class:`robustmm.attacks.text.pos.PosTagger`) only the synsets of the word's part of speech in
    its current sentence are read (a noun is never replaced by a verb sense; a word whose tag has no
    WordNet part of speech gets no candidates) and each lemma is inflected like the word ("contains"
    -> "holds", not "hold"; :func:`robustmm.attacks.text.pos.inflect`); hyphenated lemmas ("gray-headed") are dropped unless
    ``multiword`` (lemmas of several words, "red_ink", always are: they would change the word
    count); no ``nltk.download("omw-1.4")`` in the constructor; replacements that differ from the
    word only in case are dropped (the models' tokenizers are uncased: same input); with
    ``filter_antonyms``, WordNet antonyms (over every sense) are removed. Replacement lists are
    sorted and cached per (word, part of speech). Without a tagger and with ``multiword`` it reads
    every sense, as TextAttack's ``WordSwapWordNet`` does.
    """

    def __init__(self, filter_antonyms: bool = True, tagger=None, multiword: bool = False) -> None:
        WordSwap.__init__(self)
        self.language = "eng"
        self.filter_antonyms, self.tagger, self.multiword = filter_antonyms, tagger, multiword
        self._cache: dict[tuple, list[str]] = {}

    def synsets(self, word: str, pos: str | None) -> list:
        """The WordNet senses candidates come from (here: the word's synsets of ``pos``; None = all)."""
        return wordnet.synsets(word, pos=pos)

    def lemmas_of(self, synset) -> list[str]:
        """The lemma names a sense contributes (here: its own)."""
        return synset.lemma_names()

    def replacement_words(self, word: str, pos: str | None = None) -> list[str]:
        """Sorted single-word replacements of ``word`` read as part of speech ``pos`` (n/v/a/r; None = any)."""
        key = (word, pos)
        if key not in self._cache:
            banned = wordnet_antonyms(word) if self.filter_antonyms else frozenset()
            names = {name for synset in self.synsets(word, pos) for name in self.lemmas_of(synset)}
            seen, kept = {word.lower()}, []
            for candidate in sorted(names):
                low = candidate.lower()
                if "_" in candidate or ("-" in candidate and not self.multiword) or not is_one_word(candidate):
                    continue
                if low not in seen and low not in banned:
                    seen.add(low)
                    kept.append(candidate)
            self._cache[key] = kept
        return list(self._cache[key])

    def _get_replacement_words(self, word, random=False):
        return self.replacement_words(word, None)

    def inflected_replacements(self, word: str, pos: str, tag: str) -> list[str]:
        """:meth:`replacement_words` of ``word`` as part of speech ``pos``, each inflected like the word
        (Penn ``tag``: "contains"/VBZ -> "holds", "shapes"/NNS -> "forms"); cached."""
        key = (word, pos, tag)
        if key not in self._cache:
            from robustmm.attacks.text.pos import inflect

            forms = (inflect(lemma, tag) for lemma in self.replacement_words(word, pos))
            self._cache[key] = list(dict.fromkeys(f for f in forms if f and f.lower() != word.lower()))
        return list(self._cache[key])

    def _get_transformations(self, current_text, indices_to_modify):
        words = current_text.words
        if self.tagger is None:
            pos, tags = [None] * len(words), [""] * len(words)
        else:
            pos = self.tagger.wordnet_pos(current_text.text, words)
            tags = self.tagger.fine_tags(current_text.text, words)
        out = []
        for i in indices_to_modify:
            if self.tagger is None:
                replacements = self.replacement_words(words[i], None)
            elif pos[i] is None:
                continue  # pronoun, determiner, number, punctuation ...: no WordNet senses
            else:
                replacements = self.inflected_replacements(words[i], pos[i], tags[i])
            for replacement in replacements:
                out.append(current_text.replace_word_at_index(i, replacement))
        return out

    def extra_repr_keys(self):
        return ["filter_antonyms", "multiword"]


class WordNetNeighbourSwap(WordNetSynonymSwap):
    """:class:`WordNetSynonymSwap` over a wider pool: the lemmas of the word's senses (of its part of
    speech) *and* of their one-step WordNet neighbours that keep the meaning close: similar
    adjectives (``similar_tos``), ``also_sees``, verb groups, and hypernyms (one level up: "triangle"
    -> "polygon", "picture" -> "representation"; never hyponyms or sister terms, which name a
    different thing: "red" -> "blue"). The sentence-encoder constraint then ranks the pool and keeps
    the nearest ``max_candidates`` (:class:`MiniLMSimilarity`)."""

    RELATIONS = ("similar_tos", "also_sees", "verb_groups", "hypernyms")

    def lemmas_of(self, synset) -> list[str]:
        names = list(synset.lemma_names())
        for relation in self.RELATIONS:
            for neighbour in getattr(synset, relation)():
                names += neighbour.lemma_names()
        return names


class ProtectedWords(PreTransformationConstraint):
    """Leave protected words alone: the indices of words ``protection`` holds are not modifiable.

    ``protection``: a :class:`robustmm.attacks.text.protect.Protection` (or any container of words).
    """

    def __init__(self, protection) -> None:
        self.protection = protection

    def _get_modifiable_indices(self, current_text):
        return {i for i, word in enumerate(current_text.words) if word not in self.protection}


class NoProtectedReplacement(Constraint):
    """Refuse a replacement that *is* a protected word ("shape" -> "circle" would change the question)."""

    def __init__(self, protection) -> None:
        super().__init__(compare_against_original=False)
        self.protection = protection

    def _check_constraint(self, transformed_text, reference_text):
        indices = transformed_text.attack_attrs.get("newly_modified_indices", ())
        return not any(transformed_text.words[i] in self.protection for i in indices)


class CharacterEditSwap(WordSwap):
    """DeepWordBug's character edits (Gao et al. 2018, https://arxiv.org/abs/1801.04354).

    For a word, ``per_edit`` random variants of each of the four edits: swap two adjacent
    characters, substitute one, delete one, insert one (letters a-z). Randomness comes
    from ``seed`` (the attack passes each example's seed from :mod:`robustmm.seeding`) and the
    word itself, so within an example a word always gets the same variants (cacheable,
    reproducible) without touching the global RNG. Words shorter than 2 letters are kept.
    """

    EDITS = ("swap", "substitute", "delete", "insert")

    def __init__(self, per_edit: int = 1, seed: int = 0, letters: str = string.ascii_lowercase) -> None:
        super().__init__(letters_to_insert=letters)
        self.per_edit, self.seed = per_edit, seed

    @staticmethod
    def _variants(word: str, edit: str, letters: str) -> list[str]:
        n = len(word)
        if edit == "swap":
            return [word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(n - 1) if word[i] != word[i + 1]]
        if edit == "substitute":
            return [word[:i] + c + word[i + 1:] for i in range(n) for c in letters if c != word[i]]
        if edit == "delete":
            return [word[:i] + word[i + 1:] for i in range(n)]
        return [word[:i] + c + word[i:] for i in range(n + 1) for c in letters]

    def _get_replacement_words(self, word):
        if len(word) < 2:
            return []
        rng = random.Random(zlib.crc32(f"{self.seed}:{word}".encode()))
        out: list[str] = []
        for edit in self.EDITS:
            options = sorted(set(self._variants(word, edit, self.letters_to_insert)) - {word} - set(out))
            out += rng.sample(options, min(self.per_edit, len(options)))
        return out

    def extra_repr_keys(self):
        return ["per_edit", "seed"]


@lru_cache(maxsize=2)
def shared_encoder(device: str = "cpu") -> MiniLMEncoder:
    """One MiniLM encoder per device for the whole process (loading takes about a second)."""
    return MiniLMEncoder(device)


class MiniLMSimilarity(SentenceEncoder):
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (offline), as a TextAttack constraint.

    TextAttack semantics: the candidate's ``window_size``-word window around the newly
    modified word is compared with the same window of the reference text. Of the candidates
    that reach ``threshold``, only the ``max_candidates`` most similar are kept (0 = all; ties
    by text): the sentence encoder ranks the replacements of a word in context, so the senses
    tried are the contextual ones (TextFooler's and BAE's top-K).
    """

    def __init__(self, threshold: float = 0.84, window_size: int | None = 15, compare_against_original: bool = True,
                 device: str = "cpu", max_candidates: int = 0) -> None:
        super().__init__(threshold=threshold, metric="cosine", compare_against_original=compare_against_original,
                         window_size=window_size, skip_text_shorter_than_window=False)
        self.encoder = shared_encoder(device)
        self.max_candidates = max_candidates

    def encode(self, sentences):
        return self.encoder.encode(list(sentences))

    def _check_constraint_many(self, transformed_texts, reference_text):
        kept = list(super()._check_constraint_many(transformed_texts, reference_text))
        return top_candidates(kept, [t.attack_attrs["similarity_score"] for t in kept], self.max_candidates)

    def extra_repr_keys(self):
        return super().extra_repr_keys() + ["max_candidates"]


def top_candidates(texts: list, similarities: list[float], limit: int) -> list:
    """The ``limit`` texts of highest similarity (all when ``limit`` is 0), ties by text, in the given order."""
    if not limit or len(texts) <= limit:
        return list(texts)
    ranked = sorted(range(len(texts)), key=lambda i: (-similarities[i], texts[i].text))[:limit]
    return [texts[i] for i in sorted(ranked)]


def stopword_constraint() -> StopwordModification:
    """TextAttack's ``StopwordModification`` with NLTK's English list as shipped by robustmm."""
    return StopwordModification(stopwords=english_stopwords())


def candidate_probabilities(model, pixels: torch.Tensor, texts) -> torch.Tensor:
    """Softmax over ``model.candidate_scores``: (B, C) float64 probabilities and (B, C) float32 log-likelihoods.

    ``pixels`` (B, 3, H, W) in [0, 1], one row per text. Float64 so that rows sum to 1
    within TextAttack's 1e-6 check (in float32 it would softmax the probabilities again).
    """
    with torch.no_grad():
        scores = model.candidate_scores(pixels, list(texts)).float().cpu()
    return scores.double().softmax(dim=1), scores


class ImageBoundModelWrapper(ModelWrapper):
    """A TextAttack ``ModelWrapper`` around a VLModel with one image held fixed.

    ``wrapper(texts)`` -> (N, C) candidate probabilities of ``model`` for the image
    ``pixels`` ((1, 3, H, W) or (3, H, W), in [0, 1]) paired with each text.
    """

    def __init__(self, model, pixels: torch.Tensor) -> None:
        self.model = model
        self.pixels = (pixels if pixels.dim() == 4 else pixels.unsqueeze(0)).to(model.device)

    def __call__(self, text_input_list, **kwargs):
        pixels = self.pixels.expand(len(text_input_list), -1, -1, -1)
        return candidate_probabilities(self.model, pixels, text_input_list)[0]
