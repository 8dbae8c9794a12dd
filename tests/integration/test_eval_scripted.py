"""``mabl eval --scripted`` on real SMAX, and ``--trace`` playing the very episodes the evaluation plays."""

from __future__ import annotations

import json

import pytest

from mabl.cli import main

pytest.importorskip("jaxmarl")


def _json(capsys, *args: str) -> dict:
    assert main(["eval", "--scripted", "focus", "--episodes", "2", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_trace_plays_the_evaluated_episodes(capsys):
    readings = ["--smax.reward", "jaxmarl", "--smax.walls", "lethal"]
    summary = _json(capsys, *readings)
    traced = _json(capsys, "--trace", *readings)
    assert summary["readings"] == traced["readings"] == {"reward": "jaxmarl", "walls": "lethal"}
    assert [t["return"] for t in traced["episodes"]] == pytest.approx(summary["returns"])
    assert [t["length"] for t in traced["episodes"]] == summary["lengths"]
    assert [bool(t["win"]) for t in traced["episodes"]] == summary["wins"]
    for episode in traced["episodes"]:
        assert len(episode["steps"]) == episode["length"]
        assert sum(s["reward"] for s in episode["steps"]) == pytest.approx(episode["return"])
        # focus fire: whoever may attack attacks (SMAX: actions 5.. attack)
        assert any(a >= 5 for s in episode["steps"] for a in s["actions"])
