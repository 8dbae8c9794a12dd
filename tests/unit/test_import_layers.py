"""The acting modules import in one direction: the policy contract and the episode record sit below
``mabl.policy``, ``mabl.rollout`` and ``mabl.algo.model_free``, so none of those three needs another
one imported at module level (the import cycle they had is gone)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOWER = {"mabl.algo.model_free": ("mabl.policy", "mabl.rollout"), "mabl.policy": ("mabl.algo.model_free", "mabl.rollout"),
         "mabl.policy_contract": ("mabl.policy", "mabl.rollout", "mabl.algo.model_free"),
         "mabl.episode": ("mabl.policy", "mabl.rollout", "mabl.algo.model_free")}


@pytest.mark.parametrize("module", list(LOWER))
def test_module_does_not_import_its_peers(module):
    code = (f"import sys, {module}; bad = [m for m in {LOWER[module]!r} if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
