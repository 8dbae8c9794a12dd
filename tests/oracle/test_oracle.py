"""The weight-for-weight oracle against the released MABL code (``mabl_oracle.py``), as tests.

Marker ``oracle``: not in the default run (``pyproject.toml`` deselects it) and skipped unless
``MABL_RELEASED_CODE`` points at a checkout of github.com/aravindvenu7/MABL::

    MABL_RELEASED_CODE=/path/to/MABL OMP_NUM_THREADS=1 PYTHONPATH=src python -m pytest -m oracle tests/oracle -q
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.oracle

ROOT = os.environ.get("MABL_RELEASED_CODE")
if not ROOT:
    pytest.skip("MABL_RELEASED_CODE is not set (a checkout of github.com/aravindvenu7/MABL)", allow_module_level=True)

import mabl_oracle as O  # noqa: E402  (this directory is on sys.path under pytest's default import mode)
from name_map import RELEASED_UNUSED, check_coverage  # noqa: E402


@pytest.fixture(scope="module")
def released():
    return O.load_released_mabl(ROOT)


@pytest.fixture(scope="module")
def table(released):
    return O.oracle(ROOT)


def rows_of(table, section: str) -> list[dict]:
    rows = [r for r in table.rows if r["section"] == section and r["kind"] != "note"]
    assert rows, f"no rows in section {section!r}"
    return rows


def failing(rows) -> list[str]:
    return [f"{r['name']}: max rel {r['rel']:.3e}, norm rel {r['nrel']:.3e}" for r in rows if not r["ok"]]


def test_name_map_covers_every_parameter(released):
    """Every released parameter is copied (shape-checked, each column once) or listed as unused;
    every parameter of ours is written exactly once."""
    cfg, model, actor, critic, agent, maps = O.setup(released)
    for key, (rel_module, our_module, pairs) in maps.items():
        assert check_coverage(rel_module, our_module, pairs, RELEASED_UNUSED[key]) == []
        unused = [n for n in dict(rel_module.named_parameters()) if any(n.startswith(p) for p in RELEASED_UNUSED[key])]
        assert len(unused) == sum(1 for n in dict(rel_module.named_parameters()) if n not in {p.released for p in pairs})


def test_unused_released_parameters_get_no_gradient(released):
    """The released parameters without a counterpart (state decoder, critic prior) take no part in
    the loss: after the world-model loss and the policy losses they have no gradient."""
    cfg, model, actor, critic, agent, maps = O.setup(released)
    O.run_world_model(released, cfg, model, agent, O.make_rows("clean"), O.Table(), "wm", maps)
    O.run_policy(released, cfg, model, actor, critic, agent, O.make_rows("clean"), O.Table(), "pi", maps)
    for key, module in (("world_model", model), ("critic", critic)):
        for name, param in module.named_parameters():
            if any(name.startswith(p) for p in RELEASED_UNUSED[key]):
                assert param.grad is None, name


def test_world_model_equals_released_without_episode_starts(table):
    """Batch without episode starts or absorbing rows: every loss term, the total, the filter's
    logits, samples and states and every gradient within 1e-5 (SPEC §2)."""
    assert failing(rows_of(table, f"world model, {O.BATCHES['clean']}")) == []


def test_imagination_and_policy_equal_released_without_episode_starts(table):
    """Imagination (latents, masks, actions, rewards, continuations, values, lambda-returns), actor and
    critic losses within 1e-5, with our empty-mask guard applied to the released masks too. The
    gradients equal the released ones on the released imagined batch itself; on our own batch two
    critic embedding tables may differ by one (row, unit) at a ReLU kink, where the released
    latents' 1 +- 6e-8 meets a pre-activation within rounding of 0 (norm-relative < 1e-4)."""
    section = f"imagination and policy, {O.BATCHES['clean']}, our empty-mask guard on both sides"
    assert failing(rows_of(table, f"{section}; ours on the released imagined batch")) == []
    rows = rows_of(table, section)
    assert failing([r for r in rows if not r["name"].startswith("grad ")]) == []
    assert [r["name"] for r in rows if r["name"].startswith("grad ") and r["nrel"] > 1e-4] == []


def test_absorbing_rows_differ_only_by_the_loss_divisors(table):
    """Absorbing rows at a window's end, no reset inside a window: ours differs from the released
    loss only in the observation and action-decoder divisors (scored rows vs all rows); with the
    released divisors patched into ours every term and gradient agrees."""
    label = O.BATCHES["absorbing"]
    assert failing(rows_of(table, f"world model, {label}; ours with the released divisors (harness patch)")) == []
    rows = rows_of(table, f"world model, {label}")
    differing = {r["name"] for r in rows if not r["ok"] and not r["name"].startswith("grad ")}
    assert differing == {"loss obs (released reconstruction_loss)", "loss action (released info_loss)", "loss total"}


@pytest.mark.xfail(reason="known differences at an episode start inside a window (SPEC §2): the released code feeds the "
                          "stored action into the first transition and its reward/continuation heads read the state "
                          "after the reset", strict=False)
def test_world_model_equals_released_with_episode_starts(table):
    for kind in ("reset", "both"):
        assert failing(rows_of(table, f"world model, {O.BATCHES[kind]}")) == []
