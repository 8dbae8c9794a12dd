"""The acting modules import in one direction: the policy contract and the episode record sit below
``mabl.policy``, ``mabl.rollout`` and ``mabl.algo.mappo``, so none of those three needs another
one imported at module level; the exported MLP and QMIX policies (``mabl.mlp_policy``,
``mabl.qmix_policy``) need no learner (the
import cycle they had is gone). The learners (``mabl.algo``) sit
below the commands that run them (``mabl.train``, ``mabl.cli``, ``mabl.diagnose``), and the
algorithm registry imports no learner until one is built. The diagnostics package (data, probes, measures,
output) sits below the commands that call it (``mabl.train``, ``mabl.cli``). The reading of older saved
configs (``mabl.config_migration``) sits above the config schema (``mabl.config``), which reaches it only
on demand for the names it still exports. The device and evaluation helpers (``mabl.device``,
``mabl.evaluate``), the progress display, the learner-metric reading and the replay sit below the
trainer and the CLI that use them."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ("mabl.train", "mabl.cli", "mabl.diagnose", "mabl.bench", "mabl.onnx_export", "mabl.presets")
LOWER = {"mabl.algo.mappo": ("mabl.policy", "mabl.rollout"), "mabl.policy": ("mabl.algo.mappo", "mabl.rollout"),
         "mabl.policy_contract": ("mabl.policy", "mabl.rollout", "mabl.algo.mappo"),
         "mabl.episode": ("mabl.policy", "mabl.rollout", "mabl.algo.mappo"),
         "mabl.mlp_policy": ("mabl.policy", "mabl.rollout", "mabl.algo.mappo", "mabl.algo.registry"),
         "mabl.qmix_policy": ("mabl.policy", "mabl.rollout", "mabl.algo.qmix", "mabl.algo.registry"),
         "mabl.algo": ("mabl.algo.agent", "mabl.algo.mag", "mabl.algo.mappo", *COMMANDS),
         **{f"mabl.algo.{m}": COMMANDS for m in ("agent", "mag", "mappo", "ippo", "qmix", "imagined_ppo", "ppo_loss",
                                                 "imagination", "returns", "value_norm", "optim",
                                                 "world_model_loss", "registry", "contract", "loading")},
         **{f"mabl.diagnose.{m}": ("mabl.train", "mabl.cli") for m in ("data", "probes", "measures", "output")},
         "mabl.config": ("mabl.config_migration",),
         "mabl.device": ("mabl.train", "mabl.cli"), "mabl.evaluate": ("mabl.train", "mabl.cli"),
         "mabl.progress": ("mabl.train",), "mabl.learner_metrics": ("mabl.train",), "mabl.replay": ("mabl.train",)}


@pytest.mark.parametrize("module", list(LOWER))
def test_module_does_not_import_its_peers(module):
    code = (f"import sys, {module}; bad = [m for m in {LOWER[module]!r} if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
