"""Runs of one algorithm with different settings get a cell each in a report (mabl.report.variants)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mabl.config import to_dict
from mabl.presets import build_config
from mabl.report import final_window_stats, find_runs, markdown_table, write_report
from mabl.report.variants import flat_settings, variant_labels


def write_run(run_dir: Path, config: dict, wins: list[bool]) -> Path:
    """A run directory with ``config`` and one episode per entry of ``wins``, 1000 env steps apart."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = [json.dumps({"kind": "episode", "env_step": 1000 * (i + 1), "episode": i + 1, "return": float(w),
                         "length": 10, "win": w}) for i, w in enumerate(wins)]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run_dir


def full_config(seed: int, **overrides) -> dict:
    return to_dict(build_config("debug", {"env": "smax:3m", "algo": "mappo", "seed": seed, **overrides}))


def mabl_config(seed: int, **overrides) -> dict:
    return full_config(seed, algo="mabl", **overrides)


def test_labels_name_the_fewest_fields_that_tell_settings_apart():
    same = {"a": "1", "b": "x"}
    assert variant_labels([same, dict(same)]) == ["", ""]
    # b alone separates the three settings; a differs too but adds nothing
    settings = [{"a": "1", "b": "x"}, {"a": "1", "b": "y"}, {"a": "2", "b": "z"}]
    assert variant_labels(settings) == ["b=x", "b=y", "b=z"]
    # neither field alone separates the four settings: both are named, in name order
    settings = [{"a": "1", "b": "x"}, {"a": "1", "b": "y"}, {"a": "2", "b": "x"}, {"a": "2", "b": "y"}]
    assert variant_labels(settings) == ["a=1, b=x", "a=1, b=y", "a=2, b=x", "a=2, b=y"]
    # a field one run lacks is named as absent
    assert variant_labels([{"c": "1"}, {}]) == ["c=1", "c=(absent)"]
    # the preset names the variants where it splits the runs as their settings do ...
    settings = [{"preset": "cpu", "h": "128"}, {"preset": "paper", "h": "256"}, {"preset": "cpu", "h": "128"}]
    assert variant_labels(settings) == ["preset=cpu", "preset=paper", "preset=cpu"]
    # ... but a preset name alone never splits runs whose settings agree
    assert variant_labels([{"preset": "cpu", "h": "1"}, {"preset": "quick", "h": "1"}]) == ["", ""]
    settings = [{"preset": "cpu", "h": "1"}, {"preset": "quick", "h": "1"}, {"preset": "quick", "h": "2"}]
    assert variant_labels(settings) == ["h=1", "h=1", "h=2"]


def test_seed_run_dir_and_device_are_not_settings():
    a = flat_settings(full_config(0, run_dir="runs/a", device="cpu", threads=1, eval_every=500))
    b = flat_settings(full_config(7, run_dir="runs/b", device="auto", threads=2, eval_every=0))
    assert a == b
    assert "mappo.epochs" in a and "seed" not in a and "run_dir" not in a
    # sections the run never reads: another algorithm's (mabl's world model) and another env family's
    assert not any(k.startswith(("model.", "policy.", "flatland.", "mamujoco.")) for k in a)
    assert any(k.startswith("smax.") for k in a)


def test_an_override_splits_a_cell_and_seeds_stay_pooled(tmp_path):
    e15 = {"mappo.epochs": 15}
    write_run(tmp_path / "e15/s0", full_config(0, **e15), [True, False, True, True])
    write_run(tmp_path / "e15/s1", full_config(1, **e15), [False, False, True, False])
    write_run(tmp_path / "e5/s0", full_config(0, **{"mappo.epochs": 5}), [False, False, False, False])
    runs = find_runs(tmp_path)
    # variants in natural order (5 before 15), the seeds of each together
    assert [r.label for r in runs] == ["mappo [mappo.epochs=5]"] + ["mappo [mappo.epochs=15]"] * 2
    stats = final_window_stats(runs)
    e15 = stats[("smax:3m", "mappo [mappo.epochs=15]")]
    assert [s.seed for s in e15.seeds] == [0, 1]
    assert e15.mean == pytest.approx(100 * 4 / 8)  # the two seeds' 8 episodes pooled, the 5-epoch run apart
    assert stats[("smax:3m", "mappo [mappo.epochs=5]")].mean == 0.0
    table = markdown_table(stats)
    assert "mappo [mappo.epochs=5]" in table and "mappo [mappo.epochs=15]" in table


def test_one_setting_keeps_the_plain_algorithm_name(tmp_path):
    write_run(tmp_path / "s0", full_config(0), [True])
    write_run(tmp_path / "s1", full_config(1), [False])
    runs = find_runs(tmp_path)
    assert [r.label for r in runs] == ["mappo", "mappo"] and [r.variant for r in runs] == ["", ""]


def test_settings_a_run_never_reads_do_not_split_it(tmp_path):
    write_run(tmp_path / "a", full_config(0, **{"model.hidden": 64, "flatland.actions": "all"}), [True])
    write_run(tmp_path / "b", full_config(1, **{"model.hidden": 32, "flatland.actions": "mamba"}), [False])
    assert [r.label for r in find_runs(tmp_path)] == ["mappo", "mappo"]


def test_an_earlier_versions_config_compares_with_the_values_it_trained_with(tmp_path):
    # model.reward_scale was added with the value 1.0 (mabl.config_migration.ADDED_FIELDS): a config
    # saved before it equals a new config holding 1.0, and differs from one holding 10.0
    old = mabl_config(0)
    del old["model"]["reward_scale"]
    write_run(tmp_path / "old", old, [True])
    write_run(tmp_path / "new", mabl_config(1, **{"model.reward_scale": 1.0}), [False])
    assert {r.label for r in find_runs(tmp_path)} == {"mabl"}
    write_run(tmp_path / "x10", mabl_config(2, **{"model.reward_scale": 10.0}), [False])
    assert [r.label for r in find_runs(tmp_path)] == ["mabl [model.reward_scale=1.0]"] * 2 + [
        "mabl [model.reward_scale=10.0]"]


def test_summary_names_each_runs_variant(tmp_path):
    write_run(tmp_path / "runs/a", full_config(0, steps=400), [True])
    write_run(tmp_path / "runs/b", full_config(0, steps=5000), [False])
    write_report(tmp_path / "runs", tmp_path / "out", plots=False)
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert sorted(r["variant"] for r in summary["runs"]) == ["steps=400", "steps=5000"]
    assert sorted(c["algo"] for c in summary["cells"]) == ["mappo [steps=400]", "mappo [steps=5000]"]
