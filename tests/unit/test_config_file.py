"""``mabl train --config FILE.yaml``: dotted keys and nested mappings, the command line wins, bad keys
and types are one line naming the key and the file, and every shipped configs/*.yaml validates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mabl.cli import main
from mabl.config import load_config_file
from mabl.presets import build_config

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from toy_env import use_toy  # noqa: E402

CONFIGS = Path(__file__).parents[2] / "configs"
PAPER_BUDGETS = {  # paper Table 1: task -> env steps
    "smax_3s_vs_4z.yaml": ("smax:3s_vs_4z", 100_000),
    "smax_3s_vs_5z.yaml": ("smax:3s_vs_5z", 200_000),
    "flatland_5_agents.yaml": ("flatland:5_agents", 100_000),
    "mamujoco_humanoid.yaml": ("mamujoco:Humanoid-9+8", 200_000),
}


@pytest.mark.parametrize("name", sorted(PAPER_BUDGETS))
def test_each_shipped_config_loads_and_validates(name):
    values = load_config_file(str(CONFIGS / name))
    cfg = build_config(values.pop("preset"), values)
    env, steps = PAPER_BUDGETS[name]
    assert (cfg.env, cfg.steps, cfg.preset) == (env, steps, "paper")
    assert (cfg.model.hidden, cfg.schedule.mode, cfg.schedule.model_updates) == (256, "episode", 60)  # paper sizes


def test_every_shipped_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(PAPER_BUDGETS)


def test_dotted_and_nested_keys_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 1e3\nmodel:\n  hidden: 64\n  lr: 0.001\npolicy.hidden: 48\nrun-dir: somewhere\n"
                    "amp: true\n")
    assert load_config_file(str(path)) == {"steps": 1000, "model.hidden": 64, "model.lr": 0.001,
                                           "policy.hidden": 48, "run_dir": "somewhere", "amp": True}


@pytest.mark.parametrize("text, needle", [
    ("model:\n  hiddn: 64\n", "unknown key 'model.hiddn'"),
    ("steps: lots\n", "key 'steps' must be an int, not 'lots'"),
    ("steps: 1.5\n", "key 'steps' must be an int"),
    ("model.hidden: true\n", "key 'model.hidden' must be an int"),
    ("amp: 3\n", "key 'amp' must be a bool"),
    ("seed: [1, 2]\n", "key 'seed' must be an int"),
    ("- steps\n", "must be a mapping"),
    ("steps: [1\n", "not valid YAML"),
])
def test_bad_files_are_one_line_naming_key_and_file(tmp_path, capsys, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and needle in err, err


def test_command_line_wins_over_the_file(tmp_path, monkeypatch, capsys):
    use_toy(monkeypatch)
    path = tmp_path / "c.yaml"
    path.write_text("preset: debug\nsteps: 400\nmodel:\n  hidden: 24\nseed: 7\nprogress: false\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--env", "test:toy", "--steps", "100", "--run-dir", str(run),
                 "--threads", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["steps"], saved["model"]["hidden"], saved["seed"], saved["preset"]) == (100, 24, 7, "debug")
