"""Resuming a run directory compares the settings the run reads: top-level fields, its algorithm's
config sections and its env family's section; other sections may differ (a later default there)."""

from __future__ import annotations

import json

import pytest

from mabl.config import RunConfig, replace_path, to_dict
from mabl.errors import MablError
from mabl.train import check_run_dir_config


def _saved(tmp_path, **fields):
    cfg = RunConfig(env="smax:3m", algo="mabl")
    for path, value in fields.items():
        cfg = replace_path(cfg, path.replace("__", "."), value)
    (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
    return cfg


def test_a_section_the_run_does_not_read_may_differ(tmp_path):
    cfg = _saved(tmp_path, mappo__epochs=5, qmix__lr=1e-3, flatland__obs="standard")
    check_run_dir_config(tmp_path, replace_path(cfg, "mappo.epochs", 15))  # mabl reads model/policy/schedule
    check_run_dir_config(tmp_path, replace_path(cfg, "qmix.lr", 5e-4))
    check_run_dir_config(tmp_path, replace_path(cfg, "flatland.obs", "mamba"))  # the run is on smax


@pytest.mark.parametrize("path, value", [("model.hidden", 17), ("policy.epochs", 9), ("schedule.model_updates", 3),
                                         ("smax.walls", "lethal"), ("seed", 4), ("amp", True)])
def test_a_setting_the_run_reads_must_match(tmp_path, path, value):
    cfg = _saved(tmp_path)
    with pytest.raises(MablError, match=f"was created with {path}="):
        check_run_dir_config(tmp_path, replace_path(cfg, path, value))


def test_the_model_free_algorithms_compare_their_own_sections(tmp_path):
    cfg = RunConfig(env="smax:3m", algo="mappo")
    (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
    check_run_dir_config(tmp_path, replace_path(cfg, "model.hidden", 17))  # mappo reads no world-model section
    with pytest.raises(MablError, match="mappo.epochs"):
        check_run_dir_config(tmp_path, replace_path(cfg, "mappo.epochs", 3))
    with pytest.raises(MablError, match="algo="):
        check_run_dir_config(tmp_path, replace_path(cfg, "algo", "ippo"))
