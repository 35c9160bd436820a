"""Tiny *random* checkpoints of every supported VLM family, built offline (``robustmm make-tiny``).

Each is a real ``transformers`` model of its family (two layers, hidden width 32) with randomly
initialised weights, saved with a working processor: the family's own image processor class and
processor class, and a tokenizer of the family's tokenizer class whose vocabulary is the project's
WordPiece vocabulary (``robustmm/checkpoints/default/base/vocab.txt``, 30,522 words) plus the family's
special tokens, with a chat template shaped like the released checkpoints' (LLaVA-1.5, Qwen2-VL,
Idefics3/SmolVLM; PaliGemma and BLIP-2 ship none). ``make_tiny`` writes::

    DIR/model/    the checkpoint (config, safetensors, processor, tokenizer, generation config)
    DIR/prompt/   a PEFT prompt-tuning adapter on it (8 virtual tokens, random)
    DIR/lora/     a PEFT LoRA adapter on it (rank 4 on the language model's q/v projections, random)

so ``--prompt-tuned DIR/prompt --finetuned DIR/model`` (or ``DIR/lora``) is a pair. The weights are
random: the pair is for tests, demos and checking a set-up, not for conclusions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from robustmm.errors import RobustMMError
from robustmm.paths import package_root

VOCAB = package_root() / "checkpoints" / "default" / "base" / "vocab.txt"
TINY_FAMILIES = ("llava", "llava-next", "paligemma", "qwen2-vl", "idefics3", "blip2")
HIDDEN = 32

LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _tokenizer(cls_name: str, specials: dict, extra: list[str]):
    """A fast tokenizer of class ``cls_name`` over the project's WordPiece vocabulary plus special tokens."""
    import transformers
    from transformers import BertTokenizerFast

    backend = BertTokenizerFast(str(VOCAB)).backend_tokenizer
    backend.post_processor = None  # no [CLS]/[SEP]: the family's tokenizer class adds its own BOS, if any
    tokenizer = getattr(transformers, cls_name)(tokenizer_object=backend, unk_token="[UNK]", **specials)
    new = [t for t in dict.fromkeys(list(specials.values()) + extra) if t not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_additional_special_tokens=False)
    return tokenizer


def _llama_text(vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **extra)


def _vision(**extra) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, **extra)


