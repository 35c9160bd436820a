"""Hugging Face ViLT / BLIP members and PEFT prompt adapters (``robustmm.models.hf``).

Offline and fast: tiny randomly initialised ViLT and BLIP models (hidden 32, one layer, a
40-word vocabulary written here, 32 x 32 images with 16 x 16 patches) are built from configs
and saved with their processors into a session folder; PEFT prompt adapters are made on them.
Nothing is downloaded (``HF_HUB_OFFLINE=1`` and ``local_files_only`` everywhere).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from robustmm.attacks import AttackBatch, get_attack, list_attacks  # noqa: E402
from robustmm.errors import RobustMMError  # noqa: E402
from robustmm.models.hf import BlipQA, ViltQA, load_hf_member, resolve_dtype  # noqa: E402
from robustmm.models.pair import load_member, load_pair  # noqa: E402
from robustmm.types import VE_LABELS, Example, Task  # noqa: E402

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] what color is the shape ? a an red blue green yes no maybe circle square "
         "how many there does image describe \" of , . 1 2 3 ##s two circles big small").split()
LABELS = ("red", "blue", "green", "yes", "no", "circle", "2")
BLIP_CANDIDATES = ("red", "blue", "yes", "no", "two circles")
TEXTS = ["what color is the shape?", "is there a circle?"]
S = 32  # image side


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: other jobs share the two cores


def _vocab(folder: Path, words=WORDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder / "vocab.txt"


def build_vilt(folder: Path, *, hidden: int = 32, labels=LABELS, words=WORDS, seed: int = 0) -> Path:
    """A tiny ViltForQuestionAnswering + ViltProcessor saved to ``folder``."""
    from transformers import BertTokenizer, ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tokenizer = BertTokenizer(str(_vocab(folder.parent / "_vocabs" / folder.name, words)))
    config = ViltConfig(vocab_size=len(words), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, image_size=S, patch_size=16, max_position_embeddings=40,
                        id2label=dict(enumerate(labels)), label2id={a: i for i, a in enumerate(labels)})
    torch.manual_seed(seed)
    ViltForQuestionAnswering(config).save_pretrained(folder)
    processor = ViltImageProcessor(size={"shortest_edge": S}, size_divisor=16, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ViltProcessor(processor, tokenizer).save_pretrained(folder)
    return folder


def build_blip(folder: Path, seed: int = 0) -> Path:
    """A tiny BlipForQuestionAnswering + BlipProcessor ([DEC] as the decoder start token) saved to ``folder``."""
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tokenizer = BertTokenizer(str(_vocab(folder.parent / "_vocabs" / folder.name)))
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    text = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                sep_token_id=tokenizer.sep_token_id, pad_token_id=0, encoder_hidden_size=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=S, patch_size=16)
    torch.manual_seed(seed)
    BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": S, "width": S}), tokenizer).save_pretrained(folder)
    return folder


def build_adapter(base: Path, folder: Path, family: str, tokens: int = 4, seed: int = 1, p_tuning: bool = False) -> Path:
    """A PEFT PromptTuning (or P-tuning) adapter on ``base`` (ViLT: SEQ_CLS, which also saves the classifier head)."""
    from peft import PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import BlipForQuestionAnswering, ViltForQuestionAnswering

    cls = ViltForQuestionAnswering if family == "vilt" else BlipForQuestionAnswering
    task = TaskType.SEQ_CLS if family == "vilt" else TaskType.FEATURE_EXTRACTION
    torch.manual_seed(seed)
    if p_tuning:
        config = PromptEncoderConfig(task_type=task, num_virtual_tokens=tokens, encoder_hidden_size=16)
    else:
        config = PromptTuningConfig(task_type=task, num_virtual_tokens=tokens, token_dim=32, num_transformer_submodules=1,
                                    num_attention_heads=2, num_layers=1)
    model = get_peft_model(cls.from_pretrained(base), config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    """vilt/, vilt-prompt/, blip/, blip-prompt/ and the mismatched variants used by the pair checks."""
    root = tmp_path_factory.mktemp("hf_models")
    build_vilt(root / "vilt")
    build_adapter(root / "vilt", root / "vilt-prompt", "vilt")
    build_adapter(root / "vilt", root / "vilt-ptune", "vilt", tokens=3, p_tuning=True)
    build_blip(root / "blip")
    build_adapter(root / "blip", root / "blip-prompt", "blip")
    build_vilt(root / "vilt-wide", hidden=48)
    build_vilt(root / "vilt-labels", labels=("cat", "dog", "green", "yes", "no", "circle", "2"))
    build_vilt(root / "vilt-vocab", words=WORDS[:-1] + ["huge"])
    return root


@pytest.fixture(scope="session")
def members(hf_dir):
    """The four tiny members, loaded once on CPU (fp32)."""
    return {
        "vilt": load_member(hf_dir / "vilt", torch.device("cpu")),
        "vilt-prompt": load_member(hf_dir / "vilt-prompt", torch.device("cpu")),
        "blip": load_member(hf_dir / "blip", torch.device("cpu"), candidates=BLIP_CANDIDATES),
        "blip-prompt": load_member(hf_dir / "blip-prompt", torch.device("cpu"), candidates=BLIP_CANDIDATES),
    }


def pixels(b: int = 2, seed: int = 0, size: int = S) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hf_normalised(model, x: torch.Tensor) -> torch.Tensor:
    return (x - model.mean) / model.std


# ---------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------


def test_vilt_scores_are_candidate_log_softmax_of_vilts_own_logits(hf_dir, members):
    from transformers import ViltForQuestionAnswering

    model = members["vilt"]
    assert isinstance(model, ViltQA) and model.candidates == LABELS and model.image_size == S
    x = pixels()
    scores = model.candidate_scores(x, TEXTS)
    assert scores.shape == (2, len(LABELS)) and scores.dtype == torch.float32
    assert torch.allclose(scores.exp().sum(dim=1), torch.ones(2), atol=1e-5)
    assert torch.equal(scores, model.candidate_scores(x, TEXTS))  # no multinomial patch sampling: bit-identical
    reference = ViltForQuestionAnswering.from_pretrained(hf_dir / "vilt").eval()
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = reference(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           pixel_values=hf_normalised(model, x)).logits
    assert torch.allclose(scores, logits.log_softmax(dim=-1), atol=1e-5)
    # a subset of the labels: log_softmax over the chosen logits only
    subset = load_hf_member(hf_dir / "vilt", "cpu", candidates=["no", "red"])
    assert torch.allclose(subset.candidate_scores(x, TEXTS), logits[:, [4, 0]].log_softmax(dim=-1), atol=1e-5)


@pytest.mark.parametrize("adapter, peft_type, tokens", [("vilt-prompt", "PROMPT_TUNING", 4), ("vilt-ptune", "P_TUNING", 3)])
def test_vilt_prompt_adapter_matches_peft_forward(hf_dir, members, adapter, peft_type, tokens):
    from peft import PeftModel
    from transformers import ViltForQuestionAnswering

    model = members.get(adapter) or load_member(hf_dir / adapter, torch.device("cpu"))
    assert model.info.tuning == "prompt" and model.prompt.shape == (tokens, 32) and model.info.extra["peft_type"] == peft_type
    peft_model = PeftModel.from_pretrained(ViltForQuestionAnswering.from_pretrained(hf_dir / "vilt"), hf_dir / adapter).eval()
    x = pixels()
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = peft_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                            token_type_ids=enc["token_type_ids"], pixel_values=hf_normalised(model, x)).logits
        scores = model.candidate_scores(x, TEXTS)
    assert torch.allclose(scores, logits.log_softmax(dim=-1), atol=1e-5)
    assert not torch.allclose(scores, members["vilt"].candidate_scores(x, TEXTS), atol=1e-4)  # the prompt matters


def test_blip_scores_are_decoder_log_likelihoods(hf_dir, members):
    from transformers import BlipForQuestionAnswering

    model = members["blip"]
    assert isinstance(model, BlipQA) and model.candidates == BLIP_CANDIDATES
    x = pixels()
    scores = model.candidate_scores(x, TEXTS)
    assert scores.shape == (2, len(BLIP_CANDIDATES)) and bool((scores < 0).all())
    # each score = -(mean token cross-entropy of [DEC] answer [SEP] under HF's own forward) x tokens
    reference = BlipForQuestionAnswering.from_pretrained(hf_dir / "blip").eval()
    enc = model.tokenizer(TEXTS[:1], return_tensors="pt")
    bos, eos = reference.config.text_config.bos_token_id, reference.config.text_config.sep_token_id
    for j, answer in enumerate(BLIP_CANDIDATES):
        labels = [bos] + model.tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
        with torch.no_grad():
            loss = reference(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=hf_normalised(model, x[:1]),
                             labels=torch.tensor([labels])).loss
        assert float(scores[0, j]) == pytest.approx(-float(loss) * (len(labels) - 1), abs=1e-4)
    # chunked no-grad decoding gives the same scores
    model.decoder_rows = 3
    try:
        with torch.no_grad():
            assert torch.allclose(model.candidate_scores(x, TEXTS), scores.detach(), atol=1e-5)
    finally:
        model.decoder_rows = BlipQA.decoder_rows


@pytest.mark.parametrize("name", ["vilt", "vilt-prompt", "blip", "blip-prompt"])
def test_gradients_flow_to_pixels_and_embeddings(members, name):
    model = members[name]
    x = pixels().requires_grad_(True)
    targets = model.target_indices([model.candidates[0], "not-a-candidate"])
    assert targets.tolist() == [0, -100]
    model.loss(x, TEXTS, targets).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    emb = model.embed(pixels(), model.encode_texts(TEXTS))
    image = emb.image.detach().requires_grad_(True)
    text = emb.text.detach().requires_grad_(True)
    assert image.shape[:2] == (2, (S // 16) ** 2) and text.shape[0] == 2 and text.shape[1] == emb.context["attention_mask"].shape[1]
    scores = model.scores_from_embeddings(type(emb)(image, text, emb.context))
    scores.logsumexp(dim=1).sum().backward()
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0


def test_preprocessing_resizes_and_normalises_inside(members, hf_dir):
    vilt, blip = members["vilt"], members["blip"]
    assert vilt.mean.flatten().tolist() == [0.5] * 3
    from transformers import BlipImageProcessor

    assert torch.allclose(blip.std.flatten(), torch.tensor(BlipImageProcessor().image_std))
    big = torch.nn.functional.interpolate(pixels(), size=(48, 48), mode="nearest")
    for model in (vilt, blip):
        assert model.candidate_scores(big, TEXTS).shape == (2, len(model.candidates))
    assert vilt.preprocess(pixels()).shape == (2, 3, S, S)


def test_unknown_words_and_tokenizer_id(members):
    assert members["vilt"].unknown_words(["red", "zebra", "circles"]) == [False, True, False]
    assert members["vilt"].tokenizer_id == members["vilt-prompt"].tokenizer_id


def test_text_reach_is_the_tokenizer_budget_minus_the_prompt(members):
    text = " ".join(["red"] * 200)
    plain, prompted = members["vilt"], members["vilt-prompt"]
    assert plain.text_reach("red circle") == len("red circle")
    assert text[:plain.text_reach(text)] == " ".join(["red"] * (plain.max_text_len - 2))  # [CLS] ... [SEP]
    assert text[:prompted.text_reach(text)] == " ".join(["red"] * (prompted.max_text_len - 2))
    assert prompted.max_text_len < plain.max_text_len


def test_candidates_and_tasks(hf_dir):
    with pytest.raises(RobustMMError, match="not in the ViLT model's answer vocabulary"):
        load_hf_member(hf_dir / "vilt", "cpu", candidates=["red", "purple"])
    with pytest.raises(RobustMMError, match="give candidates"):
        load_hf_member(hf_dir / "blip", "cpu")
    with pytest.raises(RobustMMError, match="'maybe'"):  # VE labels verbalised, and 'maybe' is no ViLT label here
        load_hf_member(hf_dir / "vilt", "cpu", task="ve")
    ve = load_hf_member(hf_dir / "blip", "cpu", task="ve")
    assert ve.info.task is Task.VE and ve.candidates == VE_LABELS
    assert ve.answer_text("neutral") == "maybe" and ve.template("two circles").startswith("does the image describe")
    assert ve.candidate_scores(pixels(), ["a red circle", "two circles"]).shape == (2, 3)


# ---------------------------------------------------------------------------
# pairs, folders, offline behaviour, dtype
# ---------------------------------------------------------------------------


def test_load_pair_of_hf_members(hf_dir):
    pair = load_pair(prompt_tuned=hf_dir / "vilt-prompt", finetuned=hf_dir / "vilt", device="cpu")
    p, f = pair.prompt_tuned.info, pair.finetuned.info
    assert (p.family, p.tuning, f.tuning) == ("vilt", "prompt", "finetune") and p.base == f.base
    assert 0 < p.trainable_parameters < f.trainable_parameters == f.total_parameters
    pair = load_pair(prompt_tuned=hf_dir / "blip-prompt", finetuned=hf_dir / "blip", device="cpu", candidates=BLIP_CANDIDATES)
    assert pair.candidates == BLIP_CANDIDATES and pair.prompt_tuned.info.trainable_parameters == 4 * 32


def _one_sentence(err) -> str:
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")
    return message


@pytest.mark.parametrize("finetuned, match", [
    ("vilt-wide", "different base checkpoints"),
    ("vilt-labels", "different answer sets"),
    ("vilt-vocab", "different tokenizers"),
    ("blip", "different model families"),
    ("vilt-prompt", "prompt-tuned and a finetuned"),
    ("missing", "does not exist"),
])
def test_mismatched_pairs_are_refused(hf_dir, finetuned, match):
    options = {"candidates": ["red", "blue"]} if finetuned == "blip" else {}
    with pytest.raises(RobustMMError, match=match) as err:
        load_pair(prompt_tuned=hf_dir / "vilt-prompt", finetuned=hf_dir / finetuned, device="cpu", **options)
    _one_sentence(err)


def test_hub_ids_resolve_from_the_cache_only(hf_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--robustmm-test--tiny-vilt" / "snapshots" / "0123456789abcdef"
    shutil.copytree(hf_dir / "vilt", snapshot)
    (cache / "models--robustmm-test--tiny-vilt" / "refs").mkdir()
    (cache / "models--robustmm-test--tiny-vilt" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = load_member("robustmm-test/tiny-vilt", torch.device("cpu"))
    assert model.info.name == "robustmm-test/tiny-vilt" and model.candidates == LABELS
    with pytest.raises(RobustMMError, match="neither a local folder nor a Hugging Face model in the local cache") as err:
        load_member("robustmm-test/not-cached", torch.device("cpu"))
    _one_sentence(err)
    # an adapter whose base is a cached Hub id
    adapter = tmp_path / "adapter"
    shutil.copytree(hf_dir / "vilt-prompt", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "robustmm-test/tiny-vilt"}))
    assert load_member(adapter, torch.device("cpu")).info.extra["base_model"] == "robustmm-test/tiny-vilt"
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "robustmm-test/gone"}))
    with pytest.raises(RobustMMError, match="Base model 'robustmm-test/gone' is neither"):
        load_member(adapter, torch.device("cpu"))


def test_unsupported_folders_and_adapters(hf_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RobustMMError, match="holds no config.json"):
        load_member(tmp_path / "empty", torch.device("cpu"))
    for peft_type, match in [("PREFIX_TUNING", "prefix tuning"), ("LORA", "not a prompt adapter")]:
        folder = tmp_path / peft_type
        shutil.copytree(hf_dir / "vilt-prompt", folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": peft_type}))
        with pytest.raises(RobustMMError, match=match):
            load_member(folder, torch.device("cpu"))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(RobustMMError, match=r"'bert' model; robustmm supports vilt, blip, llava \(llava\), llava-next"):
        load_member(other, torch.device("cpu"))


def test_dtype_rules():
    assert resolve_dtype("fp32", torch.device("cpu")) is torch.float32
    with pytest.raises(RobustMMError, match="needs a CUDA device"):
        resolve_dtype("bf16", torch.device("cpu"))
    with pytest.raises(RobustMMError, match="Unknown dtype"):
        resolve_dtype("float16", torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_cuda_returns_fp32_scores_and_pixel_gradients(hf_dir):
    for path, options in [(hf_dir / "vilt-prompt", {}), (hf_dir / "blip", {"candidates": BLIP_CANDIDATES})]:
        model = load_member(path, torch.device("cuda"), dtype="bf16", **options)
        assert model.model_dtype is torch.bfloat16
        x = pixels().cuda().requires_grad_(True)
        scores = model.candidate_scores(x, TEXTS)
        assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
        scores[:, 0].sum().backward()
        assert x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0
        result = get_attack("pgd-linf", steps=2).run(model, AttackBatch([Example(f"ex{i}", None, t, ("red",), Task.VQA) for i, t in enumerate(TEXTS)], x.detach(),
                                                              TEXTS, model.target_indices(["red", "no"])))
        assert result.pixels.dtype == torch.float32 and result.scores.dtype == torch.float32


# ---------------------------------------------------------------------------
# every registered attack on every tiny member
# ---------------------------------------------------------------------------

FAST = {"pgd-linf": {"steps": 3}, "pgd-l2": {"steps": 3}}


@pytest.mark.parametrize("attack_name", list_attacks())
@pytest.mark.parametrize("name", ["vilt", "vilt-prompt", "blip", "blip-prompt"])
def test_every_attack_runs_on_hf_members(members, name, attack_name):
    model = members[name]
    answers = [model.candidates[0], model.candidates[1]]
    examples = [Example(f"ex{i}", None, text, (answer,), Task.VQA) for i, (text, answer) in enumerate(zip(TEXTS, answers))]
    batch = AttackBatch(examples, pixels(), list(TEXTS), model.target_indices(answers))
    attack = get_attack(attack_name, **FAST.get(attack_name, {}))
    try:
        result = attack.run(model, batch)
    except RobustMMError as err:
        if attack.modality == "text" and any(w in str(err).lower() for w in ("resource", "wordnet", "minilm", "install", "offline")):
            pytest.skip(f"{attack_name} needs text resources: {err}")
        raise
    assert result.pixels.shape == batch.pixels.shape and float(result.pixels.min()) >= 0 and float(result.pixels.max()) <= 1
    assert result.scores.shape == (2, len(model.candidates)) and torch.isfinite(result.scores).all()
    assert len(result.texts) == 2 and len(result.info) == 2
    if attack.modality == "image" and hasattr(attack.config, "eps"):
        eps = attack.config.eps
        limit = max(i["linf"] for i in result.info) if attack_name != "pgd-l2" else max(i["l2"] for i in result.info)
        assert limit <= eps + 1e-5
    assert all(p.grad is None for p in model.parameters())
