"""Text attacks that keep the label: protected words, part of speech, visible tokens only, the audit.

Offline. The attack tests import TextAttack (~10 s once per session, shared with
test_attacks_text.py) and load spaCy's small English tagger (~1.5 s); the shipped-pair test
needs robustmm/checkpoints/default and skips without it.
"""

from __future__ import annotations

import time

import pytest
import torch

from conftest import build_tiny_model
from robustmm.attacks import AttackBatch, get_attack
from robustmm.errors import RobustMMError
from robustmm.paths import package_root
from robustmm.types import AttackRecord, Example, Status, Task

DEFAULT_PAIR = package_root() / "checkpoints" / "default"
LABEL_WORDS = {"red", "gray", "circle"}


def _batch(model, texts: list[str], ids: list[str] | None = None, task: Task = Task.VQA, answers=("circle",),
           seed: int = 0) -> AttackBatch:
    """Texts on seeded random images; targets = the model's own predictions (so the clean prediction is right)."""
    ids = ids or [f"t/{i}" for i in range(len(texts))]
    examples = [Example(i, None, t, tuple(answers), task) for i, t in zip(ids, texts)]
    pixels = torch.rand(len(texts), 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = model.candidate_scores(pixels, texts).argmax(1)
    return AttackBatch(examples, pixels, texts, targets, seed=seed)


# ---------------------------------------------------------------------------
# protected words
# ---------------------------------------------------------------------------


def test_protected_words_of_easy_vqa_and_easy_ve():
    from robustmm.attacks.text.protect import protected_words
    from robustmm.data import load_dataset

    vqa = protected_words(load_dataset("easy-vqa", split="test", limit=400))
    assert {"red", "gray", "teal", "circle", "circles", "triangle", "rectangle", "yes", "no", "not"} <= vqa
    assert not {"shape", "color", "image", "what", "contain", "present"} & vqa
    ve = protected_words(load_dataset("easy-ve", split="test", limit=400))
    assert {"red", "gray", "brown", "circle", "triangle", "rectangle", "picture", "child"} <= ve
    assert not {"shape", "image", "drawn", "shows", "contains", "yesterday", "painted"} & ve
    assert "logo" in protected_words(load_dataset("easy-ve", split="test", limit=400), words=["logo"])
    with pytest.raises(RobustMMError):
        protected_words(load_dataset("easy-ve", split="test", limit=10), protect=["colours"])


def test_protection_matches_inflections_and_classes():
    from robustmm.attacks.text.protect import Protection, example_protection

    vqa = example_protection("vqa", ("blue",), ("circle", "fire hydrant"), (), ("negations", "numbers"), True, ())
    for word in ("circles", "Circle", "hydrants", "blue", "not", "isn't", "two", "10"):
        assert word in vqa, word
    for word in ("shape", "picture", "some"):
        assert word not in vqa, word
    ve = example_protection("ve", ("entailment",), ("entailment", "neutral", "contradiction"), (), (), True, ())
    assert all(w in ve for w in ("teal", "gray", "triangles", "dog", "men", "three"))
    assert "no" not in ve and "no" in example_protection("ve", (), (), (), ("negations",), True, ())
    assert "entailment" not in ve and "shows" not in ve and "quickly" not in ve
    assert "red" not in example_protection("ve", (), (), (), (), False, ())
    assert Protection(["logo"]).reason("logos") == "answer word" and Protection(classes=["colors"]).reason("red") == "colors"


# ---------------------------------------------------------------------------
# part of speech
# ---------------------------------------------------------------------------


def test_tagger_tags_words_in_their_sentence_once():
    from robustmm.attacks.text.pos import PosTagger

    tagger = PosTagger()
    assert tagger.wordnet_pos("the picture shows a circle", ["the", "picture", "shows", "a", "circle"]) == \
        [None, "n", "v", None, "n"]
    assert tagger.tags("they picture a circle", ["they", "picture", "a", "circle"])[1] == "VERB"
    calls = tagger.calls
    tagger.tags("the picture shows a circle", ["the", "picture", "shows", "a", "circle"])
    assert tagger.calls == calls  # cached


def test_replacements_are_inflected_like_the_word():
    from robustmm.attacks.text.pos import inflect

    cases = {("hold", "VBZ"): "holds", ("draw", "VBD"): "drew", ("draw", "VBN"): "drawn", ("form", "NNS"): "forms",
             ("child", "NNS"): "children", ("carry", "VBZ"): "carries", ("stop", "VBG"): "stopping",
             ("red", "JJR"): "redder", ("good", "JJS"): "best", ("be", "VBZ"): "is", ("demo", "VBZ"): "demos",
             ("picture", "NN"): "picture", ("get", "VBD"): "got"}
    assert {case: inflect(*case) for case in cases} == cases


def test_a_noun_is_never_replaced_by_a_verb_sense():
    from nltk.corpus import wordnet

    from robustmm.attacks.text.parts import AttackedText, WordNetSynonymSwap
    from robustmm.attacks.text.pos import PosTagger

    swap, any_sense = WordNetSynonymSwap(tagger=PosTagger()), WordNetSynonymSwap(multiword=True)
    text = AttackedText("does the picture contain a shape?")
    nouns = {w for i in (2, 5) for w in [t.words[i] for t in swap(text, indices_to_modify=[i])]}
    verbs_only = {"visualize", "envision", "depict", "mold", "determine", "influence"}
    assert nouns and not nouns & verbs_only
    assert verbs_only & set(any_sense._get_replacement_words("picture") + any_sense._get_replacement_words("shape"))
    for new in nouns:
        assert wordnet.synsets(new, "n"), new
    assert "gray-headed" in any_sense._get_replacement_words("gray")
    assert "gray-headed" not in swap.replacement_words("gray", "a")


# ---------------------------------------------------------------------------
# attacks: protection, skipped examples, visible words, seeds
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["word-sub", "char-swap"])
def test_nothing_to_attack_is_skipped_with_a_reason(name):
    model = build_tiny_model("vqa")
    texts = ["", "is it the?", "red circle", "is there a red circle?", "what is the color of the picture?"]
    batch = _batch(model, texts, answers=("red", "circle"))
    result = get_attack(name).run(model, batch)
    reasons = [row["details"].get("skipped_reason") for row in result.info]
    assert reasons[:4] == ["empty text", "only stop words", "only protected words", "only stop words and protected words"]
    assert reasons[4] is None and result.info[4]["status"] != "skipped"
    assert result.texts[:4] == texts[:4] and all(row["status"] == "skipped" for row in result.info[:4])


