"""Telling apart runs of one algorithm trained with different settings.

A report pools every run of a (task, algorithm) cell. Runs of one algorithm on one task whose
configs differ in a setting that changes training (an override such as ``--mappo.epochs 5``, another
preset, another step budget, another env reading) are not seeds of one experiment, so they get a
variant label and a cell each: ``mappo [mappo.epochs=5]`` beside ``mappo [mappo.epochs=15]``.

Configs are compared as :func:`mabl.config_migration.from_dict` reads them, so a run saved by an
earlier version compares with the values that version trained with. Fields that do not change what
is learned (:data:`NOT_SETTINGS`: the seed, where the run lives, the device, threads, logging,
checkpointing and evaluation schedule) are not compared, nor are the config sections the run never
reads: those of other algorithms (the registry's ``config_sections``) and of other env families
(``flatland.*`` on a ``smax:`` task). The label names the fewest differing
fields that tell every variant of the cell apart (the fields with the most distinct values first, then
by name), or the preset's name where presets split the runs exactly as their settings do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NOT_SETTINGS = frozenset({
    "seed", "run_dir", "device", "threads", "progress", "log", "checkpoint_every", "diagnose_every",
    "eval_every", "eval_episodes", "max_skipped_updates", "compile",
})
"""Top-level config fields left out of the comparison: they do not change what a run learns."""


def read_sections(config: dict[str, Any]) -> set[str] | None:
    """The config sections a run of this config reads: its algorithm's (registry) and its env
    family's; None (all of them) for an algorithm the registry does not know."""
    from mabl.algo import ALGORITHMS

    entry = ALGORITHMS.get(str(config.get("algo")))
    if entry is None:
        return None
    algo_sections = {section for a in ALGORITHMS.values() for section in a.config_sections}
    env_sections = {k for k, v in config.items() if isinstance(v, dict)} - algo_sections
    family = str(config.get("env", "")).split(":", 1)[0]
    return set(entry.config_sections) | ({family} & env_sections)


def flat_settings(config: dict[str, Any]) -> dict[str, str]:
    """The config's fields as ``{"section.field": repr(value)}``, read through the config migration
    (a config it cannot read is compared as saved), without :data:`NOT_SETTINGS` and without the
    sections the run does not read (:func:`read_sections`)."""
    from mabl.config import to_dict
    from mabl.config_migration import from_dict
    from mabl.errors import MablError

    try:
        full = to_dict(from_dict(dict(config)))
    except (MablError, TypeError, ValueError, KeyError):
        full = config
    sections = read_sections(full)
    kept = {k: v for k, v in full.items() if k not in NOT_SETTINGS
            and (not isinstance(v, dict) or sections is None or k in sections)}
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = _show(value)

    walk("", kept)
    return flat


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def variant_labels(settings: Sequence[dict[str, str]]) -> list[str]:
    """One label per run of a cell: ``""`` when all runs share their settings, else ``k=v, ...`` over
    the fewest differing fields whose values tell every distinct setting apart. ``preset`` is a name,
    not a setting: it is never what splits a cell, but it is the label when it splits the runs exactly
    as their settings do."""
    absent = "(absent)"
    keys = sorted({k for s in settings for k in s} - {"preset"})
    spread = {k: len({s.get(k, absent) for s in settings}) for k in keys}
    differing = [k for k in keys if spread[k] > 1]
    if not differing:
        return [""] * len(settings)

    def partition(chosen: Sequence[str]) -> set[frozenset[int]]:
        groups: dict[tuple[str, ...], set[int]] = {}
        for i, s in enumerate(settings):
            groups.setdefault(tuple(s.get(k, absent) for k in chosen), set()).add(i)
        return {frozenset(g) for g in groups.values()}

    target = partition(differing)
    if partition(["preset"]) == target:
        chosen = ["preset"]
    else:
        chosen = []
        for key in sorted(differing, key=lambda k: (-spread[k], k)):
            chosen.append(key)
            if partition(chosen) == target:
                break
        chosen.sort()
    return [", ".join(f"{k}={s.get(k, absent)}" for k in chosen) for s in settings]


def assign_variants(runs: Sequence[Any]) -> None:
    """Set ``run.variant`` on every run (a :class:`~mabl.report.runs.RunData`), per (task, algorithm)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for run in runs:
        groups.setdefault((run.env, run.algo), []).append(run)
    for group in groups.values():
        labels = variant_labels([flat_settings(run.config) for run in group])
        for run, label in zip(group, labels):
            run.variant = label