def _llava():
    from transformers import CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers import CLIPVisionConfig

    tok = _tokenizer("LlamaTokenizerFast", {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, ["<image>"])
    config = LlavaConfig(vision_config=CLIPVisionConfig(**_vision(projection_dim=HIDDEN)),
                         text_config=LlamaConfig(**_llama_text(len(tok), pad_token_id=tok.pad_token_id)),
                         image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(images, tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor, tok.eos_token_id


def _llava_next():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    tok = _tokenizer("LlamaTokenizerFast", {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, ["<image>"])
    pinpoints = [[64, 32], [32, 64], [64, 64]]
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(**_vision(projection_dim=HIDDEN)),
                             text_config=LlamaConfig(**_llama_text(len(tok), pad_token_id=tok.pad_token_id)),
                             image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_grid_pinpoints=pinpoints)
    images = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(images, tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
    return LlavaNextForConditionalGeneration(config), processor, tok.eos_token_id


def _paligemma():
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers import SiglipImageProcessor, SiglipVisionConfig

    tok = _tokenizer("GemmaTokenizerFast", {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}, ["<image>"])
    text = GemmaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                       pad_token_id=tok.pad_token_id)
    config = PaliGemmaConfig(vision_config=SiglipVisionConfig(**_vision()).to_dict(), text_config=text.to_dict(),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=HIDDEN, hidden_size=HIDDEN)
    images = SiglipImageProcessor(size={"height": 32, "width": 32})
    images.image_seq_length = 16
    processor = PaliGemmaProcessor(images, tok)
    return PaliGemmaForConditionalGeneration(config), processor, tok.eos_token_id


def _qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    specials = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    tok = _tokenizer("Qwen2TokenizerFast", {k: v for k, v in specials.items() if v},
                     ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    ids = tok.convert_tokens_to_ids
    config = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=HIDDEN, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        text_config=_llama_text(len(tok), rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    images = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2)
    # Qwen2VLProcessor needs a video processor, which needs torchvision (not installed here): the image processor
    # and the tokenizer (holding the chat template) are saved on their own; robustmm loads them so anyway.
    tok.chat_template = QWEN2_VL_TEMPLATE
    processor = (images, tok)
    return Qwen2VLForConditionalGeneration(config), processor, tok.eos_token_id


def _idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor
    from transformers import LlamaConfig

    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok = _tokenizer("PreTrainedTokenizerFast", {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<pad>"},
                     ["<fake_token_around_image>", "<image>", "<global-img>"] + grid)
    config = Idefics3Config(vision_config=_vision(), text_config=LlamaConfig(**_llama_text(len(tok), pad_token_id=tok.pad_token_id)).to_dict(),
                            image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2, pad_token_id=tok.pad_token_id)
    images = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(images, tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor, tok.eos_token_id


def _blip2():
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, OPTConfig

    tok = _tokenizer("GPT2TokenizerFast", {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>"}, ["<image>"])
    text = OPTConfig(vocab_size=len(tok), hidden_size=HIDDEN, ffn_dim=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                     word_embed_proj_dim=HIDDEN, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    qformer = dict(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * HIDDEN, encoder_hidden_size=HIDDEN)
    config = Blip2Config(vision_config=_vision(), qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=4,
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tok, num_query_tokens=4)
    return Blip2ForConditionalGeneration(config), processor, tok.eos_token_id


_BUILDERS = {"llava": _llava, "llava-next": _llava_next, "paligemma": _paligemma, "qwen2-vl": _qwen2_vl, "idefics3": _idefics3, "blip2": _blip2}
# The language model's attention projections (LoRA targets) and the PEFT task type, per family.
_LORA_TARGETS = r".*(language_model|text_model)\..*\.(q_proj|v_proj)"


def make_tiny(family: str, out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write a tiny random ``family`` checkpoint, a PEFT prompt-tuning adapter and a LoRA adapter under ``out``.

    Returns ``{"model": ..., "prompt": ..., "lora": ...}``; each folder loads with ``load_member``.
    """
    if family not in _BUILDERS:
        raise RobustMMError(f"Unknown tiny family {family!r}: choose from {', '.join(TINY_FAMILIES)}.")
    out = Path(out)
    folders = {name: out / name for name in ("model", "prompt", "lora")}
    torch.manual_seed(seed)
    model, processor, end = _BUILDERS[family]()
    _same_init(model, seed)
    model.generation_config.eos_token_id = end
    parts = processor if isinstance(processor, tuple) else (processor,)
    tokenizer = parts[-1] if isinstance(processor, tuple) else processor.tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.eval()
    model.save_pretrained(folders["model"])
    for part in parts:
        part.save_pretrained(folders["model"])
    base = str(folders["model"].resolve())
    _prompt_adapter(model, folders["prompt"], base, seed + 1)
    _lora_adapter(model, folders["lora"], base, seed + 2)
    (out / "README.md").write_text(
        f"Tiny random {family} checkpoint made by `robustmm make-tiny --family {family}` (seed {seed}): "
        "model/ (full checkpoint), prompt/ (PEFT prompt tuning on it), lora/ (PEFT LoRA on it). "
        "Random weights: for tests and demos only.\n")
    return folders


def _same_init(model, seed: int) -> None:
    """Every weight tensor of two or more dimensions (matrices, convolutions, embedding tables, BLIP-2's query tokens)
    drawn from N(0, 0.02²), the families' ``initializer_range``; norms and biases keep their initial 1 / 0. (Some
    families' own initialisation of a model built from a config leaves near-zero matrices, e.g. BLIP-2's vision
    tower, which would make the image irrelevant.)"""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def _prompt_adapter(model, folder: Path, base: str, seed: int) -> None:
    from peft import PromptTuningConfig, TaskType, get_peft_model

    torch.manual_seed(seed)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=8, token_dim=HIDDEN, num_transformer_submodules=1,
                                num_attention_heads=2, num_layers=2)
    peft_model = get_peft_model(_fresh_copy(model), config)
    with torch.no_grad():  # PEFT starts prompt tuning at random N(0, 1) rows; the scale of real token embeddings is closer
        table = peft_model.prompt_encoder["default"].embedding.weight
        table.copy_(torch.randn_like(table) * 0.02)
    peft_model.save_pretrained(folder)
    _set_base(folder, base)


def _lora_adapter(model, folder: Path, base: str, seed: int) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=_LORA_TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(_fresh_copy(model), config)
    peft_model.save_pretrained(folder)
    _set_base(folder, base)


def _fresh_copy(model):
    import copy

    return copy.deepcopy(model)


def _set_base(folder: Path, base: str) -> None:
    """PEFT writes the base's ``name_or_path`` (empty for a model built from a config): name the saved folder."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config, indent=2, sort_keys=True))
