"""VLM members (``robustmm.models.vlm.members``): PEFT adapters of every kind against PEFT's own forward, M²PT
prompts (trained with ``robustmm tune prompt --style m2pt`` and attacked), pairs, bad input, memory options,
``robustmm make-tiny`` and the Pillow-exact resize. Offline, on tiny random checkpoints built per session."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from robustmm.errors import RobustMMError  # noqa: E402
from robustmm.models.pair import load_member, load_pair  # noqa: E402
from robustmm.models.vlm.members import load_vlm_member  # noqa: E402
from conftest import tiny_vlm  # noqa: E402

CANDIDATES = ("red", "blue", "yes", "no", "green triangle")
TEXTS = ["what color is the shape?", "is there a green triangle?"]
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: other jobs share the two cores


def pixels(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1] on the uint8 grid (so a PIL copy of it is exact)."""
    arrays = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def peft_scores(peft_model, model, x: torch.Tensor, texts) -> torch.Tensor:
    """(B, C) candidate log-likelihoods under PEFT's own forward of a LLaVA adapter (processor inputs, teacher forcing)."""
    import transformers
    from PIL import Image

    processor = transformers.AutoProcessor.from_pretrained(model.info.extra.get("base_model") or model.info.extra["path"], use_fast=False)
    out = torch.zeros(len(texts), len(model.candidates))
    for i, text in enumerate(texts):
        image = Image.fromarray((x[i].permute(1, 2, 0) * 255).round().byte().numpy())
        one = processor(text=[model.format.render([text], "<image>")[0].text], images=[image], return_tensors="pt")
        for j, candidate in enumerate(model.candidates):
            answer = torch.tensor([model.format.answer_ids(candidate)])
            full = torch.cat([one["input_ids"], answer], 1)
            with torch.no_grad():
                logits = peft_model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=one["pixel_values"]).logits.float()
            logits = logits[:, logits.shape[1] - full.shape[1]:]  # prompt tuning returns the virtual tokens' logits too
            start = one["input_ids"].shape[1]
            out[i, j] = logits[0, start - 1 : -1].log_softmax(-1).gather(1, answer[0][:, None]).sum()
    return out


def save_adapter(base: Path, folder: Path, config, randomise) -> Path:
    """A PEFT adapter of ``config`` on the LLaVA ``base``, its weights set by ``randomise(peft_model)``."""
    import transformers
    from peft import get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(transformers.AutoModelForImageTextToText.from_pretrained(base), config)
    with torch.no_grad():
        randomise(peft_model)
    peft_model.save_pretrained(folder)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": str(base)}))
    return folder


# ---------------------------------------------------------------------------
# PEFT adapters
# ---------------------------------------------------------------------------


def _prefix(peft_model):
    table = peft_model.prompt_encoder["default"].embedding.weight
    table.copy_(torch.randn_like(table) * 0.5)


def _ia3(peft_model):
    for name, p in peft_model.named_parameters():
        if "ia3_l" in name:
            p.copy_(torch.randn_like(p) * 0.3 + 1.0)


