"""``mabl diagnose``'s output: the readable table, diagnose.json and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mabl.errors import MablError


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The readable form of :func:`diagnose`'s result."""
    meta = result["meta"]
    lines = [f"{meta['algo']} on {meta['env']}: {meta['checkpoint']}",
             f"data: {meta['data']} ({meta['data_rows']} rows), {meta['windows']} windows of {meta['length']} rows, "
             f"seed {meta['seed']}", ""]
    state = result["probe_state_r2"]
    lines.append(f"probe (ridge, R^2 on held-out windows; {state['split']})")
    obs = result["probe_state_r2_obs"]
    rows = [("agent [z^a, h^a]", state, (result["probe_others_obs_r2"] or {}).get("agent")),
            ("raw own obs", obs["current"], ((result["probe_others_obs_r2"] or {}).get("obs") or {}).get("current")),
            (f"last {obs['stack']} own obs", obs["stacked"],
             ((result["probe_others_obs_r2"] or {}).get("obs") or {}).get("stacked")),
            ("global [z^g, h^g]", result["probe_state_r2_global"], (result["probe_others_obs_r2"] or {}).get("global"))]
    spread = result.get("probe_spread")
    lines.append(f"  {'features':<22}{'state s_t':>12}{'(pooled)':>10}{'others obs':>12}{'(pooled)':>10}"
                 + (f"   state pooled over {spread['draws']} draws: mean +- std [min, max]" if spread else ""))
    for (name, s, o), key in zip(rows, ("agent", "obs", "stacked", "global")):
        sp = spread and spread.get(key)
        lines.append(f"  {name:<22}{_fmt(s and s['mean']):>12}{_fmt(s and s.get('pooled')):>10}"
                     f"{_fmt(o and o['mean']):>12}{_fmt(o and o.get('pooled')):>10}"
                     + (f"   {_fmt(sp['pooled_mean'])} +- {_fmt(sp['pooled_std'])} [{_fmt(sp['pooled_min'])}, "
                        f"{_fmt(sp['pooled_max'])}]" if sp else ""))
    lines += ["", "open loop (priors rolled with the real actions)",
              f"  {'k':>3}{'obs mse':>10}{'rew mae':>10}{'rew corr':>10}{'cont brier':>12}{'cont acc':>10}"
              f"{'avail acc':>11}{'n':>6}"]
    for e in result["open_loop"]:
        lines.append(f"  {e['k']:>3}{_fmt(e['obs_error'], 4):>10}{_fmt(e['reward_error'], 4):>10}"
                     f"{_fmt(e['reward_corr']):>10}{_fmt(e['cont_brier'], 4):>12}{_fmt(e['cont_accuracy']):>10}"
                     f"{_fmt(e['avail_accuracy']):>11}{e['n_transitions']:>6}")
    im = result["imagination"]
    if im:
        lines += ["", f"imagination (H={im['horizon']}, {im['starts']} starts; {im.get('compared', 0)} with a "
                  f"complete observed return)",
                  f"  lambda-return mean {_fmt(im['lambda_return_mean'])}, observed return mean "
                  f"{_fmt(im.get('observed_return_mean'))}, bias {_fmt(im.get('lambda_return_bias'))}, "
                  f"corr {_fmt(im.get('lambda_return_corr'))}",
                  f"  critic value bias {_fmt(im.get('value_bias'))}, corr {_fmt(im.get('value_corr'))}; "
                  f"imagined reward {_fmt(im['imagined_reward_mean'], 4)} +- {_fmt(im['imagined_reward_std'], 4)}, "
                  f"real {_fmt(im['real_reward_mean'], 4)} +- {_fmt(im['real_reward_std'], 4)}"]
    rh = result.get("reward_head")
    if rh:
        lines += ["", f"reward head (one step from the posterior, the loss's reading; {rh['n']} rows): "
                  f"mae {_fmt(rh['mae'], 4)}, corr {_fmt(rh['corr'])}"]
        for name, label in [("zero", "real reward 0"), ("largest", f"largest {rh['top']:.0%} of rows"),
                            ("other", "other rows")]:
            g = rh[name]
            lines.append(f"  {label:<22}" + (f"n {g['n']:>6}  real {_fmt(g['real_mean'], 4):>8}  predicted "
                                             f"{_fmt(g['pred_mean'], 4):>8}" if g else "none"))
    lines += ["", "latents (posterior)"]
    for level, st in result["latents"].items():
        if st is not None:
            lines.append(f"  {level:<7} KL {_fmt(st['kl'])}, entropy {_fmt(st['entropy_mean'])} of max "
                         f"{_fmt(st['max_entropy'])}, unused classes {st['unused_class_fraction']:.1%}, "
                         f"collapsed categoricals {st['collapsed_fraction']:.1%}")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: str | Path) -> list[Path]:
    """``--out``: diagnose.json and PNG plots (error vs k; probe R^2 per state feature); matplotlib is
    imported here only."""
    from mabl.checkpoint import atomic_write_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "diagnose.json", json.dumps(result, indent=1).encode())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MablError("--out plots need matplotlib: pip install 'mabl[report]'") from None
    files = [out / "diagnose.json"]
    ol = result["open_loop"]
    ks = [e["k"] for e in ol]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in zip(axes, ("obs_error", "reward_error", "cont_brier"),
                              ("observation MSE", "reward MAE", "continuation Brier")):
        ax.plot(ks, [np.nan if e[key] is None else e[key] for e in ol], marker="o")
        ax.set_xlabel("open-loop step k")
        ax.set_title(title)
    fig.suptitle(f"{result['meta']['algo']}: open-loop prediction error")
    fig.tight_layout()
    fig.savefig(out / "open_loop.png", dpi=110)
    plt.close(fig)
    files.append(out / "open_loop.png")
    fig, ax = plt.subplots(figsize=(12, 3.6))
    series = [("agent [z^a, h^a]", result["probe_state_r2"]),
              ("raw own obs", result["probe_state_r2_obs"]["current"]),
              (f"last {result['probe_state_r2_obs']['stack']} own obs", result["probe_state_r2_obs"]["stacked"]),
              ("global [z^g, h^g]", result["probe_state_r2_global"])]
    for name, probe in series:
        if probe is not None:
            ax.plot([np.nan if v is None else v for v in probe["per_dim"]], marker=".", lw=0.8, label=name)
    ax.set_xlabel("state feature")
    ax.set_ylabel("held-out R^2")
    ax.set_ylim(-0.5, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(f"{result['meta']['algo']}: linear probe of the global state, per feature")
    fig.tight_layout()
    fig.savefig(out / "probe_state_r2.png", dpi=110)
    plt.close(fig)
    files.append(out / "probe_state_r2.png")
    return files
