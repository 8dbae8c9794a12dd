"""``--config FILE.yaml``: a run's config fields read from a YAML file."""

from __future__ import annotations

from typing import Any

from mabl.config.fields import coerce, field_type
from mabl.errors import MablError


def load_config_file(path: str) -> dict[str, Any]:
    """Read ``--config FILE.yaml``: a mapping of config fields, as dotted keys (``model.hidden: 128``),
    nested mappings (``model: {hidden: 128}``) or both; ``preset`` is a field too. Hyphens in names
    are read as underscores (``run-dir``). Returns ``{dotted_path: value}`` with each value converted
    to its field's type. Raises a one-line :class:`MablError` naming the file and the key for an
    unreadable file, an unknown key or a value of the wrong type."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise MablError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MablError(f"--config {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MablError(f"--config {path}: must be a mapping of config fields, e.g. 'steps: 100000'")

    def flatten(node: dict, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = prefix + str(key).replace("-", "_")
            if isinstance(value, dict):
                out.update(flatten(value, name + "."))
            else:
                out[name] = value
        return out

    from mabl.config import RunConfig

    defaults, values = RunConfig(), {}
    for key, value in flatten(data, "").items():
        try:
            kind = field_type(defaults, key)
        except MablError:
            raise MablError(f"--config {path}: unknown key '{key}' (the keys are the flags of `mabl train --help`, "
                            "e.g. steps, model.hidden)") from None
        # (a number written as text, such as 1e5, which YAML 1.1 reads as a string, is converted as on the
        # command line; a bool is not a number and a number is not a bool)
        bad = (f"--config {path}: key '{key}' must be {'an' if kind is int else 'a'} {kind.__name__}, "
               f"not {value!r}")
        if isinstance(value, (list, tuple, set)) or (isinstance(value, bool) and kind is not bool) or (
                isinstance(value, float) and kind is int and not value.is_integer()) or (
                kind is bool and not isinstance(value, bool)):
            raise MablError(bad)
        try:
            values[key] = coerce(defaults, key, value)
        except MablError:
            raise MablError(bad) from None
    return values