def test_protected_and_negated_words_are_never_edited_on_the_tiny_model():
    model = build_tiny_model("vqa")
    texts = ["is there not a red circle in the picture?", "what is the color of the two gray shapes?",
             "does the image contain a big circle?", "which shape is red in this picture?"] * 2
    batch = _batch(model, texts, answers=("red",))
    for name in ("word-sub", "char-swap", "wordnet-nn"):
        result = get_attack(name).run(model, batch)
        assert any(row["words_changed"] for row in result.info), name  # not vacuous
        for row in result.info:
            for _, old, new in row["details"]["substitutions"]:
                assert old.lower() not in {"red", "circle", "not", "two"}, (name, old)  # the tiny task's answers
                assert new.lower() not in {"red", "circle", "rectangle", "triangle", "blue", "green", "teal", "yes"}
            assert row["details"]["protected_edits"] == 0


def test_out_of_reach_words_are_neither_ranked_nor_substituted_and_cost_nothing():
    from robustmm.attacks.text.greedy import split_at_reach

    model = build_tiny_model("vqa")  # 48-token budget
    long_text = "what is the color of the big shape in this image " + " ".join(["and it is there"] * 1250) + "?"
    assert len(long_text.split()) > 5000
    short, _, _ = split_at_reach(model, long_text)  # just the words the model sees
    timings = {}
    for label, text in (("short", short), ("long", long_text)):
        batch = _batch(model, [text] * 4, ids=[f"{label}/{i}" for i in range(4)])
        batch.pixels = batch.pixels[:1].expand(4, -1, -1, -1).clone()
        with torch.no_grad():
            batch.targets = model.candidate_scores(batch.pixels, batch.texts).argmax(1)
        attack = get_attack("word-sub")
        attack.run(model, _batch(model, ["warm up the caches of this attack"]))
        start = time.perf_counter()
        result = attack.run(model, batch)
        timings[label] = time.perf_counter() - start
        details = result.info[0]["details"]
        if label == "short":
            assert details["out_of_reach"] == 0
            continue
        reach = details["words_in_reach"]
        assert 20 < reach < 48 and details["out_of_reach"] == result.info[0]["words_total"] - reach > 4900
        tail = long_text[len(" ".join(long_text.split()[:reach])):]
        for text, row in zip(result.texts, result.info):
            assert text.endswith(tail) and all(i < reach for i, _, _ in row["details"]["substitutions"])
        assert any(row["words_changed"] for row in result.info)  # the visible words were attacked
        with torch.no_grad():  # the scores come from the model reading the whole adversarial text
            assert torch.allclose(model.candidate_scores(batch.pixels, result.texts), result.scores, atol=1e-5)
    assert timings["long"] < 1.5 * timings["short"] + 0.3, timings


