"""What differs between the supported VLM families: pixel layout, image tokens, vision tower, language model.

Every family object wraps one loaded ``*ForConditionalGeneration`` model and answers the same questions
for :class:`robustmm.models.vlm.model.GenerativeVLM`:

- ``preprocess(pixels)``: the processor's image pipeline re-implemented in torch (Pillow-exact resize from
  :mod:`.resize`, centre crop, tiling / patch flattening, normalisation), so gradients reach the [0, 1]
  pixels. Returns :class:`PixelInputs`: the family's ``pixel_values`` layout plus what its vision tower needs
  (``image_grid_thw``, tile rows/cols).
- ``image_block(inputs)``: the text that stands for one image in the prompt, exactly as the family's
  processor expands its image placeholder (checked against the processors in the tests).
- ``image_features(inputs)``: (B, N_tok, D_lm) image embeddings at the language model's input, through the
  family's own vision tower and projector.
- ``patch_embedding`` (the module whose output is the patch embeddings the embedding attack perturbs),
  ``vision_layers`` (where M²PT's visual prompts go), ``language_model`` / ``lm_head``, and
  ``positions`` / ``prefix_mask`` for the two families whose positions (Qwen2-VL's 3-D rotary positions,
  PaliGemma's 1-based ones) or prefix attention (PaliGemma attends bidirectionally over the prompt) differ.

Pixel tensors are fp32 throughout; ``image_features`` casts to the model's dtype at the vision tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from robustmm.errors import RobustMMError
from robustmm.models.vlm.resize import center_crop, filter_name, pil_resize

QUESTION = "\x00question\x00"  # stands for the question while a prompt template is rendered


@dataclass
class PixelInputs:
    """A batch of preprocessed images: ``values`` in the family's layout (fp32, normalised), and ``extra``:
    the other tensors / sizes its vision tower takes."""

    values: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def detach(self) -> "PixelInputs":
        return PixelInputs(self.values.detach(), dict(self.extra))


def _normalise(x: torch.Tensor, processor) -> torch.Tensor:
    if not getattr(processor, "do_normalize", True):
        return x
    mean = torch.tensor(_triple(processor.image_mean), dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(_triple(processor.image_std), dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def _triple(value) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3


class Family:
    """Base class: the parts most families share (one fixed-size image, CLIP/SigLIP-style vision tower)."""

    name = ""
    model_types: tuple[str, ...] = ()
    image_token = "<image>"  # what the family's chat template writes for an image
    add_special_tokens = True  # how its processor tokenises the prompt
    image_in_text = True  # the prompt holds an image placeholder the image block replaces (BLIP-2: image tokens go first)
    fallback = "{image}\n{content}\nAnswer:"  # prompt when the processor has no chat template

    def __init__(self, model: nn.Module, image_processor, tokenizer) -> None:
        self.model, self.image_processor, self.tokenizer = model, image_processor, tokenizer
        self.config = model.config
        self.resample = filter_name(getattr(image_processor, "resample", 3))

    # -- images -------------------------------------------------------------------------------------
    def default_image_size(self) -> int:
        """The side of the square [0, 1] image attacks perturb: the size the processor resizes to."""
        size = dict(self.image_processor.size)
        crop = getattr(self.image_processor, "crop_size", None) if getattr(self.image_processor, "do_center_crop", False) else None
        if crop:
            return int(dict(crop)["height"])
        return int(size.get("height") or size.get("shortest_edge"))

    def preprocess(self, pixels: torch.Tensor) -> PixelInputs:
        """(B, 3, H, W) in [0, 1] -> resized (shortest edge or height/width), centre-cropped, normalised."""
        processor = self.image_processor
        x = pixels.float()
        height, width = x.shape[-2:]
        if getattr(processor, "do_pad", False) and height != width:  # LlavaImageProcessor: pad to a square of the mean colour
            side = max(height, width)
            fill = torch.tensor([int(m * 255) / 255 for m in _triple(processor.image_mean)], device=x.device).view(1, 3, 1, 1)
            canvas = fill.expand(x.shape[0], 3, side, side).clone()
            top, left = (side - height) // 2, (side - width) // 2
            canvas[..., top : top + height, left : left + width] = x
            x, height, width = canvas, side, side
        if getattr(processor, "do_resize", True):
            size = dict(processor.size)
            if "height" in size and "width" in size:
                target = (int(size["height"]), int(size["width"]))
            else:
                short = int(size["shortest_edge"])
                if height <= width:
                    target = (short, int(short * width / height))
                else:
                    target = (int(short * height / width), short)
            x = pil_resize(x, target, self.resample)
        if getattr(processor, "do_center_crop", False):
            crop = dict(processor.crop_size)
            x = center_crop(x, (int(crop["height"]), int(crop["width"])))
        return PixelInputs(_normalise(x, processor))

    def image_block(self, inputs: PixelInputs) -> str:
        """The prompt text standing for one image (image tokens repeated once per image feature)."""
        return self.image_token * self.image_tokens(inputs)

    def image_tokens(self, inputs: PixelInputs) -> int:
        raise NotImplementedError

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        """(B, N_tok, D_lm) image embeddings at the language model's input."""
        raise NotImplementedError

    @property
    def vision_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def patch_embedding(self) -> nn.Module:
        """The module whose output is the patch embeddings (the embedding attack's image embeddings)."""
        return self.vision_tower.vision_model.embeddings.patch_embedding

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.vision_model.encoder.layers

    @property
    def vision_dim(self) -> int:
        """Width of the vision encoder's tokens (what a visual prompt token is)."""
        return int(self.config.vision_config.hidden_size)

    def prompt_layers_limit(self) -> int:
        """How many vision layers (from the first) can hold M²PT visual prompts: those before the features are read."""
        return len(self.vision_layers)

    packed_vision = False  # Qwen2-VL: the vision tower runs on packed (N_total, D) tokens

    # -- language model -------------------------------------------------------------------------------
    @property
    def language_model(self) -> nn.Module:
        """The decoder without its head: takes inputs_embeds, attention_mask, position_ids, past_key_values."""
        return self.model.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def text_config(self):
        return self.config.get_text_config(decoder=True)

    def positions(self, mask: torch.Tensor, input_ids: torch.Tensor, inputs: PixelInputs, offset: int) -> torch.Tensor:
        """Position ids of a left-padded prompt: (B, L) counting real tokens from 0 (``offset`` virtual tokens
        in front of ``input_ids`` included in ``mask``)."""
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def next_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) position of the token after the prompt."""
        return positions[..., -1] + 1

    def continuation_positions(self, start: torch.Tensor, length: int) -> torch.Tensor:
        """(R, length) positions of tokens following a prompt whose next position is ``start`` (R,)."""
        return start.unsqueeze(-1) + torch.arange(length, device=start.device)

    def prefix_mask(self, mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
        """The attention mask of the prompt pass (``query_length`` new tokens after any cached ones in ``mask``
        (B, P+L)): the 2-D padding mask itself (causal attention)."""
        return mask

    def tokenize(self, prompts: Sequence[str]) -> dict:
        """Token ids and character offsets of full prompt strings, as the family's processor tokenises them."""
        return self.tokenizer(list(prompts), add_special_tokens=self.add_special_tokens, return_offsets_mapping=True)

    def fallback_prompt(self, content: str) -> str:
        return self.fallback.format(image=self.image_token, content=content)


