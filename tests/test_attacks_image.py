"""Pixel attacks (fgsm, pgd-linf, pgd-l2, noise-linf), the embedding FGSM and attack presets.

Fast and seeded: everything runs on the tiny random model from conftest, except one test
on the shipped finetuned easy-VQA model (skipped until it exists).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from robustmm.attacks import AttackBatch, attack_class, get_attack, list_attacks, parse_attack_spec
from robustmm.attacks.image import ClassifierView
from robustmm.attacks.presets import list_presets, load_preset
from robustmm.errors import RobustMMError
from robustmm.paths import package_root
from robustmm.types import Example, Task

TEXTS = ["what shape is in the image?", "what color is the shape?", "is there a red circle?", "is it blue?"]
IMAGE_SPECS = ["fgsm", "pgd-linf:steps=3", "pgd-l2:eps=0.5,steps=3", "noise-linf", "pgd-linf:steps=2,targeted=true"]
DEFAULT_FINETUNE = package_root() / "checkpoints" / "default" / "easy-vqa" / "finetune"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model gains nothing from intra-op threads, and on a busy machine OpenMP spinning
    makes a 2-thread run many times slower; restore the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(b: int = 4, targets=None, seed: int = 0) -> AttackBatch:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(b, 3, 64, 64, generator=generator)
    pixels[0, :, :8, :8] = 0.0  # saturated corners: clipping to [0, 1] must hold there too
    pixels[-1, :, -8:, -8:] = 1.0
    targets = torch.tensor(targets if targets is not None else [i % 9 for i in range(b)])
    texts = [TEXTS[i % len(TEXTS)] for i in range(b)]
    return AttackBatch(examples_for(texts), pixels, texts, targets)


def examples_for(texts, prefix: str = "ex") -> list[Example]:
    """One Example per text, ids ``ex0``, ``ex1``, ... (an id seeds an attack's random draws)."""
    return [Example(f"{prefix}{i}", None, text, ("yes",), Task.VQA) for i, text in enumerate(texts)]


def bound(attack) -> tuple[str, float]:
    return ("l2", attack.config.eps + 1e-5) if attack.name == "pgd-l2" else ("linf", attack.config.eps + 1e-6)


def train_mode_model(model):
    """The tiny model as if mid-training: train mode (one submodule left in eval), trainable parameters."""
    model.train()
    model.backbone.stem.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


# ---------------------------------------------------------------------------
# Pixel attacks on the tiny model
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", IMAGE_SPECS)
def test_pixel_attack_stays_in_budget_and_range(tiny_vqa_model, spec):
    attack = parse_attack_spec(spec)
    batch = make_batch()
    clean = batch.pixels.clone()
    result = attack.run(tiny_vqa_model, batch)

    assert torch.equal(batch.pixels, clean), "the clean pixels were modified in place"
    assert result.pixels.shape == clean.shape and result.pixels.dtype == torch.float32
    assert float(result.pixels.min()) >= 0.0 and float(result.pixels.max()) <= 1.0
    assert result.texts == batch.texts
    assert result.scores.shape == (4, len(tiny_vqa_model.candidates)) and torch.isfinite(result.scores).all()
    delta = (result.pixels - clean).flatten(1)
    norm, limit = bound(attack)
    measured = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (measured <= limit).all(), measured
    assert float(delta.abs().max()) > 0, "the attack did not move the pixels at all"
    assert len(result.info) == 4
    for row, linf, l2 in zip(result.info, delta.abs().amax(dim=1).tolist(), delta.norm(dim=1).tolist()):
        assert row["linf"] == pytest.approx(linf, abs=1e-6) and row["l2"] == pytest.approx(l2, rel=1e-4)
        assert row["queries"] == {"fgsm": 1, "noise-linf": 0}.get(attack.name, getattr(attack.config, "steps", None))
        assert row["forwards"] >= 1 and row["seconds"] >= 0


def test_scores_are_the_models_scores_on_the_adversarial_pixels(tiny_vqa_model):
    batch = make_batch()
    result = get_attack("pgd-linf", steps=2).run(tiny_vqa_model, batch)
    with torch.no_grad():
        expected = tiny_vqa_model.candidate_scores(result.pixels, batch.texts)
    torch.testing.assert_close(result.scores, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec", IMAGE_SPECS + ["embed-fgsm", "embed-fgsm-rms"])
def test_attack_restores_mode_and_never_touches_parameter_grads(tiny_vqa_model, spec):
    model = train_mode_model(tiny_vqa_model)
    seen = []
    hook = model.backbone.encoder[0].register_forward_pre_hook(lambda module, args: seen.append(module.training))
    try:
        parse_attack_spec(spec).run(model, make_batch())
    finally:
        hook.remove()
    assert seen and not any(seen), "the model ran in train mode during the attack"
    assert model.training and model.backbone.encoder[0].training and not model.backbone.stem.training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("style", ["prefix", "prompt"])
@pytest.mark.parametrize("spec", ["pgd-linf:steps=2", "embed-fgsm"])
def test_prompt_tuned_model_mid_training(spec, style):
    """A prompt-tuned model whose (reparameterised) prompts are being trained: attacks leave them alone."""
    from conftest import build_tiny_model

    from robustmm.models.prompts import PromptConfig, PromptModule

    prompts = PromptModule(PromptConfig(style=style, where="both", length=3, reparam=True, reparam_hidden=8), 32, 1, 1)
    model = build_tiny_model("vqa", prompts=prompts)
    model.prompts.train()
    for p in model.prompts.parameters():
        p.requires_grad_(True)
    result = parse_attack_spec(spec).run(model, make_batch())
    assert torch.isfinite(result.scores).all()
    assert model.prompts.training and not model.backbone.training
    assert all(p.grad is None and p.requires_grad for p in model.prompts.parameters())


@pytest.mark.parametrize("spec", ["fgsm", "pgd-linf:steps=2", "pgd-l2:steps=2", "embed-fgsm"])
def test_gold_answer_outside_the_candidates_attacks_the_prediction(tiny_vqa_model, spec):
    result = parse_attack_spec(spec).run(tiny_vqa_model, make_batch(targets=[-100, 2, -100, -100]))
    assert torch.isfinite(result.scores).all() and torch.isfinite(result.pixels).all()
    assert [row["label"] for row in result.info] == ["prediction", "gold", "prediction", "prediction"]
    everything_missing = parse_attack_spec(spec).run(tiny_vqa_model, make_batch(targets=[-100] * 4))
    assert torch.isfinite(everything_missing.scores).all()


def test_targeted_attacks(tiny_vqa_model):
    batch = make_batch()
    named = get_attack("pgd-linf", steps=3, targeted=True, target="yes").run(tiny_vqa_model, batch)
    assert all(row["label"] == "target" for row in named.info)
    with torch.no_grad():
        clean = tiny_vqa_model.candidate_scores(batch.pixels, batch.texts).log_softmax(1)
    yes = tiny_vqa_model.candidates.index("yes")
    assert (named.scores.log_softmax(1)[:, yes] > clean[:, yes]).all(), "the targeted attack did not move towards 'yes'"
    with pytest.raises(RobustMMError, match="not one of"):
        get_attack("fgsm", targeted=True, target="purple").run(tiny_vqa_model, batch)


def test_seeded_attacks_are_reproducible_and_leave_the_global_rng_alone(tiny_vqa_model):
    from dataclasses import replace

    batch = make_batch()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = get_attack("pgd-linf", steps=2).run(tiny_vqa_model, replace(batch, seed=7))
    assert torch.equal(torch.random.get_rng_state(), before)
    second = get_attack("pgd-linf", steps=2).run(tiny_vqa_model, replace(batch, seed=7))
    other = get_attack("pgd-linf", steps=2).run(tiny_vqa_model, replace(batch, seed=8))
    assert torch.equal(first.pixels, second.pixels)
    assert not torch.equal(first.pixels, other.pixels)


def test_classifier_view_is_a_plain_classifier(tiny_vqa_model):
    model = tiny_vqa_model.train()
    view = ClassifierView(model, TEXTS)
    assert model.training and view.training, "building a view must not change the model's mode"
    pixels = make_batch().pixels
    model.eval()
    logits = ClassifierView(model, TEXTS)(pixels)
    assert logits.shape == (4, len(model.candidates)) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, model.candidate_scores(pixels, TEXTS))


def test_empty_batch(tiny_vqa_model):
    empty = AttackBatch([], torch.zeros(0, 3, 64, 64), [], torch.zeros(0, dtype=torch.long))
    for spec in ["fgsm", "noise-linf", "embed-fgsm"]:
        result = parse_attack_spec(spec).run(tiny_vqa_model, empty)
        assert result.scores.shape == (0, len(tiny_vqa_model.candidates)) and result.info == []


# ---------------------------------------------------------------------------
# The seed paper's embedding FGSM
# ---------------------------------------------------------------------------


def capture_embeddings(model):
    """Wrap scores_from_embeddings to record the embeddings it sees (first call: clean, last: perturbed)."""
    seen, original = [], model.scores_from_embeddings

    def recording(embeddings):
        seen.append(embeddings)
        return original(embeddings)

    model.scores_from_embeddings = recording
    return seen, original


@pytest.mark.parametrize("target", ["both", "image", "text"])
def test_embed_fgsm_bounds_padding_and_clean_inputs(tiny_vqa_model, target):
    seen, score = capture_embeddings(tiny_vqa_model)
    batch = make_batch()
    clean_pixels = batch.pixels.clone()
    eps = 0.05
    result = get_attack("embed-fgsm", eps=eps, target=target).run(tiny_vqa_model, batch)

    assert torch.equal(result.pixels, clean_pixels) and result.texts == batch.texts
    assert result.scores.shape == (4, len(tiny_vqa_model.candidates))
    clean, perturbed = seen[0], seen[-1]
    d_image, d_text = (perturbed.image - clean.image).detach(), (perturbed.text - clean.text).detach()
    context = clean.context
    assert float(d_image.abs().max()) <= eps + 1e-6 and float(d_text.abs().max()) <= eps + 1e-6
    padding = ~context["attention_mask"]
    assert padding.any(), "the test batch should contain padded texts"
    assert float(d_text[padding].abs().max()) == 0.0, "padding positions were perturbed"
    if target == "image":
        assert float(d_text.abs().max()) == 0.0 and float(d_image.abs().max()) > 0
    elif target == "text":
        assert float(d_image.abs().max()) == 0.0 and float(d_text[~padding].abs().max()) > 0
    for i, row in enumerate(result.info):
        delta = torch.cat([d_image[i].flatten(), d_text[i].flatten()])
        assert row["linf"] == pytest.approx(float(delta.abs().max()), abs=1e-6)
        assert row["l2"] == pytest.approx(float(delta.norm()), rel=1e-4)
        assert row["queries"] == 1 and row["image_rms"] > 0 and row["text_rms"] > 0
    with torch.no_grad():
        expected = score(perturbed)
    torch.testing.assert_close(result.scores, expected, atol=1e-4, rtol=1e-4)


def test_relative_embed_fgsm_steps_are_eps_times_each_examples_rms(tiny_vqa_model):
    seen, _ = capture_embeddings(tiny_vqa_model)
    batch = make_batch()
    result = get_attack("embed-fgsm-rms", eps=0.5).run(tiny_vqa_model, batch)
    clean, perturbed = seen[0], seen[-1]
    d_image, d_text = (perturbed.image - clean.image).detach(), (perturbed.text - clean.text).detach()
    real = clean.context["attention_mask"]
    for i, row in enumerate(result.info):
        # every moved coordinate moves by exactly eps x that example's clean RMS of its modality
        moved_image = d_image[i].abs()[d_image[i] != 0]
        moved_text = d_text[i][real[i]].abs()
        moved_text = moved_text[moved_text != 0]
        torch.testing.assert_close(moved_image, torch.full_like(moved_image, 0.5 * row["image_rms"]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(moved_text, torch.full_like(moved_text, 0.5 * row["text_rms"]), rtol=1e-5, atol=1e-6)
        assert moved_image.numel() > 0 and moved_text.numel() > 0
    assert row["image_rms"] != pytest.approx(row["text_rms"], rel=0.05), "the two modalities should have different steps"
    assert get_attack("embed-fgsm-rms").config.eps == 0.25 and "embed-fgsm-rms" in list_attacks("embedding")


def test_embed_fgsm_with_zero_eps_changes_nothing(tiny_vqa_model):
    batch = make_batch()
    result = get_attack("embed-fgsm", eps=0).run(tiny_vqa_model, batch)
    with torch.no_grad():
        clean = tiny_vqa_model.candidate_scores(batch.pixels, batch.texts)
    torch.testing.assert_close(result.scores, clean, atol=1e-5, rtol=1e-5)
    assert all(row["linf"] == 0.0 for row in result.info)


# ---------------------------------------------------------------------------
# Configuration, registry and presets
# ---------------------------------------------------------------------------


def test_registry_lists_the_attacks_with_their_papers():
    assert {"fgsm", "pgd-linf", "pgd-l2", "noise-linf"} <= set(list_attacks("image"))
    assert "embed-fgsm" in list_attacks("embedding")
    for name in ["fgsm", "pgd-linf", "pgd-l2", "noise-linf", "embed-fgsm"]:
        cls = attack_class(name)
        assert cls.paper.startswith("https://arxiv.org/abs/")
        assert cls.paper in cls.__doc__ and "Shape:" in cls.__doc__ and "Examples::" in cls.__doc__


def test_parse_attack_spec():
    attack = parse_attack_spec("pgd-linf:eps=8/255,steps=10")
    assert attack.name == "pgd-linf"
    assert attack.config.eps == pytest.approx(8 / 255) and attack.config.steps == 10
    assert attack.config.alpha == pytest.approx(2 / 255), "default step size is 2.5 * eps / steps"
    assert parse_attack_spec("embed-fgsm:eps=0.1,target=text").config.target == "text"
    assert parse_attack_spec("pgd-l2:random_start=false").config.random_start is False


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("pgd-linf", {"eps": -0.1}, "eps"),
        ("pgd-linf", {"eps": 8}, "eps"),
        ("pgd-linf", {"steps": 0}, "steps"),
        ("pgd-l2", {"steps": "2.5"}, "steps"),
        ("pgd-linf", {"alpha": 0}, "alpha"),
        ("fgsm", {"eps": "abc"}, "eps"),
        ("fgsm", {"eps": "1/0"}, "eps"),
        ("fgsm", {"eps": float("nan")}, "eps"),
        ("noise-linf", {"eps": "-1/255"}, "eps"),
        ("fgsm", {"epsilon": 0.1}, "no parameter 'epsilon'"),
        ("pgd-linf", {"random_start": "maybe"}, "random_start"),
        ("pgd-linf", {"targeted": True, "target": ""}, "target"),
        ("embed-fgsm", {"eps": -1}, "eps"),
        ("embed-fgsm", {"target": "audio"}, "target"),
        ("no-such-attack", {}, "Unknown attack"),
    ],
)
def test_bad_configuration_is_a_robustmm_error(name, params, message):
    with pytest.raises(RobustMMError, match=message):
        get_attack(name, **params)


def test_bad_batches_are_robustmm_errors(tiny_vqa_model):
    batch = make_batch()
    bad = [
        AttackBatch(batch.examples, batch.pixels * 2, batch.texts, batch.targets),  # not in [0, 1]
        AttackBatch(batch.examples, batch.pixels, batch.texts[:3], batch.targets),  # lengths differ
        AttackBatch(batch.examples, batch.pixels[:, 0], batch.texts, batch.targets),  # not (B, 3, H, W)
        AttackBatch([], batch.pixels, batch.texts, batch.targets),  # no examples (no ids to seed from)
    ]
    for item in bad:
        with pytest.raises(RobustMMError):
            get_attack("fgsm").run(tiny_vqa_model, item)


def test_builtin_presets_load():
    presets = list_presets()
    for name in ["fgsm", "pgd-linf", "pgd-l2", "noise-linf", "embed-fgsm", "paper"]:
        assert name in presets
        attacks = load_preset(name)
        assert attacks and all(a.name in list_attacks() for a in attacks)
    assert load_preset("pgd-linf")[0].config.eps == pytest.approx(8 / 255)
    paper = load_preset(presets["paper"])
    assert len(paper) >= 3 and {a.name for a in paper} == {"embed-fgsm"}
    assert len({a.config.eps for a in paper}) == len(paper)


@pytest.mark.parametrize(
    "content, message",
    [
        ('[[attack]]\nname = "pgd-linf"\neps = "8/255"\nsteps = 10\n', None),
        ('[[attack]]\nname = "pgd-linf"\neps = \n', "not valid TOML"),
        ('[[attack]]\nname = "pgd-inf"\n', "Unknown attack"),
        ('[[attack]]\nname = "fgsm"\nepsilon = 0.1\n', "no parameter"),
        ('[[attack]]\nname = "fgsm"\neps = "abc"\n', "eps"),
        ('[[attack]]\neps = 0.1\n', "no name"),
        ('description = "nothing here"\n', "at least one"),
        ('[attack]\nname = "fgsm"\n', "at least one"),
        ('attacks = 1\n', "unknown top-level key"),
    ],
)
def test_preset_files(tmp_path, content, message):
    path = tmp_path / "custom.toml"
    path.write_text(content)
    if message is None:
        [attack] = load_preset(path)
        assert attack.name == "pgd-linf" and attack.config.steps == 10
    else:
        with pytest.raises(RobustMMError, match=message):
            load_preset(path)


def test_missing_preset_is_a_robustmm_error(tmp_path):
    with pytest.raises(RobustMMError, match="does not exist"):
        load_preset(tmp_path / "nope.toml")
    with pytest.raises(RobustMMError, match="Unknown attack preset"):
        load_preset("no-such-preset")


# ---------------------------------------------------------------------------
# On the trained finetuned easy-VQA model: PGD > FGSM > noise at the same eps
# ---------------------------------------------------------------------------


def finetune_path() -> Path:
    """The shipped finetuned easy-VQA model (ROBUSTMM_TEST_FINETUNE overrides, e.g. for a trial pair)."""
    return Path(os.environ.get("ROBUSTMM_TEST_FINETUNE") or DEFAULT_FINETUNE)


@pytest.mark.slow
def test_attack_strength_order_on_trained_model():
    path = finetune_path()
    if not (path / "config.json").is_file():
        pytest.skip(f"no trained finetuned easy-VQA model at {path} yet")
    from robustmm.data import load_dataset, to_tensor
    from robustmm.models.checkpoint import load_model

    model = load_model(path)
    examples = list(load_dataset("easy-vqa", split="test", limit=200, seed=0))
    pixels = to_tensor([e.image for e in examples], model.image_size)
    batch = AttackBatch(examples, pixels, [e.text for e in examples], model.target_indices([e.label for e in examples]))

    def accuracy(spec: str | None) -> float:
        correct = 0
        for start in range(0, len(examples), 100):
            part = AttackBatch(batch.examples[start:start + 100], batch.pixels[start:start + 100],
                               batch.texts[start:start + 100], batch.targets[start:start + 100])
            if spec is None:
                with torch.no_grad():
                    scores = model.candidate_scores(part.pixels, part.texts)
            else:
                scores = parse_attack_spec(spec).run(model, part).scores
            correct += int((scores.argmax(1).cpu() == part.targets.cpu()).sum())
        return correct / len(examples)

    clean, noise = accuracy(None), accuracy("noise-linf:eps=8/255")
    fgsm, pgd = accuracy("fgsm:eps=8/255"), accuracy("pgd-linf:eps=8/255,steps=10")
    assert clean > 0.5, f"the finetuned model should be accurate on clean inputs, got {clean:.3f}"
    assert pgd < fgsm < noise, f"clean {clean:.3f}, noise {noise:.3f}, fgsm {fgsm:.3f}, pgd {pgd:.3f}"
    assert not math.isnan(pgd)


def test_blank_image_is_the_blind_baseline(tiny_vqa_model):
    import torch

    from robustmm.attacks import AttackBatch, get_attack
    from robustmm.errors import RobustMMError

    pixels = torch.rand(3, 3, 64, 64)
    texts = ["what shape is present?"] * 3
    batch = AttackBatch(examples_for(texts), pixels, texts, torch.zeros(3, dtype=torch.long))
    result = get_attack("blank-image").run(tiny_vqa_model, batch)
    assert torch.all(result.pixels == 0.5) and result.texts == texts
    expected = tiny_vqa_model.candidate_scores(torch.full_like(pixels, 0.5), texts)
    assert torch.allclose(result.scores, expected, atol=1e-5)
    assert torch.equal(pixels, batch.pixels)  # the clean batch is untouched
    with pytest.raises(RobustMMError):
        get_attack("blank-image", gray=2)


def test_presets_ship_inside_the_package(tmp_path):
    """A wheel carries the presets (robustmm/presets links to the top-level attacks/ folder users edit)."""
    import subprocess
    import sys
    import zipfile

    from robustmm.attacks.presets import presets_dir

    assert (presets_dir() / "default.toml").is_file() and presets_dir().resolve().name == "attacks"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(root), "-w",
                    str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("robustmm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"robustmm/presets/{p.name}" for p in (root / "attacks").glob("*.toml")} <= names
