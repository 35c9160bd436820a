"""The VLM families (``robustmm.models.vlm``) on tiny random checkpoints, against transformers' own processors
and models: preprocessing, prompt ids, candidate scores, constrained and greedy generation, embeddings, and the
attack suite through the runner.

Each family's tiny checkpoint (``robustmm make-tiny``: hidden width 32, two layers, the project's 30,522-word
vocabulary) is built once per session, offline. Processors are built from the saved parts (Qwen2-VL's processor
class needs a torchvision video processor, so its parity check uses the processor's own ``__call__`` with the
class check relaxed).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import tiny_vlm  # noqa: E402
from robustmm.models.vlm.tiny import TINY_FAMILIES  # noqa: E402

CANDIDATES = ("red", "blue", "circle", "yes", "no", "green triangle")
RESIZED_AT_WORKING_SIZE = ("idefics3", "llava-next")  # their processors resample even an image of the working size
TEXTS = ["what color is the shape?", "is there a green triangle in the image?"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: other jobs share the two cores


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """family -> (folder, GenerativeVLM of model/ with CANDIDATES); loaded once per family."""
    from robustmm.models.vlm.members import load_vlm_member

    cache = {}

    def get(family):
        if family not in cache:
            root = tiny_vlm(tmp_path_factory, family)
            cache[family] = (root, load_vlm_member(root / "model", "cpu", candidates=CANDIDATES))
        return cache[family]

    return get


def processor_of(family: str, folder):
    """The family's HF processor over the saved image processor and tokenizer."""
    import transformers

    images = transformers.AutoImageProcessor.from_pretrained(folder, use_fast=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    if family == "qwen2-vl":
        from transformers.processing_utils import ProcessorMixin

        check = ProcessorMixin.check_argument_for_proper_class
        ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: type(arg)
        try:
            return transformers.Qwen2VLProcessor(images, tokenizer, video_processor=None, chat_template=tokenizer.chat_template)
        finally:
            ProcessorMixin.check_argument_for_proper_class = check
    if family == "paligemma":
        return transformers.PaliGemmaProcessor(images, tokenizer)
    if family == "blip2":
        return transformers.Blip2Processor(images, tokenizer, num_query_tokens=4)
    return transformers.AutoProcessor.from_pretrained(folder, use_fast=False)


def images(size: int, n: int = 2, seed: int = 0):
    """n random uint8 PIL images of size x size and the same as a (n, 3, size, size) float tensor in [0, 1]."""
    from PIL import Image

    arrays = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return [Image.fromarray(a) for a in arrays], torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def processor_prompt(model, text: str) -> str:
    """The text a user gives the family's processor for ``text`` (what robustmm renders, placeholder unexpanded)."""
    rendered = model.format.render([text], model.family.image_token if model.family.image_in_text else "")[0].text
    if model.family.name == "paligemma":  # PaliGemmaProcessor adds the image tokens, BOS and the final newline itself
        rendered = rendered.replace(model.family.image_token, "").rstrip("\n")
    return rendered


def processed(family, processor, model, text, image):
    out = processor(text=[processor_prompt(model, text)], images=[[image]] if family == "idefics3" else [image], return_tensors="pt")
    out.pop("token_type_ids", None)
    return out


# ---------------------------------------------------------------------------
# against the processors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_torch_preprocessing_equals_the_processor(loaded, family):
    """The torch pipeline gives the processor's pixel_values: exactly at the working size, within 1.5 uint8 steps
    (of the [0, 1] image, before normalisation) when it resizes (Pillow rounds to uint8 between and after its
    passes; Idefics3 resizes twice; LLaVA-NeXT's base view is always a resize)."""
    import transformers

    folder, model = loaded(family)
    processor = transformers.AutoImageProcessor.from_pretrained(folder / "model", use_fast=False)
    step = 1 / 255 / min(processor.image_std)  # one uint8 step in normalised units
    for size, tolerance in [(model.image_size, 1.5 if family in RESIZED_AT_WORKING_SIZE else 0.0), (48, 1.5), (100, 1.5)]:
        pil, pixels = images(size, n=1, seed=size)
        reference = processor(images=[[pil[0]]] if family == "idefics3" else pil, return_tensors="pt")["pixel_values"]
        ours = model.preprocess(pixels).values
        assert ours.numel() == reference.numel()
        assert float((ours.reshape(reference.shape) - reference).abs().max()) <= tolerance * step + 1e-6, (family, size)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_prompt_ids_and_question_tokens_equal_the_processor(loaded, family):
    folder, model = loaded(family)
    processor = processor_of(family, folder / "model")
    pil, _ = images(model.image_size)
    encoded = model.encode_texts(TEXTS)
    for i, text in enumerate(TEXTS):
        reference = processed(family, processor, model, text, pil[i])["input_ids"][0]
        ours = encoded["input_ids"][i][encoded["attention_mask"][i].bool()]
        assert ours.tolist() == reference.tolist()
        question = model.tokenizer.convert_ids_to_tokens(encoded["input_ids"][i][encoded["question_mask"][i]])
        assert question == model.tokenizer.tokenize(text)
    if family in ("paligemma", "blip2"):
        assert model.info.extra["prompt"].startswith("fallback: ")
    else:
        assert model.info.extra["prompt"] == "chat template"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_scores_are_the_models_own_answer_log_likelihoods(loaded, family):
    """Each score is the sum of the answer tokens' (and end token's) log-probabilities under the HF model's own
    forward on the processor's inputs (teacher forcing; PaliGemma with its prefix-LM mask via token types)."""
    folder, model = loaded(family)
    processor = processor_of(family, folder / "model")
    pil, _ = images(model.image_size)
    inputs = [processed(family, processor, model, t, p) for t, p in zip(TEXTS, pil)]
    with torch.no_grad():
        ours = model.candidate_scores(images(model.image_size)[1], TEXTS)
        for i, one in enumerate(inputs):
            ids = one["input_ids"]
            for j, candidate in enumerate(CANDIDATES):
                answer = torch.tensor([model.format.answer_ids(candidate)])
                full = torch.cat([ids, answer], dim=1)
                extra = {k: v for k, v in one.items() if k not in ("input_ids", "attention_mask")}
                if family == "paligemma":
                    extra.update(token_type_ids=torch.cat([torch.zeros_like(ids), torch.ones_like(answer)], 1), labels=full)
                logits = model.model(input_ids=full, attention_mask=torch.ones_like(full), **extra).logits.float()
                reference = logits[0, ids.shape[1] - 1 : -1].log_softmax(-1).gather(1, answer[0][:, None]).sum()
                # Idefics3's and LLaVA-NeXT's torch views differ from the processor's by < 1.5 uint8 steps (test above)
                assert float(ours[i, j]) == pytest.approx(float(reference), abs=2e-3 if family in RESIZED_AT_WORKING_SIZE else 1e-4)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_top_candidate_is_what_constrained_generate_produces(loaded, family):
    """Beam search over the candidates' token trie (as many beams as candidates, no length penalty) finds the
    candidate of highest total log-probability: the argmax of ``candidate_scores``, with the same score."""
    folder, model = loaded(family)
    processor = processor_of(family, folder / "model")
    pil, pixels = images(model.image_size, seed=3)
    answers = [model.format.answer_ids(c) for c in CANDIDATES]
    with torch.no_grad():
        scores = model.candidate_scores(pixels, TEXTS)
    for i, text in enumerate(TEXTS):
        one = processed(family, processor, model, text, pil[i])
        start = one["input_ids"].shape[1]

        def allowed(batch_id, sequence, start=start):
            done = sequence[start:].tolist()
            return sorted({a[len(done)] for a in answers if len(a) > len(done) and a[: len(done)] == done}) or [answers[0][-1]]

        out = model.model.generate(**one, prefix_allowed_tokens_fn=allowed, num_beams=len(CANDIDATES), do_sample=False,
                                   length_penalty=0.0, early_stopping=True, max_new_tokens=max(map(len, answers)),
                                   output_scores=True, return_dict_in_generate=True)
        best = int(scores[i].argmax())
        assert out.sequences[0, start:].tolist()[: len(answers[best])] == answers[best]
        assert float(out.sequences_scores[0]) == pytest.approx(float(scores[i, best]), abs=2e-3)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_greedy_answers_equal_hf_generate(loaded, family):
    folder, model = loaded(family)
    processor = processor_of(family, folder / "model")
    pil, pixels = images(model.image_size, seed=4)
    ours = model.generate_answers(pixels, TEXTS, max_new_tokens=4)
    for i, text in enumerate(TEXTS):
        one = processed(family, processor, model, text, pil[i])
        out = model.model.generate(**one, do_sample=False, num_beams=1, max_new_tokens=4)
        expected = model.tokenizer.decode(out[0, one["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert ours[i] == expected


# ---------------------------------------------------------------------------
# the VLModel interface
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batches_embeddings_and_gradients(loaded, family):
    """Scores do not depend on the batch (left padding, per-row positions); embed + scores_from_embeddings gives
    candidate_scores; gradients reach pixels, patch embeddings and the question's word embeddings only."""
    _, model = loaded(family)
    _, pixels = images(model.image_size, n=3, seed=5)
    texts = TEXTS + ["how many shapes?"]
    with torch.no_grad():
        batch = model.candidate_scores(pixels, texts)
        alone = torch.cat([model.candidate_scores(pixels[i : i + 1], texts[i : i + 1]) for i in range(3)])
    assert batch.shape == (3, len(CANDIDATES)) and batch.dtype == torch.float32
    assert torch.allclose(batch, alone, atol=1e-4)
    text_inputs = model.encode_texts(texts)
    emb = model.embed(pixels, text_inputs)
    assert emb.image.shape[0] == 3 and emb.text.shape[:2] == emb.context["attention_mask"].shape
    assert emb.context["attention_mask"].sum(1).tolist() == [len(model.tokenizer.tokenize(t)) for t in texts]
    image, text = emb.image.detach().requires_grad_(True), emb.text.detach().requires_grad_(True)
    again = model.scores_from_embeddings(type(emb)(image, text, emb.context))
    assert torch.allclose(again, batch, atol=1e-4)
    again.logsumexp(dim=1).sum().backward()
    assert image.grad.abs().sum() > 0
    padding = ~emb.context["attention_mask"].bool()
    assert text.grad[~padding].abs().sum() > 0 and text.grad[padding].abs().sum() == 0
    x = pixels.clone().requires_grad_(True)
    model.loss(x, texts, torch.tensor([0, 1, 2])).backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_attack_suite_through_the_runner(tmp_path_factory, family):
    """FGSM, PGD, word substitution and the embedding FGSM on the family's tiny pair (PEFT prompt tuning vs the full
    checkpoint) through ``evaluate``. Random models answer easy-VQA at chance, so the examples' answers are set to the
    finetuned member's clean predictions: every attack then runs on (almost) every example."""
    from robustmm.attacks import get_attack
    from robustmm.data import load_dataset
    from robustmm.data.images import to_tensor
    from robustmm.evaluate import evaluate
    from robustmm.models.pair import load_pair
    from robustmm.types import Status

    root = tiny_vlm(tmp_path_factory, family)
    dataset = load_dataset("easy-vqa", split="test", limit=3, seed=0)
    pair = load_pair(prompt_tuned=root / "prompt", finetuned=root / "model", device="cpu", candidates=dataset.candidates)
    model = pair.finetuned
    with torch.no_grad():
        answers = model.predict(to_tensor([e.image for e in dataset], model.image_size), [e.text for e in dataset])
    dataset = dataclasses.replace(dataset, examples=tuple(dataclasses.replace(e, answers=(a,)) for e, a in zip(dataset, answers)))
    attacks = [get_attack("fgsm", eps="4/255"), get_attack("pgd-linf", eps="4/255", steps=2), get_attack("embed-fgsm", eps=0.5),
               get_attack("word-sub")]
    records = evaluate(pair, dataset, attacks, batch_size=2, seed=0).records
    assert len(records) == 2 * len(attacks) * len(dataset)
    for attack in attacks:
        rows = [r for r in records if r.attack_key == attack.key()]
        assert {r.example_id for r in rows if r.member == "prompt"} == {r.example_id for r in rows if r.member == "finetune"}
        attacked = [r for r in rows if r.status is not Status.SKIPPED]
        assert any(r.member == "finetune" for r in attacked)
        for r in attacked:
            assert r.queries > 0
            if attack.modality == "image":
                assert r.linf <= attack.config.eps + 1e-6
            if attack.modality == "embedding":
                assert r.image_rms > 0 and r.text_rms > 0
            if attack.modality == "text":
                assert r.words_total > 0 and (r.adv_text != r.text) == (r.words_changed > 0)