class Llava(Family):
    """LLaVA-1.5 style (``LlavaForConditionalGeneration``): CLIP/SigLIP tower, feature layer, MLP projector."""

    name, model_types = "llava", ("llava",)

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_tower

    def image_tokens(self, inputs: PixelInputs) -> int:
        """Patches, plus the class token of a CLIP tower unless the "default" strategy drops it."""
        patch = self.config.vision_config.patch_size
        height, width = inputs.values.shape[-2:]
        has_class = hasattr(self.vision_tower.vision_model.embeddings, "class_embedding")
        keeps_class = has_class and self.config.vision_feature_select_strategy == "full"
        return (height // patch) * (width // patch) + int(keeps_class)

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        features = self.model.model.get_image_features(pixel_values=inputs.values.to(self.vision_tower.dtype))
        return torch.stack(list(features))

    def prompt_layers_limit(self) -> int:
        layers = self.config.vision_feature_layer
        first = min(layers) if isinstance(layers, (list, tuple)) else layers
        total = len(self.vision_layers)
        return first if first >= 0 else total + 1 + first  # hidden_states[i] is the output of layer i - 1


class LlavaNext(Llava):
    """LLaVA-NeXT / LLaVA-1.6 (``LlavaNextForConditionalGeneration``): "anyres" tiling. The image is resized (aspect
    kept) into the best of the grid pinpoints, zero-padded to it and cut into crop-size tiles, after a base view of
    the whole image squashed to the crop size; the features of the tiles are un-padded and get a newline
    embedding per row (HF's ``pack_image_features``)."""

    name, model_types = "llava-next", ("llava_next",)

    def default_image_size(self) -> int:
        """The largest square pinpoint side (a square image then fills a full grid of tiles)."""
        squares = [h for h, w in self.image_processor.image_grid_pinpoints if h == w]
        return int(max(squares)) if squares else super().default_image_size()

    def preprocess(self, pixels: torch.Tensor) -> PixelInputs:
        """(B, 3, H, W) -> (B, 1 + tiles, 3, c, c): the base view, then the tiles row-major; ``image_sizes`` (B, 2)."""
        from transformers.image_processing_utils import get_patch_output_size, select_best_resolution

        processor = self.image_processor
        x = pixels.float()
        height, width = x.shape[-2:]
        best = select_best_resolution((height, width), processor.image_grid_pinpoints)
        new_h, new_w = get_patch_output_size(np.empty((height, width, 3)), best, "channels_last")
        resized = pil_resize(x, (new_h, new_w), self.resample)
        top, left = (best[0] - new_h) // 2, (best[1] - new_w) // 2
        padded = torch.nn.functional.pad(resized, (left, best[1] - new_w - left, top, best[0] - new_h - top))
        crop = int(dict(processor.crop_size)["height"])
        tiles = [padded[..., r : r + crop, c : c + crop] for r in range(0, best[0], crop) for c in range(0, best[1], crop)]
        size = dict(processor.size)
        side = int(size["shortest_edge"]) if "shortest_edge" in size else min(int(size["height"]), int(size["width"]))
        views = [pil_resize(x, (side, side), self.resample)] + tiles
        views = [center_crop(pil_resize(v, (side, side), self.resample), (crop, crop)) for v in views]
        values = _normalise(torch.stack(views, dim=1), processor)
        sizes = torch.tensor([[height, width]] * x.shape[0], dtype=torch.long, device=x.device)
        return PixelInputs(values, {"image_sizes": sizes})

    def image_tokens(self, inputs: PixelInputs) -> int:
        """Counted from the packed features of one image of this size (un-padding makes a formula fragile)."""
        one = PixelInputs(inputs.values[:1], {"image_sizes": inputs.extra["image_sizes"][:1]})
        with torch.no_grad():
            return int(self.image_features(one).shape[1])

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        features = self.model.model.get_image_features(pixel_values=inputs.values.to(self.vision_tower.dtype),
                                                       image_sizes=inputs.extra["image_sizes"])
        return torch.stack(list(features))


class PaliGemma(Family):
    """PaliGemma (``PaliGemmaForConditionalGeneration``): SigLIP tower, linear projector, Gemma; image tokens,
    then BOS and the prompt, with bidirectional attention over that prefix and 1-based positions."""

    name, model_types = "paligemma", ("paligemma",)
    add_special_tokens = False  # PaliGemmaProcessor writes "<image>"*N + BOS + prompt + "\n" itself
    fallback = "answer en {content}"  # the task prefix PaliGemma checkpoints are trained with

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_tower

    def image_tokens(self, inputs: PixelInputs) -> int:
        patch = self.config.vision_config.patch_size
        height, width = inputs.values.shape[-2:]
        return (height // patch) * (width // patch)

    def image_block(self, inputs: PixelInputs) -> str:
        return self.image_token * self.image_tokens(inputs) + (self.tokenizer.bos_token or "")

    def fallback_prompt(self, content: str) -> str:
        return self.image_token + self.fallback.format(content=content) + "\n"

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        return self.model.model.get_image_features(inputs.values.to(self.vision_tower.dtype))

    def positions(self, mask, input_ids, inputs, offset):
        return super().positions(mask, input_ids, inputs, offset) + 1  # "Paligemma positions are 1-indexed"

    def prefix_mask(self, mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, L, P+L) additive mask: every prompt token attends to every real token (PaliGemma's prefix-LM)."""
        blocked = ~mask.bool()[:, None, None, :].expand(-1, 1, query_length, -1)
        return torch.zeros(blocked.shape, dtype=dtype, device=mask.device).masked_fill(blocked, torch.finfo(dtype).min)


class Qwen2VL(Family):
    """Qwen2-VL (``Qwen2VLForConditionalGeneration``): native-resolution patches (resized to multiples of 28),
    packed into (N, 3*2*14*14) rows, a rotary ViT with 2x2 patch merging, and 3-D (t, h, w) rotary positions."""

    name, model_types = "qwen2-vl", ("qwen2_vl",)
    image_token = "<|image_pad|>"
    packed_vision = True
    fallback = "<|vision_start|>{image}<|vision_end|>\n{content}\nAnswer:"

    def default_image_size(self) -> int:
        """448 (256 image tokens) clipped to the processor's pixel limits."""
        return self._resized(448, 448)[0]

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        processor = self.image_processor
        size = dict(processor.size)
        factor = processor.patch_size * processor.merge_size
        return smart_resize(height, width, factor=factor, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])

    def preprocess(self, pixels: torch.Tensor) -> PixelInputs:
        """(B, 3, H, W) -> rows (B * gh * gw, 3 * T * p * p) in the processor's patch order, grid (B, 3) = (1, gh, gw)."""
        processor = self.image_processor
        x = pixels.float()
        height, width = self._resized(*x.shape[-2:])
        x = _normalise(pil_resize(x, (height, width), self.resample), processor)
        b, c = x.shape[:2]
        patch, merge, temporal = processor.patch_size, processor.merge_size, processor.temporal_patch_size
        gh, gw = height // patch, width // patch
        x = x.unsqueeze(1).expand(b, temporal, c, height, width)  # one frame repeated over the temporal patch
        x = x.reshape(b, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(b * gh * gw, c * temporal * patch * patch)
        grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=x.device)
        return PixelInputs(x, {"image_grid_thw": grid})

    def image_tokens(self, inputs: PixelInputs) -> int:
        return int(inputs.extra["image_grid_thw"][0].prod()) // self.image_processor.merge_size ** 2

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        visual = self.model.model.visual
        features = visual(inputs.values.to(visual.dtype), grid_thw=inputs.extra["image_grid_thw"])
        return features.view(inputs.extra["image_grid_thw"].shape[0], -1, features.shape[-1])

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.visual

    @property
    def patch_embedding(self) -> nn.Module:
        return self.vision_tower.patch_embed

    @property
    def vision_dim(self) -> int:
        return int(self.config.vision_config.embed_dim)

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.blocks

    def positions(self, mask, input_ids, inputs, offset):
        """(3, B, L) rotary positions: Qwen2-VL's ``get_rope_index`` over the real tokens, after ``offset``
        virtual tokens at positions 0..offset-1."""
        real = mask[:, offset:]
        rope, _ = self.model.model.get_rope_index(input_ids, inputs.extra["image_grid_thw"], None, real)
        rope = rope.to(mask.device) + offset
        if offset:
            front = torch.arange(offset, device=mask.device).view(1, 1, -1).expand(3, mask.shape[0], -1)
            rope = torch.cat([front, rope], dim=-1)
        return rope.masked_fill(~mask.bool().unsqueeze(0), 1)

    def next_positions(self, positions: torch.Tensor) -> torch.Tensor:
        return positions.amax(dim=(0, 2)) + 1  # text after the image continues from the largest position

    def continuation_positions(self, start: torch.Tensor, length: int) -> torch.Tensor:
        return super().continuation_positions(start, length).unsqueeze(0).expand(3, -1, -1)


class Idefics3(Family):
    """Idefics3 / SmolVLM (``Idefics3ForConditionalGeneration``): the image resized to a multiple of the tile
    size (longest edge), cut into tiles plus a downscaled global image, each through a SigLIP-style tower and
    a pixel-shuffle connector; the prompt names each tile (``<row_r_col_c>``)."""

    name, model_types = "idefics3", ("idefics3", "smolvlm")

    def default_image_size(self) -> int:
        return int(dict(self.image_processor.size)["longest_edge"])

    def preprocess(self, pixels: torch.Tensor) -> PixelInputs:
        """(B, 3, H, W) -> tiles (B, T, 3, M, M): row-major tiles of the resized image, then the global image."""
        from transformers.models.idefics3.image_processing_idefics3 import get_resize_output_image_size

        processor = self.image_processor
        x = pixels.float()
        tile = int(dict(processor.max_image_size)["longest_edge"])
        if processor.do_resize:  # longest edge to size["longest_edge"], as Idefics3ImageProcessor.resize
            shape = np.empty((x.shape[-2], x.shape[-1], 3), dtype=np.uint8)
            x = pil_resize(x, get_resize_output_image_size(shape, int(dict(processor.size)["longest_edge"])), self.resample)
        rows = cols = 0
        frames = []
        if processor.do_image_splitting:
            height, width = x.shape[-2:]
            aspect = width / height
            if width >= height:
                width = math.ceil(width / tile) * tile
                height = math.ceil(int(width / aspect) / tile) * tile
            else:
                height = math.ceil(height / tile) * tile
                width = math.ceil(int(height * aspect) / tile) * tile
            x = pil_resize(x, (height, width), self.resample)
            if height > tile or width > tile:
                rows, cols = math.ceil(height / tile), math.ceil(width / tile)
                step_h, step_w = math.ceil(height / rows), math.ceil(width / cols)
                if step_h != tile or step_w != tile:
                    raise RobustMMError(f"Idefics3 tiles of {step_h}x{step_w} pixels need padding, which robustmm does not "
                                        f"reproduce; give square images (the runner does).")
                frames = [x[..., r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)]
        frames.append(pil_resize(x, (tile, tile), self.resample))
        values = _normalise(torch.stack(frames, dim=1), processor)
        return PixelInputs(values, {"rows": rows, "cols": cols})

    def image_block(self, inputs: PixelInputs) -> str:
        from transformers.models.idefics3.processing_idefics3 import get_image_prompt_string

        return get_image_prompt_string(inputs.extra["rows"], inputs.extra["cols"], self.tile_tokens(),
                                       fake_token_around_image="<fake_token_around_image>", image_token=self.image_token,
                                       global_img_token="<global-img>")

    def tile_tokens(self) -> int:
        vision = self.config.vision_config
        return int((vision.image_size // vision.patch_size) ** 2 / self.config.scale_factor ** 2)

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        """Every tile through the vision tower (HF's ``get_image_features`` would drop an all-zero tile) and the connector."""
        b = inputs.values.shape[0]
        tiles = inputs.values.flatten(0, 1).to(self.vision_tower.dtype)
        patch = self.config.vision_config.patch_size
        mask = torch.ones(tiles.shape[0], tiles.shape[-2] // patch, tiles.shape[-1] // patch, dtype=torch.bool, device=tiles.device)
        hidden = self.vision_tower(pixel_values=tiles, patch_attention_mask=mask).last_hidden_state
        features = self.model.model.connector(hidden)
        return features.reshape(b, -1, features.shape[-1])

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_model

    @property
    def patch_embedding(self) -> nn.Module:
        return self.vision_tower.embeddings.patch_embedding

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.encoder.layers

    @property
    def language_model(self) -> nn.Module:
        return self.model.model.text_model


class Blip2(Family):
    """BLIP-2 (``Blip2ForConditionalGeneration``) with a decoder-only language model (OPT): ViT, Q-Former
    queries, a linear projection; the processor puts one image token per query before BOS and the text."""

    name, model_types = "blip2", ("blip-2",)
    fallback = "Question: {content} Answer:"  # BLIP-2's VQA prompt (Li et al. 2023, section 4.1)

    def __init__(self, model, image_processor, tokenizer) -> None:
        if not model.config.use_decoder_only_language_model:
            raise RobustMMError("BLIP-2 with an encoder-decoder language model (Flan-T5) is not supported; "
                                "BLIP-2 with a decoder-only one (OPT) is.")
        if model.config.image_token_id is None:
            raise RobustMMError("This BLIP-2 checkpoint has no image_token_index in its config (saved before transformers "
                                "4.47 added image tokens); re-save it with a current processor and config.")
        super().__init__(model, image_processor, tokenizer)

    def image_tokens(self, inputs: PixelInputs) -> int:
        return self.config.num_query_tokens

    image_in_text = False  # the image tokens go before the tokenised text (see tokenize)

    def fallback_prompt(self, content: str) -> str:
        return self.fallback.format(content=content)

    def tokenize(self, prompts: Sequence[str]) -> dict:
        """Image tokens (one per query, no BOS before them), then the text tokenised with its BOS, as Blip2Processor."""
        encoded = self.tokenizer(list(prompts), add_special_tokens=True, return_offsets_mapping=True)
        n = self.config.num_query_tokens
        encoded["input_ids"] = [[self.config.image_token_id] * n + ids for ids in encoded["input_ids"]]
        encoded["offset_mapping"] = [[(0, 0)] * n + list(spans) for spans in encoded["offset_mapping"]]
        return encoded

    def image_features(self, inputs: PixelInputs) -> torch.Tensor:
        model = self.model
        image = model.vision_model(pixel_values=inputs.values.to(model.vision_model.dtype)).last_hidden_state
        mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        queries = model.query_tokens.expand(image.shape[0], -1, -1)
        query = model.qformer(query_embeds=queries, encoder_hidden_states=image, encoder_attention_mask=mask).last_hidden_state
        return model.language_projection(query.to(image.dtype))

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def patch_embedding(self) -> nn.Module:
        return self.vision_tower.embeddings.patch_embedding

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.encoder.layers

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model.model  # OPTModel: decoder without head

    @property
    def lm_head(self) -> nn.Module:
        return self.model.language_model.lm_head


FAMILIES: dict[str, type[Family]] = {cls.name: cls for cls in (Llava, LlavaNext, PaliGemma, Qwen2VL, Idefics3, Blip2)}
MODEL_TYPES = {t: cls for cls in FAMILIES.values() for t in cls.model_types}


def family_for(model_type: str | None) -> type[Family] | None:
    """The family class of an HF ``model_type``, or None."""
    return MODEL_TYPES.get(str(model_type))
