"""Protected words: the words a label-keeping text attack must never substitute.

A text adversarial example only counts if a person would still give the original answer, so
the words the answer depends on stay as they are:

- ``answers`` (``protect_answers``): for VQA every word of every candidate answer and of the
  example's gold answers, with their inflections ("circle" also protects "circles"); for
  visual entailment the hypothesis words that name what the image must verify: colours,
  shapes, numbers and objects (below). Computed from the data.
- ``negations`` ("no", "not", "never", "isn't", ...) and ``quantifiers`` ("all", "some",
  "both", "several", ...): closed lists below; ``numbers``: words spaCy's English lexical
  rules read as numbers ("two", "10", "first", "hundred").
- ``colors``: words with a WordNet noun sense under ``color.n.01`` (red, gray, teal, white,
  ...); ``shapes``: words WordNet reads mainly as nouns whose first noun sense is filed under
  ``noun.shape`` (circle, triangle, square, ...); ``objects``: the same with a first noun sense
  that is a physical thing (``noun.artifact``, ``noun.person``, ``noun.animal``, ... see
  :data:`OBJECT_LEXNAMES`: picture, child, dog, guitar; not "small" or "drew").

A word is protected when its lower-cased form or any of its WordNet base forms ("circles" ->
"circle", "drew" -> "draw") is in the example's protected set, or when it belongs to one of
the protected classes. Every test is per word, so an example's protection does not depend
on which other examples share its batch. :func:`protected_words` lists a dataset's protected
vocabulary (the runner prints it in the run metadata and passes it as ``AttackBatch.protected``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

from robustmm.errors import RobustMMError

#: Named protection lists a preset may give in ``protect = [...]``.
LISTS = ("answers", "negations", "quantifiers", "numbers", "colors", "shapes", "objects")
#: What ``answers`` means for visual entailment: the classes that name what the image must verify.
VE_ANSWER_CLASSES = ("colors", "shapes", "numbers", "objects")
#: The default lists besides the answers (``protect_answers``).
DEFAULT_LISTS = ("negations", "quantifiers", "numbers")

NEGATIONS = frozenset({
    "no", "not", "n't", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without", "cannot",
    "nope", "noone",
})
QUANTIFIERS = frozenset({
    "all", "every", "each", "some", "any", "both", "either", "few", "fewer", "many", "much", "more", "most",
    "less", "least", "several", "only", "lot", "lots", "single", "multiple", "numerous", "various", "couple",
    "enough", "plenty", "whole", "half", "another", "other", "others", "alone", "sole", "solely", "entire",
    "everything", "everyone", "everybody", "anything", "anyone", "something", "someone", "somebody",
})
#: First-sense WordNet noun files that name physical things (the "objects" an image can show).
OBJECT_LEXNAMES = frozenset({
    "noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.object", "noun.person", "noun.plant",
    "noun.substance", "noun.shape",
})

_WORD = re.compile(r"[\w'\-]+")


def check_lists(names: Iterable[str], attack: str) -> None:
    """RobustMMError (one sentence) unless every name is a known protection list."""
    for name in names:
        if name not in LISTS:
            raise RobustMMError(f"{attack} protect names an unknown protection list {name!r}: "
                                f"choose from {', '.join(LISTS)}.")


def split_words(text: str) -> list[str]:
    """Lower-cased words of a text or answer (letters, digits, apostrophes and hyphens)."""
    return [w.strip("'-") for w in _WORD.findall(text.lower()) if w.strip("'-")]


def load_wordnet():
    """NLTK's WordNet reader over robustmm's offline copy (prepared on first use)."""
    from robustmm.attacks.text.resources import prepare_text_resources

    prepare_text_resources()
    from nltk.corpus import wordnet

    return wordnet


@lru_cache(maxsize=None)
def base_forms(word: str) -> frozenset[str]:
    """The word and its WordNet base forms over the four parts of speech ("circles" -> circle)."""
    wordnet = load_wordnet()
    forms = {word}
    for pos in ("n", "v", "a", "r"):
        forms |= {base.lower() for base in wordnet._morphy(word, pos, check_exceptions=True)}  # all, not just the first
    return frozenset(forms)


def _double_final(word: str) -> bool:
    """Short consonant-vowel-consonant words double their last letter before -ed/-ing/-er (red -> redder)."""
    vowels = "aeiou"
    return (len(word) >= 3 and word[-1] not in vowels + "wxy" and word[-2] in vowels and word[-3] not in vowels
            and sum(c in vowels for c in word) == 1)


@lru_cache(maxsize=None)
def inflections(word: str) -> frozenset[str]:
    """English inflections of ``word`` for each part of speech WordNet has it as (plural, -s, -ed, -ing,
    comparative, superlative; regular spelling rules), kept when WordNet reads them back as ``word``:
    circle -> circles, circled, circling; red -> reds, redder, reddest."""
    wordnet = load_wordnet()
    if not word.isalpha() or len(word) < 2:
        return frozenset()
    sibilant = word.endswith(("s", "x", "z", "ch", "sh"))
    consonant_y = word.endswith("y") and word[-2] not in "aeiou"
    plural = word + "es" if sibilant else word[:-1] + "ies" if consonant_y else word + "s"
    stem = word + word[-1] if _double_final(word) else word
    out = set()
    if wordnet.synsets(word, "n"):
        out.add(plural)
    if wordnet.synsets(word, "v"):
        out.add(plural)
        out.add(word + "d" if word.endswith("e") else word[:-1] + "ied" if consonant_y else stem + "ed")
        out.add(word[:-1] + "ing" if word.endswith("e") and not word.endswith("ee") else stem + "ing")
    if wordnet.synsets(word, "a"):
        base = word[:-1] + "i" if consonant_y else word[:-1] if word.endswith("e") else stem
        out |= {base + "er", base + "est"}
    return frozenset(w for w in out if word in base_forms(w) and w != word)


def _mostly_a_noun(wordnet, word: str) -> bool:
    """Whether WordNet reads ``word`` mainly as a noun: its noun senses' tagged-corpus counts (then, on a
    tie, its number of senses) are at least those of each other part of speech ("small", "drew" are not)."""
    forms = base_forms(word)
    score = {}
    for pos in ("n", "v", "a", "r"):
        synsets = wordnet.synsets(word, pos)
        score[pos] = (sum(l.count() for s in synsets for l in s.lemmas() if l.name().lower() in forms), len(synsets))
    return score["n"][1] > 0 and all(score["n"] >= score[p] for p in ("v", "a", "r"))


@lru_cache(maxsize=None)
def word_classes(word: str) -> frozenset[str]:
    """Which of the lists negations / quantifiers / numbers / colors / shapes / objects ``word`` (lower case)
    is in. Stop words ("is", "at") are never colours, shapes or objects (their rare noun senses: iodine, astatine)."""
    from spacy.lang.en.lex_attrs import like_num

    from robustmm.attacks.text.resources import english_stopwords

    classes = set()
    if word in NEGATIONS or word.endswith("n't"):
        classes.add("negations")
    if word in QUANTIFIERS:
        classes.add("quantifiers")
    if like_num(word):
        classes.add("numbers")
    if word in english_stopwords():
        return frozenset(classes)
    wordnet = load_wordnet()
    nouns = wordnet.synsets(word, "n")
    if nouns:
        color = wordnet.synset("color.n.01")
        if any(color in s.closure(lambda x: x.hypernyms()) for s in nouns):
            classes.add("colors")
        if _mostly_a_noun(wordnet, word):
            forms = base_forms(word)
            main = max(nouns, key=lambda s: sum(l.count() for l in s.lemmas() if l.name().lower() in forms))  # first on ties
            if main.lexname() == "noun.shape":
                classes.add("shapes")
            if main.lexname() in OBJECT_LEXNAMES:
                classes.add("objects")
    return frozenset(classes)


class Protection:
    """Decides which words of one example are protected.

    ``words``: protected words (lower case; inflections match through their base forms);
    ``classes``: protected lists tested per word (:func:`word_classes`).
    """

    def __init__(self, words: Iterable[str] = (), classes: Iterable[str] = ()) -> None:
        self.words = frozenset(w.lower() for w in words)
        self.classes = frozenset(classes)
        self.key = (self.words, self.classes)  # equal protections share caches

    def reason(self, word: str) -> str | None:
        """Why ``word`` is protected ("answer word" or a list name), or None when it may change."""
        low = word.lower()
        if not low:
            return None
        if self.words and (low in self.words or not base_forms(low).isdisjoint(self.words)):
            return "answer word"
        if self.classes:
            hit = sorted(self.classes & word_classes(low))
            if hit:
                return hit[0]
        return None

    def __contains__(self, word: str) -> bool:
        return self.reason(word) is not None


def example_protection(task: str, answers: Iterable[str], candidates: Iterable[str], dataset_words: Iterable[str],
                       protect: Iterable[str], protect_answers: bool, extra_words: Iterable[str]) -> Protection:
    """The protection of one example: ``task`` "vqa"/"ve", its gold ``answers``, the model's
    ``candidates``, the dataset's protected vocabulary (``AttackBatch.protected``), the named lists
    ``protect``, and the preset's literal ``extra_words``."""
    words = set(dataset_words) | {w for text in extra_words for w in split_words(text)}
    classes = set(protect) - {"answers"}
    if protect_answers or "answers" in set(protect):
        if task == "vqa":
            words |= {w for text in (*answers, *candidates) for w in split_words(text)}
        else:
            classes |= set(VE_ANSWER_CLASSES)
    return Protection(words, classes)


def protected_words(dataset, protect: Iterable[str] = DEFAULT_LISTS, protect_answers: bool = True,
                    words: Iterable[str] = ()) -> frozenset[str]:
    """The protected vocabulary of a :class:`robustmm.data.dataset.Dataset`, sorted into a frozenset.

    VQA: every word of every candidate answer and of every example's gold answers, with their
    inflections; VE: the words of its hypotheses that name colours, shapes, numbers or objects.
    Plus the words of its texts in the named lists ``protect`` and the literal ``words``.
    Deterministic; ~1 s for easy-VQA's 9,673 test questions.
    """
    protect = tuple(protect)
    check_lists(protect, "protected_words")
    task = getattr(dataset.task, "value", dataset.task)
    answers = {a for e in dataset.examples for a in e.answers} if task == "vqa" else set()
    protection = example_protection(task, answers, dataset.candidates if task == "vqa" else (), (), protect,
                                    protect_answers, words)
    vocabulary = {w for e in dataset.examples for w in split_words(e.text)}
    out = set(protection.words)
    for word in protection.words:
        out |= inflections(word)
    out |= {w for w in vocabulary if w in protection}
    return frozenset(out)
