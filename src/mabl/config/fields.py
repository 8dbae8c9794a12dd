"""The machinery under every config section: a field with its help text, and dotted-path access to
nested frozen dataclasses (``model.hidden``), as the CLI, config files and migrations use it."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from mabl.errors import MablError


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with its ``--help`` text and, optionally, its allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


def iter_fields(obj: Any, prefix: str = ""):
    """Yield ``(dotted_path, dataclass_field, value)`` for every leaf field, depth first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, path + ".")
        else:
            yield path, f, value


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
            raise MablError(f"unknown config field '{path}'")
        obj = getattr(obj, part)
    return obj


def field_type(obj: Any, path: str) -> type:
    """The Python type of a leaf field (taken from its default value)."""
    return type(get_path(obj, path))


def replace_path(obj: Any, path: str, value: Any) -> Any:
    """Return a copy of ``obj`` with the dotted ``path`` set to ``value`` (frozen dataclasses)."""
    head, _, rest = path.partition(".")
    if not any(f.name == head for f in dataclasses.fields(obj)):
        raise MablError(f"unknown config field '{path}'")
    if rest:
        return dataclasses.replace(obj, **{head: replace_path(getattr(obj, head), rest, value)})
    return dataclasses.replace(obj, **{head: value})


def coerce(obj: Any, path: str, text: Any) -> Any:
    """Convert ``text`` (a CLI string or a JSON value) to the type of field ``path``."""
    kind = field_type(obj, path)
    if isinstance(text, kind) and not (kind is int and isinstance(text, bool)):
        return text
    try:
        if kind is bool:
            low = str(text).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        return kind(text)
    except (TypeError, ValueError):
        raise MablError(f"--{path}={text!r} is not a valid {kind.__name__}") from None
