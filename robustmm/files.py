"""Reading the text files robustmm is given (datasets, configs, run folders) with one clear sentence
for every way they can be unreadable: missing, not UTF-8, not JSON, or JSON of the wrong shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustmm.errors import RobustMMError


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path`` (``what`` names it in errors, e.g. "SNLI-VE file")."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError as err:
        raise RobustMMError(f"{what} {path} does not exist.") from err
    except UnicodeDecodeError as err:
        raise RobustMMError(f"{what} {path} is not UTF-8 text (byte {err.start} cannot be decoded).") from err
    except OSError as err:
        raise RobustMMError(f"{what} {path} cannot be read ({err.strerror or err}).") from err


def read_json(path: str | Path, what: str, kind: type = dict) -> Any:
    """The JSON value in ``path``, which must be a ``kind`` (dict or list)."""
    text = read_text(path, what)
    try:
        data = json.loads(text)
    except ValueError as err:
        raise RobustMMError(f"{what} {path} is not valid JSON ({err}).") from err
    if not isinstance(data, kind):
        raise RobustMMError(f"{what} {path} must hold a JSON {'object' if kind is dict else 'list'}, not {type(data).__name__}.")
    return data


def read_json_lines(path: str | Path, what: str, numbered: bool = False) -> list:
    """The JSON objects of a JSON-lines file, one per non-blank line; ``numbered``: (line number, object) pairs."""
    rows = []
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise RobustMMError(f"Line {number} of {what} {path} is not valid JSON ({err}).") from err
        if not isinstance(row, dict):
            raise RobustMMError(f"Line {number} of {what} {path} is not a JSON object.")
        rows.append((number, row) if numbered else row)
    return rows


def text_field(row: dict, key: str, where: str) -> str:
    """``row[key]`` as a non-empty string; a missing, null or non-text value is one sentence naming ``where``."""
    value = row.get(key)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
        raise RobustMMError(f"{where} has no text in '{key}' (got {value!r}).")
    return str(value)


def config_from_dict(cls, data, what: str):
    """``cls(**data)`` for a dataclass of plain fields (int, float, bool, str, tuples of them, optional), with one
    sentence for a non-object, an unknown key or a value of the wrong type (``what`` names the config)."""
    import dataclasses
    import typing

    if not isinstance(data, dict):
        raise RobustMMError(f"{what} must be a JSON object, not {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RobustMMError(f"{what} has an unknown key {unknown[0]!r}; it takes {', '.join(fields)}.")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _fits(value, hints.get(key)):
            raise RobustMMError(f"{what} has {key} = {value!r}, which is not a {_name(hints.get(key))}.")
    return cls(**data)


def _fits(value, hint) -> bool:
    import typing

    if hint is None or hint is typing.Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple or hint is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _name(hint) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))
