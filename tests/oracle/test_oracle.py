"""The weight-for-weight oracles against the released MABL code (``mabl_oracle.py``) and MAMBA's
(``mamba_oracle.py``), as tests.

Marker ``oracle``: not in the default run (``pyproject.toml`` deselects it); the MABL tests are
skipped unless ``MABL_RELEASED_CODE`` points at a checkout of github.com/aravindvenu7/MABL, the
MAMBA tests unless ``MAMBA_RELEASED_CODE`` points at one of github.com/jbr-ai-labs/mamba::

    MABL_RELEASED_CODE=/path/to/MABL MAMBA_RELEASED_CODE=/path/to/mamba OMP_NUM_THREADS=1 PYTHONPATH=src \
        python -m pytest -m oracle tests/oracle -q
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.oracle

ROOT = os.environ.get("MABL_RELEASED_CODE")
MAMBA_ROOT = os.environ.get("MAMBA_RELEASED_CODE")
if not ROOT and not MAMBA_ROOT:
    pytest.skip("neither MABL_RELEASED_CODE nor MAMBA_RELEASED_CODE is set", allow_module_level=True)

import mabl_oracle as O  # noqa: E402  (this directory is on sys.path under pytest's default import mode)
import mamba_oracle as M  # noqa: E402
from name_map import RELEASED_UNUSED, check_coverage  # noqa: E402

needs_mabl = pytest.mark.skipif(not ROOT, reason="MABL_RELEASED_CODE is not set")
needs_mamba = pytest.mark.skipif(not MAMBA_ROOT, reason="MAMBA_RELEASED_CODE is not set")
@pytest.fixture(scope="module")
def released():
    return O.load_released_mabl(ROOT)


@pytest.fixture(scope="module")
def table(released):
    return O.oracle(ROOT)


@pytest.fixture(scope="module")
def mamba_table():
    return M.oracle(MAMBA_ROOT)


def rows_of(table, section: str) -> list[dict]:
    rows = [r for r in table.rows if r["section"] == section and r["kind"] != "note"]
    assert rows, f"no rows in section {section!r}"
    return rows


def failing(rows) -> list[str]:
    return [f"{r['name']}: max rel {r['rel']:.3e}, norm rel {r['nrel']:.3e}" for r in rows if not r["ok"]]


@needs_mabl
def test_name_map_covers_every_parameter(released):
    """Every released parameter is copied (shape-checked, each column once) or listed as unused;
    every parameter of ours is written exactly once."""
    cfg, model, actor, critic, agent, maps = O.setup(released)
    for key, (rel_module, our_module, pairs) in maps.items():
        assert check_coverage(rel_module, our_module, pairs, RELEASED_UNUSED[key]) == []
        unused = [n for n in dict(rel_module.named_parameters()) if any(n.startswith(p) for p in RELEASED_UNUSED[key])]
        assert len(unused) == sum(1 for n in dict(rel_module.named_parameters()) if n not in {p.released for p in pairs})


@needs_mabl
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


@needs_mabl
def test_world_model_equals_released_without_episode_starts(table):
    """Batch without episode starts or absorbing rows: every loss term, the total, the filter's
    logits, samples and states and every gradient within 1e-5 (SPEC §2)."""
    assert failing(rows_of(table, f"world model, {O.BATCHES['clean']}")) == []


@needs_mabl
def test_imagination_and_policy_equal_released_without_episode_starts(table):
    """Imagination (latents, masks, actions, rewards, continuations, values, lambda-returns), actor and
    critic losses within 1e-5, with our empty-mask guard applied to the released masks too; the
    gradients within 1e-5 on the released imagined batch itself, within ``O.POLICY_GRAD_TOL`` on our
    own (see there)."""
    section = f"imagination and policy, {O.BATCHES['clean']}, our empty-mask guard on both sides"
    assert failing(rows_of(table, f"{section}; ours on the released imagined batch")) == []
    assert failing(rows_of(table, section)) == []  # gradients: norm-relative O.POLICY_GRAD_TOL


@needs_mabl
def test_absorbing_rows_differ_only_by_the_loss_divisors(table):
    """Absorbing rows at a window's end, no reset inside a window: ours differs from the released
    loss only in the observation and action-decoder divisors (scored rows vs all rows); with the
    released divisors patched into ours every term and gradient agrees."""
    label = O.BATCHES["absorbing"]
    assert failing(rows_of(table, f"world model, {label}; ours with the released divisors (harness patch)")) == []
    rows = rows_of(table, f"world model, {label}")
    differing = {r["name"] for r in rows if not r["ok"] and not r["name"].startswith("grad ")}
    assert differing == {"loss obs (released reconstruction_loss)", "loss action (released info_loss)", "loss total"}


@needs_mabl
@pytest.mark.xfail(reason="known differences at an episode start inside a window (SPEC §2): the released code feeds the "
                          "stored action into the first transition and its reward/continuation heads read the state "
                          "after the reset", strict=False)
def test_world_model_equals_released_with_episode_starts(table):
    for kind in ("reset", "both"):
        assert failing(rows_of(table, f"world model, {O.BATCHES[kind]}")) == []


MAMBA_ZEROED = f"{O.BATCHES['clean']}, MAMBA with its agent-index encoding zeroed (harness)"


@needs_mamba
def test_mamba_world_model_equals_released_without_its_agent_index_encoding(mamba_table):
    """With MAMBA's sinusoidal agent-index encoding zeroed, our ``--algo mamba`` world model (the
    name map copying every MAMBA parameter, dropout off on both sides) gives every loss term, the
    filter and every gradient within 1e-5."""
    assert failing(rows_of(mamba_table, f"world model, {MAMBA_ZEROED}")) == []


@needs_mamba
def test_mamba_imagination_and_policy_equal_released_without_its_agent_index_encoding(mamba_table):
    section = f"imagination and policy, {MAMBA_ZEROED}"
    assert failing(rows_of(mamba_table, f"{section}; ours on the released imagined batch")) == []
    assert failing(rows_of(mamba_table, section)) == []  # gradients: norm-relative O.POLICY_GRAD_TOL


@needs_mamba
@pytest.mark.xfail(reason="known difference: ours has no agent-index encoding in the mixer (MAMBA adds a sinusoidal "
                          "table, networks/transformer/layers.py)", strict=False)
def test_mamba_world_model_equals_released(mamba_table):
    assert failing(rows_of(mamba_table, f"world model, {O.BATCHES['clean']}, MAMBA as released")) == []
