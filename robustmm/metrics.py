"""Pure metric functions: the official VQA accuracy, per-example answer scores, the one definition
of a correct answer, accuracy, attack success rate and relative drop.

Nothing here touches files or models; the runner and the reporter call these on records.
Statistical tests and intervals are in :mod:`robustmm.statistics`.
"""

from __future__ import annotations

import re
from typing import Sequence

from robustmm.statistics import mean

# ---------------------------------------------------------------------------
# Official VQA accuracy (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit
# a013f0043c1e2cdc995922dfe257f7149aa9af06, 2021-03-11, "Fixed processing answers bug")
# ---------------------------------------------------------------------------

# The official contraction table, entry for entry (straight apostrophes since the 2016-10-08 commit).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = ("a", "an", "the")
# Official pattern, bug included: "(?!<=\d)" is a negative *lookahead* for the text "<=d",
# not a lookbehind, so a period is stripped unless a digit follows it.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# The official ``punct`` list, in its order (no ":" and no "'": "10:30" and "can't" keep them).
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def _process_punctuation(text: str) -> str:
    """Official ``processPunctuation``: each mark is deleted if it touches a space in the
    *original* text (or the text has a digit,digit comma anywhere), else replaced by a space;
    then periods not followed by a digit are removed, at most 32 of them (the official code
    passes ``re.UNICODE`` == 32 as the ``count`` argument of ``re.sub``)."""
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for mark in _PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def _process_digit_article(text: str) -> str:
    """Official ``processDigitArticle``: lower-case, number words -> digits, drop articles,
    expand the contraction table, re-join on single spaces."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def _strip(text: str) -> str:
    """The official first step on every answer: newlines and tabs -> spaces, then outer whitespace stripped."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The official full normalisation (strip, processPunctuation, processDigitArticle), which the 2021
    evaluation applies to the prediction and the human answers *only when those answers are not
    unanimous*; :func:`vqa_accuracy` decides when."""
    return _process_digit_article(_process_punctuation(_strip(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one predicted answer against the human answers, in [0, 1].

    Equal to ``VQAEval.evaluate`` of GT-Vision-Lab/VQA at commit a013f00 (2021-03-11, "Fixed
    processing answers bug"; the evaluation every VQA v2 server result since uses), quirks included:

    - Every human answer and the prediction: newlines/tabs -> spaces, outer whitespace stripped.
    - Only when the stripped human answers are **not all the same string**: processPunctuation and
      processDigitArticle (lower-case, number words -> digits, articles dropped, contractions
      expanded) are applied to the prediction *and* to every human answer. With unanimous answers
      nothing else is done: unanimous "two" against "2" scores 0, unanimous "2" against "two" too,
      and unanimous "yes" against "Yes" scores 0.
    - The score is the mean over the leave-one-out subsets (one per human answer) of
      ``min(1, #matches among the other answers / 3)``; with 10 answers a prediction matching m of
      them scores 0.0, 0.3, 0.6, 0.9 for m = 0..3 and 1.0 for m >= 4.
    - processPunctuation keeps the official ``re.UNICODE``-as-count bug (at most 32 periods removed),
      the broken period look-behind, and judges "touches a space" on the un-stripped-of-punctuation text.

    Test vectors (``tests/data/vqa_official_vectors.json``) were produced by running that official code.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    humans = [_strip(answer) for answer in answers]
    predicted = _strip(prediction)
    if len(set(humans)) > 1:
        humans = [_process_digit_article(_process_punctuation(answer)) for answer in humans]
        predicted = _process_digit_article(_process_punctuation(predicted))
    total = 0.0
    for left_out in range(len(humans)):
        matches = sum(1 for j, answer in enumerate(humans) if j != left_out and answer == predicted)
        total += min(1.0, matches / 3.0)
    return total / len(humans)


# One definition of "correct" for every task, used by the runner (attack success), the statistics and
# the report alike: a per-example score (official VQA accuracy, exact match) of at least 0.5. For VQA v2's
# ten answers that is "at least two annotators gave this answer" (scores 0.6, 0.9, 1.0); for one gold
# answer (easy-VQA) and visual entailment it is exact match. The report also shows mean scores.
CORRECT_THRESHOLD = 0.5


def is_correct(score: float) -> bool:
    """Whether a per-example score in [0, 1] counts as a correct answer (``score >= CORRECT_THRESHOLD``)."""
    return score >= CORRECT_THRESHOLD


def exact_match(prediction: str, label: str) -> float:
    """1.0 when the prediction equals the label after strip/lower-case, else 0.0 (SNLI-VE accuracy)."""
    return float(prediction.strip().lower() == label.strip().lower())


def answer_score(prediction: str, answers: Sequence[str], task: str) -> float:
    """Per-example score in [0, 1].

    - VQA with several human answers (VQA v2 has 10): the official ``vqa_accuracy``.
    - VQA with a single gold answer (easy-VQA): the official leave-one-out rule would score
      every prediction 0, so the score is exact match after the official strip (one answer is
      unanimous, so, as in the official rule, nothing else is normalised).
    - Visual entailment: exact match of the label.
    """
    if str(getattr(task, "value", task)) == "vqa":
        if len(answers) >= 2:
            return vqa_accuracy(prediction, answers)
        return float(_strip(prediction) == _strip(answers[0]))
    return exact_match(prediction, answers[0])


# ---------------------------------------------------------------------------
# Robustness building blocks (over per-example scores in [0, 1])
# ---------------------------------------------------------------------------


def accuracy(scores: Sequence[float]) -> float:
    """Share of examples answered correctly (:func:`is_correct`); NaN for none."""
    return mean([float(is_correct(s)) for s in scores])


def attack_success_rate(clean_correct: Sequence[bool], adversarial_correct: Sequence[bool]) -> float:
    """Share of the examples the model got right clean that the attack made it get wrong; NaN if none right."""
    flipped = [not adv for clean, adv in zip(clean_correct, adversarial_correct, strict=True) if clean]
    return mean([float(f) for f in flipped])


def relative_drop(clean: float, robust: float) -> float:
    """(clean - robust) / clean; NaN when clean accuracy is 0."""
    return (clean - robust) / clean if clean else float("nan")
