"""Making checkpoint pairs: pretrain a base, then finetune it or prompt-tune it per task.

- ``pretrain`` (:mod:`.pretraining`): OFA-style generic objectives over the *train* images, none of
  them a downstream task: captioning ("what does the image describe?" -> "a blue circle"),
  attribute infilling ("a [MASK] circle" -> "blue", "a blue [MASK]" -> "circle"), image-text
  matching (OFA's 'does the image describe " a blue circle "?' -> yes, and -> no for a caption
  with a wrong colour or shape) and OFA's text-only infilling (a blank image and 'what is the
  complete text of " a blue [MASK] "?' -> "a blue circle"), each optional, then optionally a
  second phase with other objectives; full-vocabulary token cross-entropy.
- ``finetune`` (:mod:`.finetuning`): every backbone parameter is trained on the task (the frozen
  MiniLM word table stays frozen in every stage).
- ``prompt_tune`` (:mod:`.prompt_tuning`): the backbone is frozen (bit-identical afterwards); only
  the prompts train.
- ``make_pair`` (:mod:`.pair`): the whole ``Recipe`` (:mod:`.recipe`), stage by stage.

Downstream stages minimise the constrained candidate log-likelihood of the gold answer (OFA's
constraint-trie training objective). Every stage runs :func:`.loop.fit`: AdamW, linear warm-up then
cosine decay; fp32, or bf16 mixed precision per stage (``StageConfig.precision``); progress saved
and resumed bit-identically (:mod:`.resume`).
"""

from robustmm.tuning.recipe import (IMAGE_OBJECTIVES, OBJECTIVES, PRECISIONS, TEXT_ONLY_OBJECTIVES, Recipe, StageConfig,
                                    recipe_with_overrides)
from robustmm.tuning.loop import accuracy, fit, predictions, progress_path, step_count
from robustmm.tuning.pretraining import (generative_loss, matching_breakdown, matching_question, pretrain, pretraining_facts,
                                         pretraining_pair, pretraining_texts)
from robustmm.tuning.finetuning import finetune
from robustmm.tuning.prompt_tuning import prompt_tune, real_activations
from robustmm.tuning.pair import documented_accuracy, make_pair

__all__ = ["IMAGE_OBJECTIVES", "OBJECTIVES", "PRECISIONS", "TEXT_ONLY_OBJECTIVES", "Recipe", "StageConfig", "accuracy",
           "documented_accuracy", "finetune", "fit", "generative_loss", "make_pair", "matching_breakdown",
           "matching_question", "predictions", "pretrain", "pretraining_facts", "pretraining_pair", "pretraining_texts",
           "progress_path", "prompt_tune", "real_activations", "recipe_with_overrides", "step_count"]
