"""Attack presets: TOML files in the top-level ``attacks/`` folder.

A preset file holds one or more ``[[attack]]`` tables; each names a registered attack and
gives its parameters (numbers, booleans, strings; fractions such as ``"8/255"`` allowed).
A *suite* (e.g. ``attacks/paper.toml``) is the same format with several tables. An
optional top-level ``description`` string says what the file is for::

    description = "PGD-L∞ at the usual CIFAR budget"

    [[attack]]
    name = "pgd-linf"
    eps = "8/255"
    steps = 10

``load_preset("pgd-linf")`` (a preset name) or ``load_preset("path/to/file.toml")`` ->
list of attacks; ``list_presets()`` -> ``{name: path}``.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

from robustmm.attacks.base import Attack, get_attack
from robustmm.errors import RobustMMError


def presets_dir() -> Path:
    """The folder of built-in presets: ``robustmm/presets``, a link to the source tree's top-level ``attacks/``
    (the folder users edit) that a wheel install carries as package data."""
    return Path(str(importlib.resources.files("robustmm") / "presets"))


def list_presets(folder: str | Path | None = None) -> dict[str, Path]:
    """Preset name (file stem) -> path of every ``*.toml`` in ``folder`` (default: the built-in ones), sorted."""
    folder = Path(folder) if folder is not None else presets_dir()
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def _resolve(preset: str | Path) -> Path:
    path = Path(preset)
    if path.is_file():
        return path
    if path.suffix != ".toml" and len(path.parts) == 1:
        presets = list_presets()
        if str(preset) in presets:
            return presets[str(preset)]
        raise RobustMMError(f"Unknown attack preset {str(preset)!r}: choose from {', '.join(presets) or 'none'} or give a .toml path.")
    raise RobustMMError(f"Attack preset file {path} does not exist.")


def load_preset(preset: str | Path) -> list[Attack]:
    """Build the attacks of a preset (a name from :func:`list_presets` or a TOML path), in file order."""
    path = _resolve(preset)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RobustMMError(f"Attack preset {path} is not valid TOML ({err}).") from err
    except OSError as err:
        raise RobustMMError(f"Attack preset {path} cannot be read ({err.strerror}).") from err
    unknown = sorted(set(data) - {"attack", "description"})
    if unknown:
        raise RobustMMError(f"Attack preset {path} has unknown top-level key {unknown[0]!r}; use [[attack]] tables.")
    tables = data.get("attack")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise RobustMMError(f"Attack preset {path} needs at least one [[attack]] table.")
    attacks = []
    for number, table in enumerate(tables, start=1):
        params = dict(table)
        name = params.pop("name", None)
        if not isinstance(name, str) or not name:
            raise RobustMMError(f"Attack {number} in preset {path} has no name = \"...\".")
        try:
            attacks.append(get_attack(name, **params))
        except RobustMMError as err:
            raise RobustMMError(f"Attack {number} in preset {path}: {err}") from err
    return attacks
