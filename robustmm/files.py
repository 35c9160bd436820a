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


def read_json_lines(path: str | Path, what: str) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-blank line."""
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
        rows.append(row)
    return rows


def text_field(row: dict, key: str, where: str) -> str:
    """``row[key]`` as a non-empty string; a missing, null or non-text value is one sentence naming ``where``."""
    value = row.get(key)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
        raise RobustMMError(f"{where} has no text in '{key}' (got {value!r}).")
    return str(value)
