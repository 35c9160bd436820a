"""Pretraining a base on OFA-style generic objectives over the easy-VQA *train* images (see
``pretrain``), and the base's image-text matching breakdown on test images."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from robustmm.data import easy_vqa
from robustmm.data.easy_ve import COLORS, SHAPES, image_facts
from robustmm.models import checkpoint as ckpt
from robustmm.models.lexicon import load_lexicon, load_tokenizer, vocab_file
from robustmm.models.unified import UnifiedBackbone, UnifiedVLM
from robustmm.tuning.loop import ImageCache, fit, forget_progress, predictions, progress_path
from robustmm.tuning.recipe import TEXT_ONLY_OBJECTIVES, Recipe


def pretraining_facts(limit: int | None = None, seed: int = 0, split: str = "train") -> tuple[list, list[str], list[str]]:
    """(image paths, shapes, colours) of the easy-VQA images of ``split`` whose shape and colour the
    questions reveal (at most ``limit`` of them, a seeded sample). Pretraining uses *train* only."""
    facts = image_facts(easy_vqa.read_questions(split))
    known = [i for i in sorted(facts) if "shape" in facts[i] and "color" in facts[i]]
    if limit is not None and limit < len(known):
        known = sorted(random.Random(seed).sample(known, limit))
    return ([easy_vqa.image_path(split, i) for i in known], [facts[i]["shape"] for i in known],
            [facts[i]["color"] for i in known])


def pretraining_pair(objective: str, shape: str, color: str, rng: random.Random, form: str = "full",
                     color_share: float = 0.5) -> tuple[str, str]:
    """(input text, target text) of one generic objective for an image of a ``color`` ``shape``.

    Matching captions take the given ``form``: ``full`` ("a red circle"), ``color`` ("a red
    shape") or ``shape`` ("a circle"). ``mismatch`` draws a fresh wrong value each call (for a
    ``full`` caption a wrong colour with probability ``color_share``, else a wrong shape), so
    the model cannot memorise which caption of a training image is the wrong one.
    ``infill-text`` is text-only (OFA's text infilling, BART-style): one word of the caption is
    masked and the whole caption is the target, so the words left must be read off the text.
    """
    if objective == "infill-text":
        words = ["a", color, shape]
        words[rng.randrange(len(words))] = "[MASK]"
        return f'what is the complete text of " {" ".join(words)} "?', f"a {color} {shape}"
    if objective == "caption":
        return "what does the image describe?", f"a {color} {shape}"
    if objective == "infill-color":
        return f"a [MASK] {shape}", color
    if objective == "infill-shape":
        return f"a {color} [MASK]", shape
    if objective == "mismatch":
        if form == "color" or (form == "full" and rng.random() < color_share):
            color = rng.choice([c for c in COLORS if c != color])
        else:
            shape = rng.choice([s for s in SHAPES if s != shape])
    return matching_question(form, shape, color), "yes" if objective == "match" else "no"


def matching_question(form: str, shape: str, color: str) -> str:
    """OFA's matching question for a caption of ``form`` (full / color / shape)."""
    caption = {"full": f"a {color} {shape}", "color": f"a {color} shape", "shape": f"a {shape}"}[form]
    return f'does the image describe " {caption} "?'


def pretraining_texts(facts: Sequence[tuple[str, str]], rng: random.Random, recipe: Recipe,
                      objectives: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(input, target) texts of a pretraining batch: for each image's (shape, colour), every objective in
    ``objectives`` order (default ``recipe.objectives``). Matching captions draw their form from ``recipe.match_forms`` one by one, or,
    with ``recipe.match_form_weights``, once per image (its true and wrong caption then share the form)."""
    shared = (rng.choices(recipe.match_forms, recipe.match_form_weights, k=len(facts))
              if recipe.match_form_weights is not None else [None] * len(facts))
    pairs = []
    for (shape, color), form in zip(facts, shared):
        for objective in recipe.objectives if objectives is None else objectives:
            if objective in ("match", "mismatch"):
                pairs.append(pretraining_pair(objective, shape, color, rng, form or rng.choice(recipe.match_forms),
                                              recipe.mismatch_color_share))
            else:
                pairs.append(pretraining_pair(objective, shape, color, rng))
    return pairs


def generative_loss(backbone: UnifiedBackbone, pixels, text_ids, text_mask, target_ids, target_mask) -> torch.Tensor:
    """Full-vocabulary teacher-forced cross-entropy of target token sequences (B, T).

    Vocabulary logits (30k wide) are computed only at the positions that have a label, not
    at padding: the same loss as masking afterwards, at about half the output-layer cost.
    """
    memory, keys = backbone.encode(backbone.embed_image(pixels), backbone.embed_tokens(text_ids), text_mask, None)
    hidden = backbone.decode(memory, keys, target_ids[:, :-1], None)
    labelled = target_mask[:, 1:]
    return F.cross_entropy(backbone.token_logits(hidden[labelled]), target_ids[:, 1:][labelled])


def pretrain(recipe: Recipe, out: Path, device: str | torch.device = "cpu") -> dict:
    """Train a base backbone on the generic objectives (on ``device``) and save it to ``out``.

    Two phases: ``recipe.pretrain`` with ``recipe.objectives``, then (if ``recipe.then_epochs`` > 0)
    that many more epochs with ``recipe.then_objectives``, same lr, batch and restarted schedule.
    One epoch = every objective once per image. A batch holds whole images, each with *every*
    objective: an image is seen with its true and a wrong caption in the same step, as ITM is
    trained with paired negatives (ALBEF, BLIP). The yes/no prior then cancels within the batch
    and only the image-caption relation is left to learn; with matching and mismatching pairs
    drawn from different images, pretraining sat at chance for 4 epochs. Texts are built per
    batch, so mismatching captions are drawn fresh each time (each in a form drawn from
    ``recipe.match_forms``, or one form per image, see ``Recipe.match_form_weights``).
    Text-only objectives (``infill-text``) see a blank white image: their words must be read off
    the text, which keeps colour words apart in the input projection (without it the base mapped
    the eight colour words to nearly one vector, mean cosine 0.87, and never matched colours).
    """
    torch.manual_seed(recipe.seed)
    table, _ = load_lexicon()
    backbone = UnifiedBackbone(recipe.model, table).to(device).train()
    tokenizer = load_tokenizer(vocab_file())
    paths, shapes, colors = pretraining_facts(recipe.pretrain.limit, recipe.seed, "train")
    cache = ImageCache(paths, recipe.model.image_size, device)

    def phase(objectives: tuple[str, ...], epochs: float, description: str) -> dict:
        rng = random.Random(recipe.seed)
        per_image = len(objectives)
        text_only = torch.tensor([o in TEXT_ONLY_OBJECTIVES for o in objectives], device=device)

        def loss_fn(images):
            rows = images.repeat_interleave(per_image)  # (B * objectives,)
            pairs = pretraining_texts([(shapes[i], colors[i]) for i in images.tolist()], rng, recipe, objectives)
            enc = tokenizer([p[0] for p in pairs], padding=True, return_tensors="pt").to(device)
            tgt = tokenizer([p[1] for p in pairs], padding=True, return_tensors="pt").to(device)  # [CLS] target [SEP]
            pixels = cache.pixels(rows)
            pixels[text_only.repeat(len(images))] = 1.0  # a blank white image for text-only objectives
            return generative_loss(backbone, pixels, enc["input_ids"], enc["attention_mask"].bool(),
                                   tgt["input_ids"], tgt["attention_mask"].bool())

        # batch_size counts (image, objective) examples, as in every stage: batch_size // objectives images per step
        stage = replace(recipe.pretrain, epochs=epochs, batch_size=max(1, recipe.pretrain.batch_size // per_image))
        return fit(list(backbone.parameters()), loss_fn, len(paths), stage, recipe.seed, description,
                   progress_path(out, description), rng)

    stats = phase(recipe.objectives, recipe.pretrain.epochs, "pretrain base")
    if recipe.then_epochs > 0:
        then = phase(recipe.then_objectives, recipe.then_epochs, "pretrain base, then")
        stats = {"steps": stats["steps"] + then["steps"], "final_loss": then["final_loss"],
                 "seconds": stats["seconds"] + then["seconds"], "phases": [stats, then]}
    backbone.eval()
    ckpt.save_base(backbone, out, vocab_file(), {"recipe": recipe.to_dict(), "stats": stats})
    forget_progress(out)
    return stats


def matching_breakdown(base: Path, device: str | torch.device = "cpu", batch_size: int = 256) -> dict[str, float]:
    """Image-text matching accuracy of a base checkpoint on easy-VQA *test* images, in [0, 1], by caption kind.

    Each test image with a known shape and colour is asked 'does the image describe " ... "?'
    about its true caption (-> yes) and every one-word-wrong caption, in each form:
    ``full true`` / ``full wrong color`` / ``full wrong shape`` ("a red circle"), ``color true`` /
    ``color wrong`` ("a red shape"), ``shape true`` / ``shape wrong`` ("a circle"); a wrong value
    is the next colour / shape in order. ``overall`` = (full true + mean of the two full wrong) / 2,
    chance 0.5. It tells whether pretraining learnt to *match* text to the image, which
    easy-VQA's yes/no questions and easy-VE need (captioning alone does not show it).
    """
    from robustmm.types import Task

    backbone, _ = ckpt.load_backbone(base)
    model = UnifiedVLM(backbone.to(device), load_tokenizer(Path(base) / "vocab.txt"), Task.VQA, ["yes", "no"])
    rows = []  # (kind, image, question, answer)
    for path, shape, color in zip(*pretraining_facts(split="test")):
        other_color = COLORS[(COLORS.index(color) + 1) % len(COLORS)]
        other_shape = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
        rows += [("full true", path, matching_question("full", shape, color), "yes"),
                 ("full wrong color", path, matching_question("full", shape, other_color), "no"),
                 ("full wrong shape", path, matching_question("full", other_shape, color), "no"),
                 ("color true", path, matching_question("color", shape, color), "yes"),
                 ("color wrong", path, matching_question("color", shape, other_color), "no"),
                 ("shape true", path, matching_question("shape", shape, color), "yes"),
                 ("shape wrong", path, matching_question("shape", other_shape, color), "no")]
    answers = predictions(model, [row[1] for row in rows], [row[2] for row in rows], batch_size)
    right: dict[str, list[bool]] = {}
    for answer, (kind, _, _, gold) in zip(answers, rows):
        right.setdefault(kind, []).append(answer == gold)
    result = {kind: sum(hits) / len(hits) for kind, hits in right.items()}
    result["overall"] = (result["full true"] + (result["full wrong color"] + result["full wrong shape"]) / 2) / 2
    return result
