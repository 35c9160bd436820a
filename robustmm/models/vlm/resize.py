"""Image resizing in torch that reproduces Pillow's ``Image.resize`` (the resize every slow Hugging Face
image processor uses), so gradients reach the [0, 1] pixels an attack perturbs.

Pillow resamples separably: each output pixel ``i`` of an axis is a weighted sum of the input pixels
within ``support * max(scale, 1)`` of its centre ``(i + 0.5) * scale`` (``scale = in / out``), the
weights being the filter evaluated at ``(x + 0.5 - centre) / max(scale, 1)`` and normalised to sum to 1
(Pillow's ``precompute_coeffs`` in ``libImaging/Resample.c``). That is a fixed (out, in) matrix per axis,
so a resize is ``A_h @ image @ A_w.T`` here, computed in float64 once per size pair and cached.

Pillow runs the horizontal pass, stores it as uint8 (clamped to [0, 255]), then the vertical pass; here
the same two passes run with the intermediate clamped to [0, 1] but not rounded, and fixed-point weights
are not imitated, so the result differs from Pillow's by at most about one uint8 step (1/255).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from robustmm.errors import RobustMMError


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x *= math.pi
    return math.sin(x) / x * (0.54 + 0.46 * math.cos(x))


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


# Pillow's resampling filters: name -> (filter, support). PIL.Image.Resampling values map to the names below.
FILTERS = {"box": (_box, 0.5), "bilinear": (_bilinear, 1.0), "hamming": (_hamming, 1.0), "bicubic": (_bicubic, 2.0),
           "lanczos": (_lanczos, 3.0)}
PIL_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def filter_name(resample) -> str:
    """A Pillow / HF ``resample`` value (int, enum or name) -> one of ``nearest``, ``box``, ``bilinear``,
    ``hamming``, ``bicubic``, ``lanczos``."""
    if isinstance(resample, str):
        name = resample.lower()
    else:
        name = PIL_CODES.get(int(getattr(resample, "value", resample)), "")
    if name not in FILTERS and name != "nearest":
        raise RobustMMError(f"Unknown resampling filter {resample!r}: robustmm reproduces {', '.join(PIL_CODES.values())}.")
    return name


@lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int, resample: str) -> torch.Tensor:
    """(out_size, in_size) float64 matrix of Pillow's 1-D resampling weights for ``resample``."""
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    scale = in_size / out_size
    if resample == "nearest":  # Pillow: source pixel int((i + 0.5) * scale)
        for i in range(out_size):
            matrix[i, min(in_size - 1, int((i + 0.5) * scale))] = 1.0
        return matrix
    kernel, support = FILTERS[resample]
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    for i in range(out_size):
        centre = (i + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), in_size)
        weights = [kernel((x + 0.5 - centre) / filter_scale) for x in range(low, high)]
        total = sum(weights)
        if total != 0.0:
            matrix[i, low:high] = torch.tensor(weights, dtype=torch.float64) / total
    return matrix


def pil_resize(pixels: torch.Tensor, size: tuple[int, int], resample: str = "bicubic") -> torch.Tensor:
    """Resize (..., H, W) float images in [0, 1] to ``size`` = (h, w) as Pillow would; differentiable.

    Returns (..., h, w) in the input dtype, clamped to [0, 1]; the input itself when the size is unchanged
    (Pillow copies the image then).
    """
    height, width = int(size[0]), int(size[1])
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    if pixels.shape[-1] != width:  # Pillow's horizontal pass first, clamped as its uint8 intermediate is
        cols = resize_matrix(pixels.shape[-1], width, resample).to(pixels.device, pixels.dtype)
        pixels = (pixels @ cols.transpose(0, 1)).clamp(0.0, 1.0)
    if pixels.shape[-2] != height:
        rows = resize_matrix(pixels.shape[-2], height, resample).to(pixels.device, pixels.dtype)
        pixels = (rows @ pixels).clamp(0.0, 1.0)
    return pixels


def center_crop(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre (h, w) window of (..., H, W) images, as ``transformers.image_transforms.center_crop``
    (top = (H - h) // 2, left = (W - w) // 2); a side smaller than the crop is zero-padded first, centred."""
    height, width = int(size[0]), int(size[1])
    in_h, in_w = pixels.shape[-2:]
    if in_h < height or in_w < width:
        pad_h, pad_w = max(height - in_h, 0), max(width - in_w, 0)
        top, left = math.ceil(pad_h / 2), math.ceil(pad_w / 2)
        pixels = torch.nn.functional.pad(pixels, (left, pad_w - left, top, pad_h - top))
        in_h, in_w = pixels.shape[-2:]
    top, left = (in_h - height) // 2, (in_w - width) // 2
    return pixels[..., top : top + height, left : left + width]
