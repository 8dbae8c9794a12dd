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
@pytest.mark.parametrize("kind", list(O.BATCHES))
def test_world_model_equals_released(table, kind):
    """Our defaults against the released loss on every batch (none, episode starts inside a window,
    absorbing rows, both): every loss term, the total, the filter's logits, samples and states and
    every gradient within 1e-5 (SPEC §2)."""
    assert failing(rows_of(table, f"world model, {O.BATCHES[kind]}")) == []


@needs_mabl
@pytest.mark.parametrize("kind", list(O.BATCHES))
def test_imagination_and_policy_equal_released(table, kind):
    """Imagination (latents, masks as sampled, empty ones included, actions, rewards, continuations,
    values, lambda-returns), actor and critic losses within 1e-5; the gradients within 1e-5 on the
    released imagined batch itself, within ``O.POLICY_GRAD_TOL`` on our own (see there)."""
    section = f"imagination and policy, {O.BATCHES[kind]}"
    assert failing(rows_of(table, f"{section}; ours on the released imagined batch")) == []
    assert failing(rows_of(table, section)) == []  # gradients: norm-relative O.POLICY_GRAD_TOL


def option_section(part: str, kind: str, option: str, value: str) -> str:
    return f"{part}, {O.BATCHES[kind]}; {O.option_label(option, value)}"


@needs_mabl
def test_unmasked_rows_divisor_option_differs_only_in_the_two_masked_terms(table):
    """--model.loss_divisor unmasked_rows (earlier mabl) on the batch with absorbing rows: the
    observation and action-decoder terms (and so the total) differ from the released ones, every
    other term agrees, and each differing term is the released one rescaled by all rows / scored
    rows (the released divisor counts every row, utils.py rec_loss / info_loss)."""
    rows = rows_of(table, option_section("world model", "absorbing", "model.loss_divisor", "unmasked_rows"))
    differing = {r["name"] for r in rows if not r["ok"] and r["name"].startswith("loss ")}
    assert differing == {"loss obs (released reconstruction_loss)", "loss action (released info_loss)", "loss total"}
    by_name = {r["name"]: r for r in rows}
    fake = O.make_rows("absorbing")["fake"]  # [L, B]
    # The released learner reads rows 1..L-1 of the replay window as its steps 0..T-1 (T = L-1); its
    # observation loss covers steps 0..T-2 (replay rows 1..L-2), its action decoder steps 1..T-2 (rows 2..L-2).
    obs_rows, act_rows = fake[1:O.SEQ_LEN - 1], fake[2:O.SEQ_LEN - 1]
    obs_ratio = obs_rows.size / (1.0 - obs_rows).sum()
    act_ratio = act_rows.size / (1.0 - act_rows).sum()
    assert obs_ratio > 1 and act_ratio > 1  # the batch has absorbing rows in both ranges
    for name, ratio in (("loss obs (released reconstruction_loss)", obs_ratio),
                        ("loss action (released info_loss)", act_ratio)):
        ours, released = float(by_name[name]["ours"]), float(by_name[name]["released"])
        assert ours == pytest.approx(released * ratio, rel=1e-4), name


@needs_mabl
@pytest.mark.parametrize("kind", ["reset", "both"])
def test_start_state_reset_option_differs_at_episode_starts(table, kind):
    """--model.episode_reset start_state (earlier mabl) is a real difference on a batch with an
    episode start inside a window: the filter of that window departs from the released one."""
    rows = [r for r in table.rows if r["section"] == option_section("world model", kind, "model.episode_reset",
                                                                        "start_state")]
    notes = {r["name"]: r["ours"] for r in rows if r["kind"] == "note"}
    assert "window 1: step" in notes["filter: first differing step of h^a per window"]
    assert failing([r for r in rows if r["kind"] != "note"]) != []


@needs_mabl
def test_most_likely_empty_avail_option_differs_where_a_mask_is_empty(table):
    """--policy.empty_avail most_likely (earlier mabl): where the released imagination sampled an
    empty mask, ours fills it, so the imagined masks differ."""
    section = option_section("imagination and policy", "clean", "policy.empty_avail", "most_likely")
    note = next(r["ours"] for r in table.rows if r["section"] == section and r["name"].startswith("imagined masks with"))
    assert int(note.split()[0]) > 0, note
    masks = next(r for r in rows_of(table, section) if r["name"] == "imagined action masks")
    assert not masks["ok"]


MAMBA_CLEAN = f"{O.BATCHES['clean']}, MAMBA as released"


@needs_mamba
def test_mamba_world_model_equals_released(mamba_table):
    """Our ``--algo mamba`` world model with its default sinusoidal agent-index encoding against MAMBA
    as released (the name map copying every MAMBA parameter, dropout off on both sides): every loss
    term, the filter and every gradient within 1e-5."""
    assert failing(rows_of(mamba_table, f"world model, {MAMBA_CLEAN}")) == []


@needs_mamba
def test_mamba_imagination_and_policy_equal_released(mamba_table):
    section = f"imagination and policy, {MAMBA_CLEAN}"
    assert failing(rows_of(mamba_table, f"{section}; ours on the released imagined batch")) == []
    assert failing(rows_of(mamba_table, section)) == []  # gradients: norm-relative O.POLICY_GRAD_TOL


@needs_mamba
def test_mamba_without_agent_index_encoding_option_differs(mamba_table):
    """--model.agent_index_encoding none (earlier mabl) against MAMBA as released: the prior (the
    transition's transformer reads the table) and so every filter state after it differ."""
    rows = rows_of(mamba_table, f"world model, {MAMBA_CLEAN}; "
                                f"{O.option_label('model.agent_index_encoding', 'none')}")
    by_name = {r["name"]: r for r in rows}
    assert not by_name["filter: agent prior logits"]["ok"]
    assert not by_name["loss total"]["ok"]