@pytest.mark.parametrize("kind", ["prompt", "lora", "prefix", "ia3"])
def test_peft_members_equal_pefts_own_forward(tmp_path_factory, tmp_path, kind):
    """Prompt tuning (virtual tokens at the input), prefix tuning (per-layer keys/values), LoRA and IA³ (merged into the
    weights) give the candidate log-likelihoods of PEFT's forward, and record their trainable share."""
    from peft import IA3Config, PeftModel, PrefixTuningConfig, TaskType
    import transformers

    root = tiny_vlm(tmp_path_factory, "llava")
    base = root / "model"
    folder = {"prompt": root / "prompt", "lora": root / "lora"}.get(kind)
    if kind == "prefix":
        folder = save_adapter(base, tmp_path / kind, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4), _prefix)
    if kind == "ia3":
        config = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=r".*language_model.*\.(k_proj|v_proj|down_proj)",
                           feedforward_modules=r".*language_model.*\.down_proj")
        folder = save_adapter(base, tmp_path / kind, config, _ia3)
    model = load_member(folder, CPU, candidates=CANDIDATES)
    info = model.info
    assert info.family == "llava" and info.tuning == ("prompt" if kind in ("prompt", "prefix") else "finetune")
    assert info.extra["peft_type"] == {"prompt": "PROMPT_TUNING", "lora": "LORA", "prefix": "PREFIX_TUNING", "ia3": "IA3"}[kind]
    assert 0 < info.trainable_parameters < info.total_parameters and info.trainable_share < 0.01
    assert info.extra["base_weights"] == load_member(root / "prompt", CPU, candidates=CANDIDATES).info.extra["base_weights"]
    peft_model = PeftModel.from_pretrained(transformers.AutoModelForImageTextToText.from_pretrained(base), str(folder)).eval()
    x = pixels()
    with torch.no_grad():
        ours = model.candidate_scores(x, TEXTS)
    assert torch.allclose(ours, peft_scores(peft_model, model, x, TEXTS), atol=1e-4)
    plain = load_member(base, CPU, candidates=CANDIDATES)
    with torch.no_grad():
        assert not torch.allclose(ours, plain.candidate_scores(x, TEXTS), atol=1e-3)  # the adapter matters


# ---------------------------------------------------------------------------
# M²PT
# ---------------------------------------------------------------------------


