"""TextAttack building blocks of robustmm's text attacks (importing this module imports TextAttack).

Imported only when a text attack is built or run: the import first prepares the offline
NLTK data (:func:`robustmm.attacks.text.resources.import_textattack`). Everything here is a
plain TextAttack component, usable in a stock ``textattack.Attack`` too (the benchmark
does exactly that):

- :class:`WordNetSynonymSwap`: ``WordSwapWordNet`` reading our offline WordNet, minus
  case-only variants and minus WordNet antonyms of the original word;
- :class:`CharacterEditSwap`: DeepWordBug's four character edits, seeded;
- :class:`MiniLMSimilarity`: a ``SentenceEncoder`` constraint on all-MiniLM-L6-v2 cosines;
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
from textattack.constraints.overlap import MaxWordsPerturbed  # noqa: E402
from textattack.constraints.pre_transformation import RepeatModification, StopwordModification  # noqa: E402
from textattack.constraints.semantics.sentence_encoders import SentenceEncoder  # noqa: E402
from textattack.models.wrappers import ModelWrapper  # noqa: E402
from textattack.shared import AttackedText  # noqa: E402
from textattack.transformations import WordSwap, WordSwapWordNet  # noqa: E402

__all__ = ["AttackedText", "MaxWordsPerturbed", "RepeatModification", "StopwordModification", "WordNetSynonymSwap",
           "CharacterEditSwap", "MiniLMSimilarity", "ImageBoundModelWrapper", "candidate_probabilities",
           "stopword_constraint", "shared_encoder", "wordnet_antonyms"]


def wordnet_antonyms(word: str) -> frozenset[str]:
    """Lower-cased WordNet antonyms of every lemma in every synset of ``word``.

    Broad on purpose: ``color`` has the sense "discolor" *and* the antonym "discolor", so a
    synonym list built from all senses can contain an antonym (TextFooler's known flaw).
    """
    return frozenset(ant.name().lower() for synset in wordnet.synsets(word)
                     for lemma in synset.lemmas() for ant in lemma.antonyms())


class WordNetSynonymSwap(WordSwapWordNet):
    """Swap a word for a WordNet synonym (single words only), never for one of its antonyms.

    Differs from ``WordSwapWordNet`` in three ways: no ``nltk.download("omw-1.4")`` in the
    constructor (English WordNet needs no OMW data), replacements that differ from the
    word only in case are dropped (the models' tokenizers are uncased: same input), and,
    with ``filter_antonyms``, WordNet antonyms are removed. Replacement lists are sorted
    and cached per word.
    """

    def __init__(self, filter_antonyms: bool = True) -> None:
        WordSwap.__init__(self)
        self.language = "eng"
        self.filter_antonyms = filter_antonyms
        self._cache: dict[str, list[str]] = {}

    def _get_replacement_words(self, word, random=False):
        if word not in self._cache:
            banned = wordnet_antonyms(word) if self.filter_antonyms else frozenset()
            seen, kept = {word.lower()}, []
            for candidate in sorted(super()._get_replacement_words(word)):
                low = candidate.lower()
                if low not in seen and low not in banned:
                    seen.add(low)
                    kept.append(candidate)
            self._cache[word] = kept
        return list(self._cache[word])

    def extra_repr_keys(self):
        return ["filter_antonyms"]


class CharacterEditSwap(WordSwap):
    """DeepWordBug's character edits (Gao et al. 2018, https://arxiv.org/abs/1801.04354).

    For a word, ``per_edit`` random variants of each of the four edits: swap two adjacent
    characters, substitute one, delete one, insert one (letters a-z). Randomness comes
    from ``seed`` and the word itself, so a word always gets the same variants (cacheable,
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
    modified word is compared with the same window of the reference text.
    """

    def __init__(self, threshold: float = 0.84, window_size: int | None = 15, compare_against_original: bool = True,
                 device: str = "cpu") -> None:
        super().__init__(threshold=threshold, metric="cosine", compare_against_original=compare_against_original,
                         window_size=window_size, skip_text_shorter_than_window=False)
        self.encoder = shared_encoder(device)

    def encode(self, sentences):
        return self.encoder.encode(list(sentences))


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
