"""Text attacks (``word-sub``, ``char-swap``) and their offline resources.

Fast and offline: the tiny random model from conftest, easy-VQA questions, WordNet copied
from the Debian package into the session's ROBUSTMM_HOME. TextAttack is imported once
(~10 s). The last test needs the shipped finetuned easy-VQA model and skips without it.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch

from conftest import build_tiny_model
from robustmm.attacks import AttackBatch, get_attack, list_attacks, parse_attack_spec
from robustmm.errors import RobustMMError
from robustmm.paths import package_root
from robustmm.attacks.text.resources import INSTALL_HINT, LEXNAMES, english_stopwords, stopwords_file

DEFAULT_FINETUNE = package_root() / "checkpoints" / "default" / "easy-vqa" / "finetune"
STATUSES = {"succeeded", "failed", "skipped"}
INFO_KEYS = {"original", "perturbed", "status", "words_changed", "words_total", "changed_fraction", "queries",
             "similarity", "substitutions", "unknown_substitutions", "seconds", "details"}
DETAIL_KEYS = {"substitutions", "protected_indices", "protected_edits", "out_of_reach", "words_in_reach", "queries",
               "unknown_substitutions"}


# ---------------------------------------------------------------------------
# resources and imports
# ---------------------------------------------------------------------------


def test_importing_attacks_does_not_import_textattack():
    code = ("import sys, robustmm.attacks as a; names = a.list_attacks('text'); "
            "assert 'word-sub' in names and 'char-swap' in names, names; "
            "assert 'textattack' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.fixture
def private_nltk(monkeypatch, tmp_path):
    """A fresh ROBUSTMM_HOME and a private copy of ``nltk.data.path`` for one test."""
    import nltk

    monkeypatch.setenv("ROBUSTMM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ROBUSTMM_WORDNET_DIR", raising=False)
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    return tmp_path / "home" / "nltk_data"


def test_missing_wordnet_gives_the_install_sentence(private_nltk, monkeypatch, tmp_path):
    import nltk

    from robustmm.attacks.text import resources as text_resources

    def no_download(*args, **kwargs):
        raise AssertionError("nltk.download must never be called")

    monkeypatch.setattr(nltk, "download", no_download)
    monkeypatch.setattr(text_resources, "WORDNET_SOURCE", tmp_path / "no-wordnet")
    with pytest.raises(RobustMMError) as err:
        text_resources.prepare_text_resources()
    message = str(err.value)
    assert message.endswith(f"run '{INSTALL_HINT}'.") and "\n" not in message
    assert not (private_nltk / "corpora" / "wordnet").exists()  # nothing half-copied left behind


def test_prepare_copies_wordnet_and_is_idempotent(private_nltk):
    import nltk

    from robustmm.attacks.text.resources import prepare_text_resources

    assert prepare_text_resources() == private_nltk
    wordnet = private_nltk / "corpora" / "wordnet"
    assert not any(p.is_symlink() for p in wordnet.iterdir())
    lexnames = (wordnet / "lexnames").read_text().splitlines()
    assert len(lexnames) == len(LEXNAMES) == 45
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[3] == "03\tnoun.Tops\t1" and lexnames[44] == "44\tadj.ppl\t3"
    assert (private_nltk / "corpora" / "stopwords" / "english").read_text() == stopwords_file().read_text()
    assert len(english_stopwords()) == 179 and {"not", "no", "the", "is"} <= english_stopwords()
    assert nltk.data.path[0] == str(private_nltk)
    start = time.perf_counter()
    prepare_text_resources()
    assert time.perf_counter() - start < 0.5


def test_wordnet_swap_drops_antonyms_and_case_variants():
    from robustmm.attacks.text.parts import WordNetSynonymSwap, wordnet_antonyms

    swap = WordNetSynonymSwap()
    color = swap._get_replacement_words("color")
    assert "colour" in color and "discolor" not in color and "discolor" in wordnet_antonyms("color")
    assert "discolor" in WordNetSynonymSwap(filter_antonyms=False)._get_replacement_words("color")
    assert "queen" not in swap._get_replacement_words("king")
    assert all(w.lower() != "black" for w in swap._get_replacement_words("black"))


def test_minilm_batches_do_not_change_embeddings():
    """Sorting by token count and padding per batch gives each text the embedding it gets alone."""
    from robustmm.attacks.text.parts import shared_encoder

    encoder = shared_encoder("cpu")
    texts = ["what color is the shape?", "is there a red circle in the image?", "shape", "what shape is present?",
             "does the picture contain a blue rectangle or a green triangle?"] * 3 + ["what color is the shape?"]
    together = encoder.encode(texts)
    alone = torch.cat([encoder.encode([t]) for t in texts])
    assert together.shape == (len(texts), 384) and encoder.encode([]).shape == (0, 384)
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(len(texts)), atol=1e-5)


def test_config_errors_are_one_sentence():
    for spec in ("word-sub:max_words_fraction=0", "word-sub:min_similarity=2", "word-sub:wir=gradient",
                 "char-swap:edits_per_type=0", "word-sub:threshold=0.9", "word-sub:pos=strict",
                 "word-sub:protect=colours", "char-swap:protect=answers+bogus", "wordnet-nn:max_candidates=-1",
                 "char-swap:seed=0"):
        with pytest.raises(RobustMMError) as err:
            parse_attack_spec(spec)
        assert "\n" not in str(err.value) and str(err.value).endswith(".")
    assert parse_attack_spec("word-sub:min_similarity=0.9").config.min_similarity == 0.9
    assert {"word-sub", "char-swap"} <= set(list_attacks("text"))


def test_presets_load():
    from robustmm.attacks.presets import load_preset

    assert [a.name for a in load_preset("word-sub")] == ["word-sub"]
    assert [a.name for a in load_preset("char-swap")] == ["char-swap"]
    assert [a.name for a in load_preset("wordnet-nn")] == ["wordnet-nn"]
    assert load_preset("word-sub")[0].config == get_attack("word-sub").config  # the preset spells out the defaults


def test_preset_naming_an_unknown_protection_list_is_one_sentence(tmp_path):
    from robustmm.attacks.presets import load_preset

    for table in ('protect = ["answers", "colours"]', 'pos = "strict"'):
        path = tmp_path / "bad.toml"
        path.write_text(f'[[attack]]\nname = "word-sub"\n{table}\n')
        with pytest.raises(RobustMMError) as err:
            load_preset(path)
        message = str(err.value)
        assert "\n" not in message and ("colours" in message or "strict" in message)


# ---------------------------------------------------------------------------
# the attacks on the tiny random model
# ---------------------------------------------------------------------------


def easy_vqa_batch(model, n: int, wrong: tuple[int, ...] = ()) -> AttackBatch:
    """``n`` easy-VQA test examples with distinct questions; targets = the model's own predictions
    (so none is skipped), except the indices in ``wrong``, whose target is another candidate."""
    from robustmm.data import load_dataset, to_tensor

    seen, examples = set(), []
    for example in load_dataset("easy-vqa", split="test").examples:
        if example.text not in seen:
            seen.add(example.text)
            examples.append(example)
        if len(examples) == n:
            break
    pixels = to_tensor([e.image for e in examples], model.image_size)
    texts = [e.text for e in examples]
    with torch.no_grad():
        targets = model.candidate_scores(pixels, texts).argmax(1)
    for i in wrong:
        targets[i] = (targets[i] + 1) % len(model.candidates)
    return AttackBatch(examples, pixels, texts, targets)


@pytest.fixture(scope="module")
def tiny_runs():
    """word-sub and char-swap once each on 12 questions (example 0 has a wrong target)."""
    model = build_tiny_model("vqa")
    batch = easy_vqa_batch(model, 12, wrong=(0,))
    before = batch.pixels.clone()
    runs = {name: get_attack(name).run(model, batch) for name in ("word-sub", "char-swap")}
    return model, batch, before, runs


def _words(text: str) -> list[str]:
    from textattack.shared import AttackedText

    return AttackedText(text).words


@pytest.mark.parametrize("name", ["word-sub", "char-swap"])
def test_result_shape_image_fixed_and_skipped(tiny_runs, name):
    model, batch, before, runs = tiny_runs
    result = runs[name]
    assert torch.equal(batch.pixels, before)  # input untouched
    assert result.pixels.dtype == before.dtype and torch.equal(result.pixels, before)  # bit-identical
    assert result.scores.shape == (len(batch), len(model.candidates)) and len(result.texts) == len(batch)
    for row in result.info:
        assert INFO_KEYS <= set(row) and row["status"] in STATUSES and DETAIL_KEYS <= set(row["details"])
        assert 0 <= row["unknown_substitutions"] <= row["words_changed"] and row["details"]["protected_edits"] == 0
        assert [[old, new] for _, old, new in row["details"]["substitutions"]] == row["substitutions"]
    skipped = result.info[0]
    assert skipped["status"] == "skipped" and result.texts[0] == batch.texts[0] and skipped["words_changed"] == 0
    assert skipped["details"]["skipped_reason"] == "clean prediction wrong"
    assert all(row["status"] != "skipped" or row["details"]["skipped_reason"].startswith("only")
               for row in result.info[1:])
    assert any(row["words_changed"] > 0 for row in result.info)  # the checks below are not vacuous
    # The returned scores are the model's scores on the returned texts.
    with torch.no_grad():
        again = model.candidate_scores(result.pixels, result.texts)
    assert torch.allclose(again, result.scores, atol=1e-4)
    for row, scores, target in zip(result.info, result.scores, batch.targets):
        if row["status"] == "succeeded":
            assert int(scores.argmax()) != int(target)


def test_word_sub_batched_equals_one_at_a_time():
    """Lock-step search and the shared caches (questions repeated on other images) change no decision."""
    model = build_tiny_model("vqa")
    base = easy_vqa_batch(model, 3)
    pixels = torch.cat([base.pixels, base.pixels.flip(0)])  # each question again, on another image
    texts = base.texts * 2
    examples = list(base.examples) * 2
    with torch.no_grad():
        targets = model.candidate_scores(pixels, texts).argmax(1)
    batched = get_attack("word-sub").run(model, AttackBatch(examples, pixels, texts, targets))
    assert any(row["words_changed"] for row in batched.info)  # not vacuous
    for i in range(len(texts)):
        alone = get_attack("word-sub").run(model, AttackBatch(examples[i:i + 1], pixels[i:i + 1], texts[i:i + 1],
                                                              targets[i:i + 1]))
        assert alone.texts == batched.texts[i:i + 1] and alone.info[0]["status"] == batched.info[i]["status"]


def _changed(original: str, perturbed: str) -> list[tuple[int, str, str]]:
    old, new = _words(original), _words(perturbed)
    assert len(old) == len(new)
    return [(i, a, b) for i, (a, b) in enumerate(zip(old, new)) if a != b]


def test_word_sub_changes_only_allowed_words(tiny_runs):
    from robustmm.attacks.text.parts import WordNetSynonymSwap, wordnet_antonyms
    from robustmm.attacks.text.protect import base_forms

    _, batch, _, runs = tiny_runs
    config, stop, synonyms = get_attack("word-sub").config, english_stopwords(), WordNetSynonymSwap(filter_antonyms=False)
    for text, adv, row in zip(batch.texts, runs["word-sub"].texts, runs["word-sub"].info):
        changed = _changed(text, adv)
        words = _words(text)
        assert row["words_changed"] == len(changed) and row["words_total"] == len(words)
        assert len(changed) <= math.ceil(config.max_words_fraction * len(words))
        for _, old, new in changed:
            assert old not in stop
            allowed = set(synonyms._get_replacement_words(old))
            assert new in allowed or base_forms(new.lower()) & allowed  # a WordNet synonym (inflected like old) ...
            assert new.lower() not in wordnet_antonyms(old)  # ... and never an antonym
        if changed:
            assert row["similarity"] >= config.min_similarity
            assert row["substitutions"] == [[old, new] for _, old, new in changed]


def _one_edit(a: str, b: str) -> bool:
    """b is a with two adjacent characters swapped, or one substituted, deleted or inserted."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return len(long_) == len(short) + 1 and any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def test_char_swap_makes_one_edit_per_word(tiny_runs):
    _, batch, _, runs = tiny_runs
    fraction, stop = get_attack("char-swap").config.max_words_fraction, english_stopwords()
    for text, adv in zip(batch.texts, runs["char-swap"].texts):
        changed = _changed(text, adv)
        assert len(changed) <= math.ceil(fraction * len(_words(text)))
        for _, old, new in changed:
            assert old not in stop and _one_edit(old, new), (old, new)


