"""The CLI's conventions: `train --help` shows what a plain `mabl train` uses, one way to write a
boolean, the run directory, the device and the task on every command, a MAMuJoCo name that needs no
shell quotes, and competitive PettingZoo tasks refused in one line."""

from __future__ import annotations

import pytest

from mabl.cli import _parser, main
from mabl.config import RunConfig


def _help_of(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_train_help_shows_the_quick_presets_values_and_says_so(capsys):
    text = _help_of(capsys, "train")
    assert "environment steps to train for (default: 20000 from the quick preset; paper: 100000)" in text
    assert "(default: 128 from the quick preset; paper: 256)" in text  # model.hidden
    assert "Without --preset the quick preset applies" in text
    assert "seed of every random number generator of the run (default: 0)" in text  # a field quick leaves alone
    # each section's group names the algorithms whose registry entry reads it
    assert "mappo options (read by --algo mappo, ippo, rmappo):" in text and "mag options (read by --algo mag):" in text


def test_bench_speed_takes_booleans_and_env_like_train():
    parse = _parser().parse_args
    args = parse(["bench", "speed", "--amp", "true", "--compile", "--env", "smax:3s_vs_4z"])
    assert (args.amp, args.compile, args.env) == (True, True, "smax:3s_vs_4z")
    args = parse(["bench", "speed", "--amp", "false", "--map", "corridor"])  # --map: the older name
    assert (args.amp, args.compile, args.env) == (False, False, "corridor")
    assert parse(["bench", "speed", "--amp"]).amp is True
    with pytest.raises(SystemExit):
        parse(["bench", "speed", "--amp", "maybe"])


def test_one_device_default_and_run_dir_spelling_everywhere():
    parse = _parser().parse_args
    devices = {RunConfig().device, parse(["bench", "speed"]).device, parse(["diagnose", "--run-dir", "r"]).device,
               parse(["sweep", "--out", "o"]).device}
    assert devices == {"auto"}
    for command in (["eval"], ["export", "--out", "p.pt"], ["diagnose"]):
        for flag in ("--run-dir", "--run_dir"):
            assert parse([*command, flag, "somewhere"]).run_dir == "somewhere"


def test_mamujoco_joint_split_needs_no_quotes(monkeypatch):
    import mabl.envs.mamujoco
    from mabl.envs import make_env

    asked = []

    def fake(task, seed=0):
        asked.append(task)
        raise RuntimeError("stop here")

    monkeypatch.setattr(mabl.envs.mamujoco, "make_mamujoco", fake)
    for name in ("mamujoco:Humanoid-9+8", "mamujoco:Humanoid-9|8"):
        with pytest.raises(RuntimeError):
            make_env(name)
    assert asked == ["Humanoid-9|8", "Humanoid-9|8"]


def test_envs_lists_names_without_shell_pipes(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "mamujoco:Humanoid-9+8 " in out and "|" not in out


def test_competitive_pettingzoo_task_is_refused_in_one_line(tmp_path, capsys):
    pytest.importorskip("mpe2")
    assert main(["train", "--env", "pettingzoo:mpe2.simple_tag_v3", "--preset", "debug", "--run-dir",
                 str(tmp_path / "r"), "--progress", "false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "competitive" in err and "adversary_0" in err and "agent_0" in err
    from mabl.envs import make_env

    assert make_env("pettingzoo:mpe2.simple_speaker_listener_v4").spec.n_agents == 2  # cooperative, other names


def test_mamujoco_plus_name_builds_the_same_task():
    pytest.importorskip("gymnasium_robotics")
    from mabl.envs import make_env

    plus, pipe = make_env("mamujoco:Humanoid-9+8").spec, make_env("mamujoco:Humanoid-9|8").spec
    assert (plus.n_agents, plus.obs_dim, plus.action_dim) == (pipe.n_agents, pipe.obs_dim, pipe.action_dim) == (2, 242, 9)