def test_text_reach_counts_the_template_and_the_budget():
    vqa, ve = build_tiny_model("vqa"), build_tiny_model("ve")
    text = "a " + "big red circle " * 30
    assert vqa.text_reach("what is it?") == len("what is it?") and vqa.text_reach("") == 0
    assert text[:vqa.text_reach(text)] == "a" + " big red circle" * 15  # 46 tokens + [CLS] + [SEP]
    assert ve.text_reach(text) < vqa.text_reach(text)  # the entailment template takes tokens too


@pytest.mark.parametrize("name", ["word-sub", "char-swap"])
def test_adversarial_texts_do_not_depend_on_the_batch(name):
    model = build_tiny_model("vqa")
    texts = ["what is the color of the big shape in this picture?", "does the image contain a small shape?",
             "what shape is shown in the picture?", "is the shape in the image large?"] * 2
    batch = _batch(model, texts, ids=[f"q/{i}" for i in range(len(texts))], seed=3)
    together = get_attack(name).run(model, batch)
    assert any(row["words_changed"] for row in together.info)
    for i in (0, 5, 7):
        one = AttackBatch(batch.examples[i:i + 1], batch.pixels[i:i + 1], texts[i:i + 1], batch.targets[i:i + 1], seed=3)
        assert get_attack(name).run(model, one).texts == together.texts[i:i + 1]
    if name == "char-swap":  # its random edits come from the run seed
        others = [get_attack(name).run(model, AttackBatch(batch.examples, batch.pixels, texts, batch.targets, seed=s))
                  for s in (4, 5)]
        assert any(o.texts != together.texts for o in others)


@pytest.mark.slow  # both members of both shipped tasks, two attacks: ~15 s on an idle machine
def test_shipped_pair_never_replaces_label_words():
    """On easy-VQA and easy-VE with the default pair, no edit of word-sub or char-swap touches red/gray/circle
    (or any other protected word), and a tagged noun is only replaced by a noun."""
    from nltk.corpus import wordnet

    from robustmm.data import load_dataset, to_tensor
    from robustmm.models.pair import load_pair

    if not (DEFAULT_PAIR / "recipe.json").is_file():
        pytest.skip(f"the default pair is not built ({DEFAULT_PAIR})")
    successes = 0
    for task, dataset in (("vqa", "easy-vqa"), ("ve", "easy-ve")):
        pair = load_pair("default", task=task, device="cpu")
        examples = [e for e in load_dataset(dataset, split="test").examples
                    if LABEL_WORDS & set(e.text.rstrip("?.").split())][:8]
        pixels = to_tensor([e.image for e in examples], pair.finetuned.image_size)
        texts = [e.text for e in examples]
        for member, model in pair.members().items():
            batch = AttackBatch(examples, pixels, texts, model.target_indices([e.label for e in examples]))
            for name in ("word-sub", "char-swap"):
                result = get_attack(name).run(model, batch)
                for row in result.info:
                    details = row["details"]
                    successes += row["status"] == "succeeded"
                    assert details["protected_edits"] == 0
                    for k, (_, old, new) in enumerate(details["substitutions"]):
                        assert old.lower() not in LABEL_WORDS and new.lower() not in LABEL_WORDS, (member, name, old, new)
                        if details.get("substitution_pos", [None] * (k + 1))[k] == "NOUN":
                            assert wordnet.synsets(new, "n"), (old, new)
    assert successes > 0