def _train_m2pt(base: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustmm.cli", "tune", "prompt", "--style", "m2pt", "--base", str(base),
                           "--dataset", "easy-vqa", "--out", str(out), "--limit", "8", "--epochs", "3", "--lr", "0.05",
                           "--visual-length", "4", "--length", "4", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
def test_m2pt_trains_and_is_attacked(tmp_path_factory, tmp_path, family):
    """M²PT prompts train on the frozen base (LLaVA through `robustmm tune prompt --style m2pt`, Qwen2-VL by
    ``m2pt_tune`` in-process, the same settings): the gold answers of the training examples become more likely; the
    saved member loads, scores the same in a batch as one by one (Qwen2-VL: prompts per packed image), pairs with the
    LoRA member and runs FGSM and the embedding FGSM."""
    from robustmm.attacks import get_attack
    from robustmm.data import load_dataset
    from robustmm.data.images import to_tensor
    from robustmm.evaluate import evaluate
    from robustmm.tuning.m2pt import DEFAULT_STAGE, M2PTSettings, m2pt_tune

    root = tiny_vlm(tmp_path_factory, family)
    if family == "llava":
        done = _train_m2pt(root / "model", tmp_path / "m2pt")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "M²PT prompts in" in done.stdout
    else:
        stage = dataclasses.replace(DEFAULT_STAGE, limit=8, epochs=3, lr=0.05)
        m2pt_tune(root / "model", "easy-vqa", tmp_path / "m2pt", M2PTSettings(visual_tokens=4, text_tokens=4), stage)
    config = json.loads((tmp_path / "m2pt" / "m2pt_config.json").read_text())
    assert config["family"] == family and config["visual_tokens"] == 4 and config["text_tokens"] == 4 and config["visual_layers"] >= 1
    train = load_dataset("easy-vqa", split="train", limit=8, seed=0)
    member = load_member(tmp_path / "m2pt", CPU, candidates=train.candidates)
    base = load_member(root / "model", CPU, candidates=train.candidates)
    assert member.info.tuning == "prompt" and member.info.extra["peft_type"] == "M2PT"
    assert member.info.trainable_parameters == 4 * config["visual_layers"] * member.family.vision_dim + 4 * 32
    x = to_tensor([e.image for e in train], member.image_size)
    targets = member.target_indices([e.label for e in train])
    with torch.no_grad():
        trained = member.gold_log_likelihood(x, member.encode_texts([e.text for e in train]), targets).mean()
        before = base.gold_log_likelihood(x, base.encode_texts([e.text for e in train]), targets).mean()
        assert float(trained) > float(before)
        batch = member.candidate_scores(x[:3], [e.text for e in train][:3])
        alone = torch.cat([member.candidate_scores(x[i : i + 1], [train[i].text]) for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-4)
    pair = load_pair(prompt_tuned=tmp_path / "m2pt", finetuned=root / "lora", device="cpu", candidates=train.candidates)
    test = load_dataset("easy-vqa", split="test", limit=2, seed=0)
    records = evaluate(pair, test, [get_attack("fgsm"), get_attack("embed-fgsm")], batch_size=2).records
    assert len(records) == 2 * 2 * len(test)


def test_m2pt_visual_prompts_keep_the_feature_count(tmp_path_factory):
    """Visual prompts enter the first k vision layers and leave before the features are read: same number of image
    features, different values; a model holding them refuses another set."""
    from robustmm.models.vlm.m2pt import M2PTPrompts

    for family in ("llava", "blip2"):
        model = load_vlm_member(tiny_vlm(tmp_path_factory, family) / "model", CPU, candidates=CANDIDATES)
        inputs = model.preprocess(pixels())
        with torch.no_grad():
            plain = model.family.image_features(inputs)
            prompts = M2PTPrompts(model.family.prompt_layers_limit(), 3, model.family.vision_dim, 2, 32)
            prompts.initialise(model.model.get_input_embeddings().weight, torch.Generator().manual_seed(0))
            model.attach_m2pt(prompts)
            prompted = model.family.image_features(inputs)
        assert prompted.shape == plain.shape and float((prompted - plain).abs().max()) > 1e-6
        with pytest.raises(RobustMMError, match="already has learned prompts"):
            model.attach_m2pt(prompts)


# ---------------------------------------------------------------------------
# pairs and bad input
# ---------------------------------------------------------------------------


def _one_sentence(err) -> str:
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_pairs_of_members_on_different_bases_are_refused(tmp_path_factory):
    """Same architecture, different base weights (another seed): two members on those bases are not a pair."""
    one, other = tiny_vlm(tmp_path_factory, "llava"), tiny_vlm(tmp_path_factory, "llava", seed=1)
    pair = load_pair(prompt_tuned=one / "prompt", finetuned=one / "lora", device="cpu", candidates=CANDIDATES)
    assert pair.prompt_tuned.info.base == pair.finetuned.info.base
    with pytest.raises(RobustMMError, match="sit on different base checkpoints") as err:
        load_pair(prompt_tuned=one / "prompt", finetuned=other / "lora", device="cpu", candidates=CANDIDATES)
    _one_sentence(err)
    with pytest.raises(RobustMMError, match="different model families") as err:
        load_pair(prompt_tuned=one / "prompt", finetuned=tiny_vlm(tmp_path_factory, "blip2") / "model", device="cpu", candidates=CANDIDATES)


def test_bad_input_is_one_sentence(tmp_path_factory, tmp_path):
    root = tiny_vlm(tmp_path_factory, "llava")
    unsupported = tmp_path / "next"
    unsupported.mkdir()
    (unsupported / "config.json").write_text(json.dumps({"model_type": "llava_onevision"}))
    with pytest.raises(RobustMMError, match=r"'llava_onevision' model; robustmm supports vilt, blip, llava \(llava\), llava-next") as err:
        load_member(unsupported, CPU, candidates=CANDIDATES)
    _one_sentence(err)
    orphan = tmp_path / "orphan"
    shutil.copytree(root / "prompt", orphan)
    config = json.loads((orphan / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "robustmm-test/not-cached"}))
    with pytest.raises(RobustMMError, match="Base model 'robustmm-test/not-cached' is neither a local folder nor") as err:
        load_member(orphan, CPU, candidates=CANDIDATES)
    _one_sentence(err)
    with pytest.raises(RobustMMError, match="give candidates") as err:
        load_member(root / "model", CPU)
    _one_sentence(err)
    with pytest.raises(RobustMMError, match="longest candidate answer takes") as err:
        load_member(root / "model", CPU, candidates=["red", " ".join(["red"] * 600)])
    _one_sentence(err)
    model = load_member(root / "model", CPU, candidates=CANDIDATES)
    with pytest.raises(RobustMMError, match="exceeds .* context of 512 tokens") as err:
        model.candidate_scores(pixels(1), [" ".join(["what"] * 500)])
    _one_sentence(err)
    with pytest.raises(RobustMMError, match="bfloat16 needs a CUDA device"):
        load_member(root / "model", CPU, dtype="bf16", candidates=CANDIDATES)


def test_a_processor_without_chat_template_gets_the_stated_fallback(tmp_path_factory, tmp_path):
    root = tiny_vlm(tmp_path_factory, "llava")
    bare = tmp_path / "bare"
    shutil.copytree(root / "model", bare)
    (bare / "chat_template.jinja").unlink()
    tokenizer_config = json.loads((bare / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    model = load_member(bare, CPU, candidates=CANDIDATES)
    fallback = "fallback: <image>\n{question}\nAnswer the question using a single word or phrase.\nAnswer:"
    assert model.info.extra["prompt"] == fallback
    assert model.candidate_scores(pixels(), TEXTS).shape == (2, len(CANDIDATES))
    ve = load_member(root / "model", CPU, task="ve")
    assert ve.candidates == ("entailment", "neutral", "contradiction") and ve.format.answer_text("neutral") == "maybe"
    assert 'Does the image describe "two circles"?' in ve.format.render(["two circles"], "<image>")[0].text


# ---------------------------------------------------------------------------
# memory options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
def test_gradient_checkpointing_and_chunks_change_nothing(tmp_path_factory, family):
    folder = tiny_vlm(tmp_path_factory, family) / "prompt"
    plain = load_member(folder, CPU, candidates=CANDIDATES)
    lean = load_member(folder, CPU, candidates=CANDIDATES, vlm={"gradient_checkpointing": True, "memory_mb": 1e-6})
    assert lean.info.extra["gradient_checkpointing"] and lean._rows_per_chunk is not None
    grads = []
    for model in (plain, lean):
        x = pixels(size=model.image_size).requires_grad_(True)
        scores = model.candidate_scores(x, TEXTS)
        scores.logsumexp(dim=1).sum().backward()
        grads.append((scores.detach(), x.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_out_of_memory_halves_the_batch(tmp_path_factory, monkeypatch):
    model = load_member(tiny_vlm(tmp_path_factory, "blip2") / "model", CPU, candidates=CANDIDATES)
    x = pixels(4)
    texts = TEXTS * 2
    with torch.no_grad():
        expected = model.candidate_scores(x, texts)
    score = model._score

    def small_gpu(inputs, text_inputs):
        if text_inputs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return score(inputs, text_inputs)

    monkeypatch.setattr(model, "_score", small_gpu)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with torch.no_grad():
        assert torch.allclose(model.candidate_scores(x, texts), expected, atol=1e-5)
    assert model.info.extra["scoring_batch"] == 1


# ---------------------------------------------------------------------------
# make-tiny and resize
# ---------------------------------------------------------------------------


def test_make_tiny_command(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "robustmm.cli", "make-tiny", *args], capture_output=True,
                                       text=True, timeout=300)
    done = run("--family", "blip2", "--out", str(tmp_path / "blip2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in (tmp_path / "blip2").iterdir()} == {"model", "prompt", "lora", "README.md"}
    refused = run("--family", "llava-onevision", "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "Unknown tiny family 'llava-onevision': choose from llava, llava-next, paligemma" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("resample", ["bicubic", "lanczos", "bilinear", "box", "hamming", "nearest"])
def test_resize_matches_pillow(resample):
    """Within 1.2 uint8 steps on random noise (the worst case), up and down, any aspect ratio."""
    from PIL import Image

    from robustmm.models.vlm.resize import PIL_CODES, pil_resize

    code = {name: value for value, name in PIL_CODES.items()}[resample]
    array = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x = torch.from_numpy(array).permute(2, 0, 1).double() / 255
    for size in [(64, 80), (20, 16), (37, 20), (112, 112)]:
        reference = np.asarray(Image.fromarray(array).resize((size[1], size[0]), code), dtype=np.float64) / 255
        ours = pil_resize(x, size, resample).permute(1, 2, 0).numpy()
        assert np.abs(ours - reference).max() * 255 <= 1.2
    assert pil_resize(x, (37, 53), resample) is x


def test_benchmark_script_runs_on_a_tiny_config():
    """benchmarks/bench_vlm.py (made for a ~1B LLaVA on a GPU) runs end to end on its tiny preset."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vlm.py"
    spec = importlib.util.spec_from_file_location("bench_vlm", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--preset", "tiny", "--n", "2", "--batch-size", "2", "--device", "cpu", "--threads", "0"])
    assert set(results) == {"clean", "pgd-10", "word-sub", "pgd-10, gradient checkpointing"}
    assert all(rate > 0 and peak is None for rate, peak in results.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["llava", "qwen2-vl", "idefics3", "paligemma", "blip2"])
def test_bf16_on_cuda_scores_in_fp32_and_pgd_keeps_its_budget(tmp_path_factory, family):
    from robustmm.attacks import AttackBatch, get_attack
    from robustmm.types import Example, Task

    cuda = torch.device("cuda")
    model = load_member(tiny_vlm(tmp_path_factory, family) / "prompt", cuda, dtype="bf16", candidates=CANDIDATES)
    reference = load_member(tiny_vlm(tmp_path_factory, family) / "prompt", cuda, candidates=CANDIDATES)
    assert model.model_dtype is torch.bfloat16
    x = pixels(size=model.image_size).cuda().requires_grad_(True)
    scores = model.candidate_scores(x, TEXTS)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    with torch.no_grad():
        assert (scores - reference.candidate_scores(x, TEXTS)).abs().max() < 0.5  # bf16 rounding only
    scores[:, 0].sum().backward()
    assert x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0
    examples = [Example(f"ex{i}", None, t, ("red",), Task.VQA) for i, t in enumerate(TEXTS)]
    result = get_attack("pgd-linf", steps=2).run(model, AttackBatch(examples, x.detach(), TEXTS, model.target_indices(["red", "no"])))
    assert result.pixels.dtype == torch.float32 and (result.pixels - x.detach()).abs().max() <= 8 / 255 + 1e-6


def test_member_table_for_the_report():
    """robustmm.models.describe.member_table: what the report should state about each member (prompt fallback included)."""
    from robustmm.models.base import ModelInfo
    from robustmm.models.describe import member_table
    from robustmm.types import Task

    prompt = ModelInfo("llava-m2pt", "llava", "prompt", Task.VQA, "llava@abc", 512, 2_000_512,
                       {"peft_type": "M2PT", "base_model": "llava-hf/llava-1.5-7b-hf", "prompt": "chat template",
                        "dtype": "bfloat16", "image_size": 336, "answer_end": "</s>", "scoring_batch": 4})
    finetuned = ModelInfo("blip2", "blip2", "finetune", Task.VQA, "blip2@def", 10, 10,
                          {"prompt": "fallback: Question: {question} Answer:"})
    lines = member_table({"prompt": prompt, "finetune": finetuned})
    assert lines[0].startswith("| member | model | family | tuning |") and len(lines) == 4
    assert lines[2] == ("| prompt | llava-m2pt | llava | prompt (M2PT) | 512 of 2,000,512 (0.0256%) | llava-hf/llava-1.5-7b-hf | "
                        "chat template | bfloat16; 336 px images; answers end with `</s>`; out of GPU memory: scored 4 examples at a time |")
    assert lines[3] == "| finetune | blip2 | blip2 | finetune | 10 of 10 (100%) | blip2@def | fallback: Question: {question} Answer: |  |"
