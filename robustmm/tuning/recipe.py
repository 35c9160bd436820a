"""The settings of the default pair's recipe: per-stage optimisation (``StageConfig``) and the whole
recipe (``Recipe``), plus ``recipe_with_overrides`` for variants. Pure data: no training here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace

from robustmm.errors import RobustMMError
from robustmm.models.prompts import PromptConfig
from robustmm.models.unified import UnifiedConfig


# Pretraining objectives; each is trained once per image per epoch. Text-only objectives see a
# blank image (white: easy-VQA's background) instead of the image.
IMAGE_OBJECTIVES = ("caption", "infill-color", "infill-shape", "match", "mismatch")
TEXT_ONLY_OBJECTIVES = ("infill-text",)
OBJECTIVES = IMAGE_OBJECTIVES + TEXT_ONLY_OBJECTIVES
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class StageConfig:
    """Optimisation settings of one stage."""

    epochs: float = 1.0
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.01
    warmup: float = 0.05  # share of steps with linear warm-up
    limit: int | None = None  # train on at most this many examples, or images when pretraining (seeded sample)
    # "bf16": the forward pass runs under bfloat16 autocast (matmuls, convolutions and attention in bf16;
    # weights, optimiser state and losses stay fp32), mixed precision as OFA trains (in fp16 there).
    # The shipped pair is fp32 (speed: benchmarks/bench_precision.py; accuracy of bf16 bases: README, "How the recipe was found").
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise RobustMMError(f"Training precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the shipped default pair."""

    # Seed 1 at 2 threads: seed 0 at 2 threads made a base that does not match colours (README, "How the
    # recipe was found"); results depend on the thread count (and the machine), so the pair is made at 2.
    seed: int = 1
    # GEGLU feed-forward blocks of hidden width 256 (ffn_mult 2): with ffn_mult 4 (the wide-FFN pair shipped
    # until 2026-12-05) the recipe trains about 1.4x slower (benchmarks/bench_recipe.py).
    model: UnifiedConfig = field(default_factory=lambda: UnifiedConfig(ffn_mult=2))
    # The paper's MLP reparameterisation with hidden width 32; both tasks' prompts start at the base's own
    # key/values of real inputs (Li & Liang 2021).
    # easy-VQA: length 48 (61,440 stored parameters, 4.9% of the model; the paper's 64 would be 6.4%).
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(length=48, reparam=True, reparam_hidden=32, init="activations"))
    # easy-VE: length 32 (length 64 after 10 epochs: 81.1% vs 84.4%).
    prompt_ve: PromptConfig = field(default_factory=lambda: PromptConfig(length=32, reparam=True, reparam_hidden=32, init="activations"))
    # Matching is learnt late and only at lr 1e-3 (2e-3 stalled it): 8 epochs
    pretrain: StageConfig = field(default_factory=lambda: StageConfig(epochs=8, lr=1e-3, batch_size=64))
    finetune: StageConfig = field(default_factory=lambda: StageConfig(epochs=2, lr=1e-3, batch_size=64))
    # easy-VQA prompts underfit in batches of 64: on this base 5 epochs gave 88.1% at lr 5e-3 and 89.8% at
    # lr 1e-2; at lr 1e-2, 8 epochs 93.0% and 10 epochs 93.4% (lr 2e-2, 10 epochs: 88.8%; no MLP, 5 epochs at
    # 5e-3: 82.3%; the paper's lr 0.03 fell to 41.9% in an earlier GPU search). Batches of 32 cost the same
    # per example and give twice the steps: 5 epochs 92.9%, 8 epochs 94.5% (batches of 16: 79.4% after 5).
    prompt_tune: StageConfig = field(default_factory=lambda: StageConfig(epochs=8, lr=1e-2, batch_size=32, weight_decay=0.0))
    # easy-VE finetuning at lr 3e-4 keeps the base's colour matching: on the wide-FFN base 90.9% after 4
    # epochs, while lr 1e-3 forgot it (89.3%, rejecting almost no colour-only contradictions); on this
    # base 98.6%. (The easy-VQA member keeps lr 1e-3: the two finetuned members use different lrs, README
    # "Finetuning lr and robustness".)
    finetune_ve: StageConfig = field(default_factory=lambda: StageConfig(epochs=4, lr=3e-4, batch_size=64))
    # easy-VE has 3.6x fewer training examples than easy-VQA: more passes. 15 epochs from the activations
    # gave 97.1% at lr 1e-2 and 91.1% at lr 5e-3 on this base (on the wide-FFN base lr 1e-2 had been
    # the worse one: 75.0% against 84.4% after 10 epochs).
    prompt_tune_ve: StageConfig = field(default_factory=lambda: StageConfig(epochs=15, lr=1e-2, batch_size=64, weight_decay=0.0))
    # Pretraining matching: caption forms, by default each caption drawing its form uniformly.
    # match_form_weights (one per form) instead gives an image's true and wrong caption one shared
    # form drawn with these weights; mismatch_color_share = share of wrong *full* captions whose
    # colour (not shape) is wrong. Colour-biased matching ((0.5, 0.3, 0.2), 0.75) on the five-objective
    # seed-0 base made easy-VQA prompts fall to 64.4% on the check subset (README); it stays off.
    # Text infilling ("infill-text", OFA's text-only objective) is on: with it the seed-1 base rejects
    # 99.7% of wrong-colour captions (the five-objective seed-0 base: 25.8%), which easy-VE needs.
    objectives: tuple[str, ...] = OBJECTIVES
    # A second pretraining phase (off: 0 epochs) continues the base with ``then_objectives`` for
    # ``then_epochs`` (lr, batch and schedule as ``pretrain``, restarted). Two epochs with text infilling
    # added after the five-objective seed-0 base's 8 began colour matching (wrong colour rejected 55%, that base 26%) and
    # easy-VE finetuning reached 92.2% in 8 epochs, but easy-VE prompts fell to 68.2% (random start) /
    # 78.6% (activation start) and easy-VQA prompts to 86.4% on the check subset (README, "How the
    # recipe was found"); it stays off.
    then_objectives: tuple[str, ...] = OBJECTIVES
    then_epochs: float = 0.0
    match_forms: tuple[str, ...] = ("full", "color", "shape")
    match_form_weights: tuple[float, ...] | None = None
    mismatch_color_share: float = 0.5
    datasets: tuple[str, ...] = ("easy-vqa", "easy-ve")
    eval_limit: int | None = None  # test examples used for the accuracies in recipe.json (None = all)
    check_limit: int = 500  # a fixed seeded test subset whose accuracy the test suite re-checks

    def __post_init__(self) -> None:
        for objectives in (self.objectives, self.then_objectives):
            if not objectives or any(o not in OBJECTIVES for o in objectives):
                raise RobustMMError(f"Pretraining objectives must be some of {', '.join(OBJECTIVES)}, not {objectives}.")
        if self.then_epochs < 0:
            raise RobustMMError(f"Pretraining's second phase cannot last {self.then_epochs} epochs (0 turns it off).")

    def to_dict(self) -> dict:
        return asdict(self)

    def for_dataset(self, name: str) -> tuple[StageConfig, StageConfig, PromptConfig]:
        """(finetune stage, prompt-tuning stage, prompt config) of dataset ``name``: easy-ve has its own."""
        if name == "easy-ve":
            return self.finetune_ve, self.prompt_tune_ve, self.prompt_ve
        return self.finetune, self.prompt_tune, self.prompt

    def in_precision(self, precision: str) -> "Recipe":
        """This recipe with every stage trained in ``precision`` (see ``StageConfig.precision``)."""
        stages = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), StageConfig)}
        return replace(self, **{name: replace(stage, precision=precision) for name, stage in stages.items()})


def recipe_with_overrides(overrides: dict, recipe: Recipe | None = None) -> Recipe:
    """``recipe`` (default ``Recipe()``) with ``overrides`` applied: keys are ``Recipe`` fields; a dict value
    updates the fields of that nested config (``model``, ``prompt``, ``pretrain``, ...); lists become tuples.

    ``{"model": {"ffn_mult": 4}, "prompt_tune_ve": {"epochs": 20}}`` is the shipped recipe with a wider
    feed-forward block and 20 easy-VE prompt epochs. Unknown fields are refused in one sentence.
    """
    recipe = recipe or Recipe()

    def updated(config, changes: dict):
        known = {f.name for f in fields(config)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise RobustMMError(f"{type(config).__name__} has no field {unknown[0]!r}; choose from {', '.join(sorted(known))}.")
        values = {}
        for key, value in changes.items():
            current = getattr(config, key)
            if isinstance(value, dict) and is_dataclass(current):
                values[key] = updated(current, value)
            else:
                values[key] = tuple(value) if isinstance(value, list) else value
        return replace(config, **values)

    if not isinstance(overrides, dict):
        raise RobustMMError(f"Recipe overrides must be a JSON object of Recipe fields, not {overrides!r}.")
    return updated(recipe, overrides)