def test_word_sub_on_visual_entailment():
    from robustmm.types import Example, Task

    model = build_tiny_model("ve")
    texts = ["A girl is climbing a rope.", "Two men are outside."]
    examples = [Example(str(i), None, t, ("entailment",), Task.VE) for i, t in enumerate(texts)]
    pixels = torch.rand(2, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = model.candidate_scores(pixels, texts).argmax(1)
    result = get_attack("word-sub").run(model, AttackBatch(examples, pixels, texts, targets))
    assert torch.equal(result.pixels, pixels) and all(r["status"] != "skipped" for r in result.info)
    for text, adv in zip(texts, result.texts):
        assert len(_changed(text, adv)) <= math.ceil(0.2 * len(_words(text)))


def test_unknown_substitutions_are_counted():
    """A swap to a letter (Tifinagh ya) the WordPiece vocabulary lacks is counted as unknown to the tokenizer."""
    from robustmm.attacks.text import CharSwapConfig, GreedyTextAttack
    from robustmm.attacks.text.parts import textattack

    class TifinaghSwap(textattack.transformations.WordSwap):
        def _get_replacement_words(self, word):
            return ["\u2d30" + word]

    class TifinaghAttack(GreedyTextAttack):
        name, Config = "test-tifinagh", CharSwapConfig

        def transformation(self, parts):
            return TifinaghSwap()

    model = build_tiny_model("vqa")
    assert model.unknown_words(["\u2d30shape", "shape"]) == [True, False]
    result = TifinaghAttack().run(model, easy_vqa_batch(model, 6))
    changed = sum(row["words_changed"] for row in result.info)
    assert changed > 0 and sum(row["unknown_substitutions"] for row in result.info) == changed


# ---------------------------------------------------------------------------
# the shipped finetuned easy-VQA model
# ---------------------------------------------------------------------------


@pytest.mark.slow  # 40 questions, two attacks on the shipped model
def test_attacks_succeed_on_the_finetuned_easy_vqa_model():
    from robustmm.data import load_dataset, to_tensor
    from robustmm.models.checkpoint import load_model

    if not (DEFAULT_FINETUNE / "config.json").is_file():
        pytest.skip(f"the default pair is not built ({DEFAULT_FINETUNE})")
    model = load_model(DEFAULT_FINETUNE)
    examples = load_dataset("easy-vqa", split="test", limit=40, seed=0).examples  # a seeded sample
    pixels = to_tensor([e.image for e in examples], model.image_size)
    texts = [e.text for e in examples]
    targets = model.target_indices([e.label for e in examples])
    batch = AttackBatch(examples, pixels, texts, targets)
    for name in ("word-sub", "char-swap"):
        result = get_attack(name).run(model, batch)
        succeeded = [i for i, row in enumerate(result.info) if row["status"] == "succeeded"]
        assert succeeded, f"{name} changed no prediction of the finetuned model"
        predicted = model.predict(pixels[succeeded], [result.texts[i] for i in succeeded])
        assert all(p != examples[i].label for p, i in zip(predicted, succeeded))
