"""Opening image files with clear errors, and turning images into [0,1] pixel tensors."""

from __future__ import annotations

from pathlib import Path

from robustmm.errors import RobustMMError

MAX_PIXELS = 50_000_000  # larger images are refused before decoding (Pillow warns at 89M and refuses at 179M)


def open_image(image):
    """Return ``image`` (a path or a PIL image) as an RGB ``PIL.Image``.

    Raises RobustMMError naming the file when it is missing, unreadable or corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise RobustMMError(f"Image file {path} does not exist.")
    if path.stat().st_size == 0:
        raise RobustMMError(f"Image file {path} is empty (0 bytes).")
    try:
        with Image.open(path) as handle:
            if handle.width * handle.height > MAX_PIXELS:
                raise RobustMMError(f"Image file {path} is {handle.width}x{handle.height} pixels, too large: robustmm "
                                    f"decodes at most {MAX_PIXELS:,} pixels; downscale it first.")
            handle.load()
            return handle.convert("RGB")
    except Image.DecompressionBombError as err:
        raise RobustMMError(f"Image file {path} is too large to decode safely ({err}).") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RobustMMError(f"Image file {path} is unreadable or corrupt ({type(err).__name__}: {err}).") from err


def to_tensor(images, size: int):
    """Stack images (paths or PIL) into a float tensor of shape (B, 3, size, size) in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = []
    for image in images:
        pil = open_image(image)
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(pil, dtype=np.float32) / 255.0)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return batch.clamp_(0.0, 1.0)
