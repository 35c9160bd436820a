"""Where robustmm keeps generated data (the derived easy-VE set, WordNet copy).

``ROBUSTMM_HOME`` overrides the default ``~/.cache/robustmm``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$ROBUSTMM_HOME/<parts...>``."""
    root = Path(os.environ.get("ROBUSTMM_HOME") or Path.home() / ".cache" / "robustmm")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_root() -> Path:
    """The installed ``robustmm`` package folder."""
    return Path(__file__).resolve().parent