# ---------------------------------------------------------------------------
# the audit (pure functions over records)
# ---------------------------------------------------------------------------


def _record(i: int, member: str, status: str, text: str, adv: str, details: dict | None = None, changed: int = 1,
            unknown: int = 0, attack: str = "word-sub") -> AttackRecord:
    return AttackRecord(run="r", task="vqa", dataset="easy-vqa", member=member, model="m", attack=attack,
                        attack_key=f"{attack}()", modality="text", eps=None, example_id=f"e/{i}", answers=("circle",),
                        text=text, adv_text=adv, clean_prediction="circle", adv_prediction="triangle" if status == "succeeded" else "circle",
                        clean_score=1.0, adv_score=0.0, status=Status(status), words_changed=changed,
                        unknown_substitutions=unknown, queries=5, details=details or {})


def test_audit_numbers_gallery_and_markdown():
    from robustmm.attacks.text.audit import audit_gallery, audit_markdown, audit_text_attacks, highlight

    q = "what is the red shape?"
    records = [
        _record(0, "prompt", "succeeded", q, "what is the crimson shape?",
                {"substitutions": [[3, "red", "crimson"]], "protected_indices": [3], "out_of_reach": 0}),
        _record(1, "prompt", "succeeded", q, "what is the Marxist shape?", {}, unknown=1),  # an old, unprotected record
        _record(2, "prompt", "skipped", "is there a red circle?", "is there a red circle?",
                {"skipped_reason": "only stop words and protected words"}, changed=0),
        _record(3, "prompt", "failed", q + " " + "word " * 60, q + " " + "word " * 60, {"out_of_reach": 20}, changed=0),
        _record(0, "finetune", "succeeded", q, "what is teh red shape?", {"substitutions": [[2, "the", "teh"]]}),
    ]
    prompt, finetune = sorted(audit_text_attacks(records), key=lambda a: a.member != "prompt")
    assert (prompt.succeeded, prompt.attacked, prompt.label_edit_successes) == (2, 3, 1)
    assert prompt.label_edit_share == 0.5 and prompt.mean_words_changed == 1.0 and prompt.unknown_share == 0.5
    assert (prompt.out_of_reach_words, prompt.out_of_reach_examples) == (20, 1)
    assert prompt.skipped == {"only stop words and protected words": 1} and finetune.label_edit_share == 0.0
    label = lambda dataset, word: word.lower() in {"red", "circle"}  # noqa: E731
    assert audit_text_attacks(records, label)[1].label_edit_successes == 2  # "red" -> "Marxist" is judged too
    assert highlight(q, "what is the Marxist shape?") == "what is the ~~red~~ **Marxist** shape?"
    gallery = audit_gallery(records, size=2, seed=1)[("easy-vqa", "word-sub()")]
    assert len(gallery) == 2 and gallery == audit_gallery(list(reversed(records)), size=2, seed=1)[("easy-vqa", "word-sub()")]
    many = [_record(i, "prompt", "succeeded", q, "what is the red form?") for i in range(30)]
    assert audit_gallery(many, seed=0) != audit_gallery(many, seed=1) and len(audit_gallery(many)[("easy-vqa", "word-sub()")]) == 10
    lines = audit_markdown(records)
    assert lines[0].startswith("### Text attacks") and any("| 1 (50.0%) |" in line for line in lines)
    assert audit_markdown([r for r in records if False]) == []
