"""Named presets build valid configs, and the `cpu` study preset has the learning per env step that
docs/REPRODUCTION.md states (computed here from the fields, not copied from the docs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mabl.presets import PRESETS, build_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_validates(name):
    cfg = build_config(name)
    assert cfg.preset == name


def _rows_per_env_step(cfg, episode_length: float) -> tuple[float, float]:
    """(world-model window rows, imagined rows) the learner consumes per env step."""
    s, m, p = cfg.schedule, cfg.model, cfg.policy
    steps_per_call = episode_length if s.mode == "episode" else s.train_every
    model_rows = s.model_updates * m.batch_size * m.seq_len
    imagined = s.policy_iterations * (p.horizon - 1) * p.batch_size * (m.seq_len - 2)
    return model_rows / steps_per_call, imagined / steps_per_call


def test_cpu_preset_learning_per_env_step():
    cpu, quick, paper = build_config("cpu"), build_config("quick"), build_config("paper")
    cpu_model, cpu_imag = _rows_per_env_step(cpu, 100)
    assert (cpu_model, cpu_imag) == (64.0, pytest.approx(80.64))
    quick_model, quick_imag = _rows_per_env_step(quick, 100)
    assert cpu_model == 2 * quick_model and cpu_imag == pytest.approx(2 * quick_imag)
    # Against the paper preset with 3s_vs_4z-like episodes of ~100 steps: ~7.5x / 5x fewer rows.
    paper_model, paper_imag = _rows_per_env_step(paper, 100)
    assert paper_model / cpu_model == pytest.approx(7.5) and paper_imag / cpu_imag == pytest.approx(5.0)
    # The same networks as `quick`, the code's entropy bonus (quick's is 10x), the paper's MAPPO, 100k steps.
    assert cpu.model == quick.model and cpu.mappo == paper.mappo
    assert cpu.policy == replace(quick.policy, entropy=paper.policy.entropy)
    assert (paper.policy.entropy, quick.policy.entropy) == (1e-3, 1e-2)
    assert cpu.steps == 100_000
