"""The built-in model, prompts, checkpoints, pair loading and the tuning recipe (tiny configs)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from robustmm.errors import RobustMMError
from robustmm.models.checkpoint import load_backbone, load_model
from robustmm.models.pair import DEFAULT_PAIR_DIR, load_pair
from robustmm.models.prompts import PromptConfig, PromptModule
from robustmm.models.unified import CandidateTrie, UnifiedBackbone, UnifiedConfig
from robustmm.tuning import (IMAGE_OBJECTIVES, OBJECTIVES, Recipe, StageConfig, finetune, pretrain, pretraining_pair,
                             pretraining_texts)

from conftest import build_tiny_model

from conftest import TINY, TINY_STAGE


def test_candidate_scores_are_a_log_distribution(tiny_vqa_model):
    pixels = torch.rand(3, 3, 64, 64)
    scores = tiny_vqa_model.candidate_scores(pixels, ["what color is the shape?"] * 3)
    assert scores.shape == (3, len(tiny_vqa_model.candidates))
    # constrained (trie) scoring: probabilities over the closed answer set sum to one
    assert torch.allclose(scores.exp().sum(dim=1), torch.ones(3), atol=1e-5)


def test_trie_allows_only_continuations_of_candidates():
    trie = CandidateTrie.build([[5, 6], [5, 7], [8]], bos=1, eos=2, pad=0)
    vocab = trie.vocab.tolist()
    # first step: tokens 5 and 8 allowed; after 5: 6 or 7; after [5, 6]: only eos
    assert {vocab[k] for k in trie.allowed[0, 0].nonzero().flatten().tolist()} == {5, 8}
    assert {vocab[k] for k in trie.allowed[0, 1].nonzero().flatten().tolist()} == {6, 7}
    assert {vocab[k] for k in trie.allowed[0, 2].nonzero().flatten().tolist()} == {2}
    assert trie.valid.tolist() == [[True, True, True], [True, True, True], [True, True, False]]


def test_pixels_are_normalised_inside_and_gradients_flow(tiny_vqa_model):
    pixels = torch.rand(2, 3, 64, 64, requires_grad=True)
    targets = tiny_vqa_model.target_indices(["red", "yes"])
    tiny_vqa_model.loss(pixels, ["what color is the shape?", "is there a circle?"], targets).backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_loss_decodes_only_the_gold_candidate_yet_equals_cross_entropy_over_all(tiny_vqa_model):
    pixels = torch.rand(4, 3, 64, 64)
    texts = ["what color is the shape?", "is there a circle?", "what shape is present?", "is there a red shape?"]
    targets = tiny_vqa_model.target_indices(["red", "yes", "circle", "no"])
    targets[2] = -100  # an answer outside the candidate set is ignored, as by cross_entropy
    full = torch.nn.functional.cross_entropy(tiny_vqa_model.candidate_scores(pixels, texts), targets, ignore_index=-100)
    assert torch.allclose(tiny_vqa_model.loss(pixels, texts, targets), full, atol=1e-5)


def test_generative_loss_skips_padding_but_equals_the_masked_loss():
    from robustmm.models.lexicon import load_lexicon
    from robustmm.tuning import generative_loss

    table, _ = load_lexicon()
    torch.manual_seed(0)
    backbone = UnifiedBackbone(TINY, table)
    ids, mask = torch.randint(1000, 2000, (3, 6)), torch.ones(3, 6, dtype=torch.bool)
    target = torch.tensor([[101, 1037, 2417, 4418, 102], [101, 2748, 102, 0, 0], [101, 2417, 102, 0, 0]])
    target_mask = target != 0
    pixels = torch.rand(3, 3, 64, 64)
    memory, keys = backbone.encode(backbone.embed_image(pixels), backbone.embed_tokens(ids), mask, None)
    logits = backbone.token_logits(backbone.decode(memory, keys, target[:, :-1], None))
    labels = target[:, 1:].masked_fill(~target_mask[:, 1:], -100)
    masked = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(generative_loss(backbone, pixels, ids, mask, target, target_mask), masked, atol=1e-5)


@pytest.mark.parametrize("style", ["prefix", "prompt"])
@pytest.mark.parametrize("where", ["encoder", "decoder", "both"])
@pytest.mark.parametrize("reparam", [False, True])
def test_prompt_variants_change_the_output(style, where, reparam):
    config = PromptConfig(style=style, where=where, length=4, reparam=reparam, reparam_hidden=16)
    prompts = PromptModule(config, 32, 1, 1)
    with torch.no_grad():
        for p in prompts.parameters():
            p.normal_(0, 1.0)
    plain = build_tiny_model("vqa")
    prompted = build_tiny_model("vqa", prompts=prompts)
    pixels = torch.rand(2, 3, 64, 64)
    texts = ["what shape is present?", "is there a red shape?"]
    assert not torch.allclose(plain.candidate_scores(pixels, texts), prompted.candidate_scores(pixels, texts))


@pytest.mark.parametrize("ffn", ["geglu", "gelu"])
def test_both_feed_forward_kinds_build_and_train(ffn):
    from robustmm.models.lexicon import load_lexicon

    table, _ = load_lexicon()
    backbone = UnifiedBackbone(replace(TINY, ffn=ffn), table)
    hidden = backbone.encoder[0].ffn(torch.randn(2, 5, TINY.dim, requires_grad=True))
    hidden.sum().backward()
    assert hidden.shape == (2, 5, TINY.dim)
    assert all(p.grad is not None for p in backbone.encoder[0].ffn.parameters())
    with pytest.raises(RobustMMError, match="ffn"):
        UnifiedConfig(ffn="relu")
    old = {k: v for k, v in TINY.to_dict().items() if k != "ffn"}  # a config written before the option
    assert UnifiedConfig.from_dict(old).ffn == "gelu" and UnifiedConfig().ffn == "geglu"


def test_pretraining_pairs_match_the_image_facts_and_mismatches_are_wrong():
    import random

    rng = random.Random(0)
    seen = set()
    changed = {"full": [], "color": [], "shape": []}  # per form: was the colour the wrong word?
    for _ in range(300):
        for form in changed:
            for objective in IMAGE_OBJECTIVES:
                text, target = pretraining_pair(objective, "circle", "red", rng, form, color_share=0.75)
                seen.add((objective, text))
                if objective == "caption":
                    assert target == "a red circle"
                elif objective.startswith("infill"):
                    assert "[MASK]" in text and target in ("red", "circle")
                else:
                    caption = text.split('"')[1].split()
                    assert target == ("yes" if objective == "match" else "no")
                    assert len(caption) == (2 if form == "shape" else 3) and (form == "color") == ("shape" in caption)
                    truthful = all(word in ("a", "red", "circle", "shape") for word in caption)
                    assert truthful == (objective == "match"), text
                    if objective == "mismatch":
                        changed[form].append(not {"red", "rectangle", "triangle"} & set(caption))
    mismatches = {text for objective, text in seen if objective == "mismatch"}
    assert len(mismatches) == 7 + 2 + 7 + 2  # drawn fresh: every wrong colour and shape in every form
    assert all(changed["color"]) and not any(changed["shape"])  # the one wrong word is a colour / a shape
    assert 0.65 < sum(changed["full"]) / 300 < 0.85  # color_share of the wrong full captions change the colour


def test_text_infilling_masks_one_caption_word_and_targets_the_whole_caption():
    import random

    rng, masked = random.Random(0), set()
    for _ in range(100):
        text, target = pretraining_pair("infill-text", "circle", "red", rng)
        words = text.split('"')[1].split()
        assert text.startswith("what is the complete text of") and target == "a red circle"
        assert len(words) == 3 and words.count("[MASK]") == 1
        assert all(w in ("[MASK]", truth) for w, truth in zip(words, ["a", "red", "circle"]))
        masked.add(words.index("[MASK]"))
    assert masked == {0, 1, 2}


def test_recipe_refuses_unknown_pretraining_objectives():
    with pytest.raises(RobustMMError, match="objectives"):
        Recipe(objectives=("caption", "infill-everything"))
    with pytest.raises(RobustMMError, match="objectives"):
        Recipe(objectives=())
    with pytest.raises(RobustMMError, match="objectives"):
        Recipe(then_objectives=("match", "rhyme"))
    with pytest.raises(RobustMMError, match="second phase"):
        Recipe(then_epochs=-1)



def test_recipe_overrides_update_nested_configs_and_refuse_unknown_fields():
    from robustmm.tuning import recipe_with_overrides

    recipe = recipe_with_overrides({"seed": 3, "model": {"ffn_mult": 3, "stem_channels": [16, 32]},
                                    "prompt_tune_ve": {"epochs": 12}, "objectives": ["caption", "match"]})
    default = Recipe()
    assert recipe.seed == 3 and recipe.objectives == ("caption", "match")
    assert recipe.model == replace(default.model, ffn_mult=3, stem_channels=(16, 32))
    assert recipe.prompt_tune_ve == replace(default.prompt_tune_ve, epochs=12)
    assert recipe.prompt_tune == default.prompt_tune and recipe.prompt == default.prompt  # untouched
    with pytest.raises(RobustMMError, match="UnifiedConfig has no field 'width'"):
        recipe_with_overrides({"model": {"width": 64}})
    with pytest.raises(RobustMMError, match="Recipe has no field 'epochs'"):
        recipe_with_overrides({"epochs": 3})
    with pytest.raises(RobustMMError, match="objectives"):
        recipe_with_overrides({"objectives": ["rhyme"]})


def test_a_recipe_json_read_back_as_overrides_is_that_recipe():
    import importlib.util

    from robustmm.tuning import recipe_with_overrides

    shipped = Recipe()
    assert recipe_with_overrides(json.loads(json.dumps(shipped.to_dict()))) == shipped
    # bench_recipe.py's default variant: the wide-FFN pair's stored recipe, whatever Recipe() is now
    spec = importlib.util.spec_from_file_location("bench_recipe", Path(__file__).resolve().parents[1] / "benchmarks/bench_recipe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    stored = json.loads(bench.WIDE_FFN_RECIPE.read_text())["recipe"]
    wide = bench.wide_ffn_recipe()
    assert json.loads(json.dumps(wide.to_dict())) == stored
    assert wide.model.ffn_mult == 4 and wide.prompt_tune.epochs == 5 and wide.prompt_tune.batch_size == 64


def test_pretraining_second_phase_continues_the_first_with_its_own_objectives(monkeypatch, tmp_path):
    from robustmm import tuning
    from robustmm.tuning import pretraining

    stage = replace(TINY_STAGE, limit=8, batch_size=8)
    recipe = Recipe(model=TINY, pretrain=stage, objectives=IMAGE_OBJECTIVES, then_objectives=("caption", "infill-text"), then_epochs=1)
    seen, texts = [], tuning.pretraining_texts

    def spy(facts, rng, recipe, objectives=None):
        seen.append(tuple(objectives))
        return texts(facts, rng, recipe, objectives)

    monkeypatch.setattr(pretraining, "pretraining_texts", spy)
    stats = pretrain(recipe, tmp_path / "two")
    # a batch of 8 (image, objective) rows holds 8 // 5 = 1 image in phase 1 and 8 // 2 = 4 in phase 2
    assert [phase["steps"] for phase in stats["phases"]] == [8, 2] and stats["steps"] == 10
    assert seen == [IMAGE_OBJECTIVES] * 8 + [("caption", "infill-text")] * 2
    # the same as pretraining phase 1 alone, then pretraining that base on phase 2's objectives
    pretrain(replace(recipe, then_epochs=0), tmp_path / "one")
    first, _ = load_backbone(tmp_path / "one")
    monkeypatch.setattr(pretraining, "UnifiedBackbone", lambda config, table: first)
    pretrain(replace(recipe, objectives=recipe.then_objectives, then_epochs=0), tmp_path / "continued")
    two, continued = load_backbone(tmp_path / "two")[0].state_dict(), load_backbone(tmp_path / "continued")[0].state_dict()
    assert all(torch.equal(two[k], continued[k]) for k in two)
    assert not torch.equal(two["text_proj.weight"], load_backbone(tmp_path / "one")[0].state_dict()["text_proj.weight"])


def test_bf16_stages_run_their_forward_pass_under_autocast_and_fp32_is_the_default(monkeypatch, tmp_path):
    from robustmm import tuning
    from robustmm.tuning import pretraining

    with pytest.raises(RobustMMError, match="precision"):
        StageConfig(precision="fp16")
    recipe = Recipe(model=TINY, pretrain=replace(TINY_STAGE, limit=8, batch_size=8))
    stages = ("pretrain", "finetune", "prompt_tune", "finetune_ve", "prompt_tune_ve")
    assert {getattr(Recipe(), name).precision for name in stages} == {"fp32"}
    assert {getattr(recipe.in_precision("bf16"), name).precision for name in stages} == {"bf16"}
    seen, loss = [], tuning.generative_loss

    def spy(backbone, *rest):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return loss(backbone, *rest)

    monkeypatch.setattr(pretraining, "generative_loss", spy)
    half = pretrain(recipe.in_precision("bf16"), tmp_path / "bf16")
    assert seen == [torch.bfloat16] * half["steps"] and torch.isfinite(torch.tensor(half["final_loss"]))
    seen.clear()
    full = pretrain(recipe, tmp_path / "fp32")
    assert seen == [None] * full["steps"]
    a, b = load_backbone(tmp_path / "bf16")[0].state_dict(), load_backbone(tmp_path / "fp32")[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a), "bf16 autocast changed no weight"
    # downstream stages too: the candidate loss runs under autocast and the weights train
    calls, candidate_loss = [], pretraining.UnifiedVLM.loss

    def loss_spy(model, *args):
        calls.append(torch.is_autocast_enabled("cpu"))
        return candidate_loss(model, *args)

    monkeypatch.setattr(pretraining.UnifiedVLM, "loss", loss_spy)
    stats = finetune(tmp_path / "fp32", "easy-vqa", tmp_path / "ft", replace(TINY_STAGE, precision="bf16"))
    tuned = load_backbone(tmp_path / "ft")[0].state_dict()
    assert calls == [True] * stats["steps"] and any(not torch.equal(tuned[k], b[k]) for k in b)


def test_pretraining_shows_text_only_objectives_a_blank_image(monkeypatch, tmp_path):
    from robustmm import tuning
    from robustmm.tuning import pretraining

    seen, loss = [], tuning.generative_loss

    def spy(backbone, pixels, *rest):
        seen.append(pixels.detach().clone())
        return loss(backbone, pixels, *rest)

    monkeypatch.setattr(pretraining, "generative_loss", spy)
    recipe = Recipe(model=TINY, objectives=("caption", "infill-text"), pretrain=replace(TINY_STAGE, limit=8, batch_size=8))
    pretrain(recipe, tmp_path / "base")
    pixels = torch.cat(seen)  # rows alternate: caption (the image), infill-text (blank)
    assert pixels.shape[0] == 2 * 8 * TINY_STAGE.epochs
    assert (pixels[1::2] == 1.0).all() and (pixels[0::2] < 1.0).flatten(1).any(1).all()


@pytest.mark.parametrize("objectives", [IMAGE_OBJECTIVES, OBJECTIVES])
@pytest.mark.parametrize("weights", [None, (0.5, 0.3, 0.2)])
def test_pretraining_batches_pair_true_and_wrong_captions_in_one_form_when_weighted(weights, objectives):
    import random

    recipe = Recipe(match_form_weights=weights, mismatch_color_share=0.75, objectives=objectives)
    facts = [("circle", "red"), ("triangle", "blue")] * 200
    texts = pretraining_texts(facts, random.Random(0), recipe)
    assert len(texts) == len(facts) * len(recipe.objectives)
    match, mismatch = recipe.objectives.index("match"), recipe.objectives.index("mismatch")
    same_form = []
    for start in range(0, len(texts), len(recipe.objectives)):
        true, wrong = (texts[start + k][0].split('"')[1].split() for k in (match, mismatch))
        same_form.append(len(true) == len(wrong) and ("shape" in true) == ("shape" in wrong))
        if same_form[-1]:
            assert sum(a != b for a, b in zip(true, wrong)) == 1  # one wrong word
    assert all(same_form) == (weights is not None)  # independent forms differ for about 2/3 of the images


@pytest.mark.parametrize("always", ["yes", "no"])
def test_matching_breakdown_scores_each_caption_kind_against_its_gold_answer(tiny_pair_dir, monkeypatch, always):
    from robustmm import tuning
    from robustmm.tuning import pretraining

    asked = []

    def answer_always(model, images, texts, batch_size=256):
        asked.extend(texts)
        return [always] * len(texts)

    monkeypatch.setattr(pretraining, "predictions", answer_always)
    result = tuning.matching_breakdown(tiny_pair_dir / "base")
    true_kinds = {"full true", "color true", "shape true"}
    wrong_kinds = {"full wrong color", "full wrong shape", "color wrong", "shape wrong"}
    assert set(result) == true_kinds | wrong_kinds | {"overall"}
    assert all(result[kind] == (always == "yes") for kind in true_kinds)
    assert all(result[kind] == (always == "no") for kind in wrong_kinds)
    assert result["overall"] == 0.5  # (full true + mean of the full wrong) / 2
    assert len(asked) == 7 * len(tuning.pretraining_facts(split="test")[0])


def test_bad_prompt_config():
    with pytest.raises(RobustMMError, match="style"):
        PromptConfig(style="lora")
    with pytest.raises(RobustMMError, match="length"):
        PromptConfig(length=0)
    with pytest.raises(RobustMMError, match="init"):
        PromptConfig(init="zeros")


def test_generate_returns_text(tiny_vqa_model):
    out = tiny_vqa_model.generate(torch.rand(2, 3, 64, 64), ["what color is the shape?"] * 2, max_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_prompt_tuning_changes_only_prompts_and_finetuning_changes_backbone(tiny_pair_dir):
    base, _ = load_backbone(tiny_pair_dir / "base")
    tuned, _ = load_backbone(tiny_pair_dir / "easy-vqa" / "finetune")
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    assert any(not torch.equal(base_state[k], tuned_state[k]) for k in base_state), "finetuning changed nothing"
    prompted = load_model(tiny_pair_dir / "easy-vqa" / "prompt")
    for name, tensor in prompted.backbone.state_dict().items():
        assert torch.equal(tensor, base_state[name]), f"prompt tuning changed backbone tensor {name}"
    # the prompt checkpoint stores prompts only
    stored = json.loads((tiny_pair_dir / "easy-vqa" / "prompt" / "config.json").read_text())
    assert stored["kind"] == "prompt" and not (tiny_pair_dir / "easy-vqa" / "prompt" / "model.safetensors").exists()
    assert prompted.info.trainable_parameters == 2 * 4 * 32 * (1 + 1)  # (enc+dec layers) x K,V x length x dim
    assert prompted.info.trainable_parameters < 0.05 * prompted.info.total_parameters


def test_load_pair_checks(tiny_pair_dir, tmp_path):
    pair = load_pair(prompt_tuned=tiny_pair_dir / "easy-vqa" / "prompt", finetuned=tiny_pair_dir / "easy-vqa" / "finetune", device="cpu")
    assert pair.prompt_tuned.info.tuning == "prompt" and pair.finetuned.info.tuning == "finetune"
    with pytest.raises(RobustMMError, match="prompt-tuned and a finetuned"):
        load_pair(prompt_tuned=tiny_pair_dir / "easy-vqa" / "finetune", finetuned=tiny_pair_dir / "easy-vqa" / "finetune", device="cpu")
    with pytest.raises(RobustMMError, match="does not exist"):
        load_pair(prompt_tuned=tmp_path / "missing", finetuned=tiny_pair_dir / "easy-vqa" / "finetune", device="cpu")
    with pytest.raises(RobustMMError, match="Unknown pair"):
        load_pair("nonsense")


def test_activation_init_starts_prompts_at_the_bases_own_key_values(tiny_pair_dir, tmp_path):
    from safetensors.torch import load_file

    from robustmm.data import load_dataset
    from robustmm.models.lexicon import load_tokenizer
    from robustmm.models.unified import UnifiedVLM
    from robustmm.tuning import prompt_tune, real_activations

    config = PromptConfig(length=4, reparam=True, reparam_hidden=8, init="activations")
    base, _ = load_backbone(tiny_pair_dir / "base")
    train = load_dataset("easy-vqa", split="train", limit=16)
    model = UnifiedVLM(base, load_tokenizer(tiny_pair_dir / "base" / "vocab.txt"), train.task, train.candidates)
    start = real_activations(model, "easy-vqa", config, seed=0, n=16)
    c = base.config
    assert start["encoder"].shape == (4, c.encoder_layers * 2 * c.dim) and start["decoder"].shape == (4, c.decoder_layers * 2 * c.dim)
    # every encoder row's first-layer key is the key the base computes at one real position of the sample
    keys = []
    hook = base.encoder[0].attn.k.register_forward_hook(lambda m, args, out: keys.append(out))
    real_activations(model, "easy-vqa", config, seed=0, n=16)
    hook.remove()
    (all_keys,) = keys
    for row in start["encoder"][:, : c.dim]:
        assert (all_keys - row).abs().amax(dim=-1).min() == 0
    # at lr 0 the stored prompts are exactly that start (the learnt part starts at zero) ...
    prompt_tune(tiny_pair_dir / "base", "easy-vqa", tmp_path / "still", config, replace(TINY_STAGE, lr=0.0, limit=16))
    stored = load_file(str(tmp_path / "still" / "prompts.safetensors"))
    start = real_activations(model, "easy-vqa", config, seed=0)  # prompt_tune draws from 256 training examples
    assert all(torch.equal(stored[k], start[k]) for k in start)
    # ... and training moves them, with the same trainable parameters as a random start
    stats = prompt_tune(tiny_pair_dir / "base", "easy-vqa", tmp_path / "moved", config, replace(TINY_STAGE, lr=0.03, limit=16))
    moved = load_file(str(tmp_path / "moved" / "prompts.safetensors"))
    assert not torch.equal(moved["encoder"], start["encoder"])
    assert stats["trained_parameters"] == sum(p.numel() for p in PromptModule(
        replace(config, init="random"), c.dim, c.encoder_layers, c.decoder_layers).parameters())
    inputs = real_activations(model, "easy-vqa", replace(config, style="prompt"), seed=0, n=16)
    assert inputs["encoder"].shape == (4, c.dim) and inputs["decoder"].shape == (4, c.dim)


def test_a_moved_prompt_checkpoint_loads_with_its_base_given_or_from_the_shipped_pair(tiny_pair_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "prompt"
    shutil.copytree(tiny_pair_dir / "easy-vqa" / "prompt", moved)
    with pytest.raises(RobustMMError, match=r"does not exist; if it moved, pass its folder as base="):
        load_model(moved)
    model = load_model(moved, base=tiny_pair_dir / "base")
    original = load_model(tiny_pair_dir / "easy-vqa" / "prompt")
    assert model.info.base == original.info.base
    for (name, a), b in zip(model.state_dict().items(), original.state_dict().values()):
        assert torch.equal(a, b), name
    # the pair check still holds against the finetuned twin, and a wrong base is refused by its hash
    load_pair(prompt_tuned=moved, finetuned=tiny_pair_dir / "easy-vqa" / "finetune", device="cpu", base=tiny_pair_dir / "base")
    with pytest.raises(RobustMMError, match="sha256"):
        load_model(moved, base=tiny_pair_dir / "easy-vqa" / "finetune")
    # a finetuned checkpoint holds every weight: it loads without its base
    alone = tmp_path / "alone" / "finetune"
    shutil.copytree(tiny_pair_dir / "easy-vqa" / "finetune", alone)
    assert load_model(alone).info.base == original.info.base
    # a copied prompt folder whose base is the shipped default base finds it by its hash
    shipped = tmp_path / "copied" / "prompt"
    shutil.copytree(DEFAULT_PAIR_DIR / "easy-vqa" / "prompt", shipped)
    assert load_model(shipped).info.base == load_model(DEFAULT_PAIR_DIR / "easy-vqa" / "prompt").info.base


def test_base_hash_mismatch_and_corrupt_files(tiny_pair_dir, tmp_path):
    copy = tmp_path / "pair"
    shutil.copytree(tiny_pair_dir, copy)
    # a prompt checkpoint whose base changed is refused
    base_weights = copy / "base" / "model.safetensors"
    base_weights.write_bytes(base_weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(RobustMMError, match="sha256"):
        load_model(copy / "easy-vqa" / "prompt")
    # a corrupt weights file is named
    weights = copy / "easy-vqa" / "finetune" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(RobustMMError, match="corrupt"):
        load_backbone(copy / "easy-vqa" / "finetune")
    (copy / "easy-vqa" / "prompt" / "config.json").write_text("{broken")
    with pytest.raises(RobustMMError, match="not valid JSON"):
        load_model(copy / "easy-vqa" / "prompt")


def test_pair_whose_base_was_copied_to_another_folder_is_accepted(tiny_pair_dir, tmp_path):
    copy = tmp_path / "renamed-base"
    shutil.copytree(tiny_pair_dir / "base", copy)  # same weights (same sha256) under another folder name
    finetune(copy, "easy-vqa", tmp_path / "finetune", replace(TINY_STAGE, limit=16))
    pair = load_pair(prompt_tuned=tiny_pair_dir / "easy-vqa" / "prompt", finetuned=tmp_path / "finetune", device="cpu")
    assert pair.prompt_tuned.info.base != pair.finetuned.info.base  # the labels differ, the hashes do not


def test_pair_with_different_bases_is_refused(tiny_pair_dir, tmp_path):
    other = tmp_path / "other"
    recipe = Recipe(seed=1, model=TINY, pretrain=replace(TINY_STAGE, limit=32))
    pretrain(recipe, other / "base")
    finetune(other / "base", "easy-vqa", other / "easy-vqa" / "finetune", replace(TINY_STAGE, limit=16))
    with pytest.raises(RobustMMError, match="different base"):
        load_pair(prompt_tuned=tiny_pair_dir / "easy-vqa" / "prompt", finetuned=other / "easy-vqa" / "finetune", device="cpu")


DEFAULT = Path(__file__).resolve().parents[1] / "robustmm" / "checkpoints" / "default"


@pytest.mark.skipif(not (DEFAULT / "recipe.json").exists(), reason="the default pair has not been built")
@pytest.mark.parametrize("member", ["easy-vqa/finetune", "easy-vqa/prompt", "easy-ve/finetune", "easy-ve/prompt"])
def test_shipped_pair_has_its_documented_accuracy(member):
    from robustmm.data import load_dataset
    from robustmm.tuning import accuracy

    documented = json.loads((DEFAULT / "recipe.json").read_text())["accuracy"][member]
    dataset = load_dataset(member.split("/")[0], split="test", limit=documented["check_examples"], seed=documented["check_seed"])
    model = load_model(DEFAULT / member)
    assert abs(accuracy(model, dataset) - documented["check_accuracy"]) <= 0.01
    readme = (DEFAULT.parents[2] / "docs" / "models.md").read_text()
    assert f"{100 * documented['test_accuracy']:.1f}%" in readme, "docs/models.md must state the documented test accuracy"


@pytest.mark.skipif(not (DEFAULT / "recipe.json").exists(), reason="the default pair has not been built")
def test_shipped_pair_loads_as_a_checked_pair():
    for task in ("vqa", "ve"):
        pair = load_pair("default", task=task, device="cpu")
        assert pair.prompt_tuned.info.trainable_parameters <= 0.05 * pair.prompt_tuned.info.total_parameters


def test_tune_recipe_reuses_only_stages_made_with_the_same_settings(tmp_path):
    import json as _json
    from dataclasses import asdict

    from robustmm.tuning.pair import _stage

    folder = tmp_path / "easy-vqa" / "finetune"
    folder.mkdir(parents=True)
    stage = StageConfig(epochs=2, lr=1e-3)
    (folder / "config.json").write_text(_json.dumps({"stage": asdict(stage), "seed": 1, "stats": {"seconds": 5.0}}))
    ran = []
    assert _stage(folder, {"stage": asdict(stage), "seed": 1}, lambda: ran.append(1)) == {"seconds": 5.0, "reused": True}
    with pytest.raises(RobustMMError, match=r"other settings \(stage differ\)"):
        _stage(folder, {"stage": asdict(StageConfig(epochs=2, lr=3e-4)), "seed": 1}, lambda: ran.append(1))
    with pytest.raises(RobustMMError, match=r"seed differ"):
        _stage(folder, {"stage": asdict(stage), "seed": 2}, lambda: ran.append(1))
    assert _stage(tmp_path / "new", {}, lambda: {"trained": True}) == {"trained": True} and not ran
