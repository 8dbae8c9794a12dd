"""The GPU check's results as files: pytest's JUnit report, the training run's rates and their
extrapolation (labelled as such), profile.txt and summary.md."""

from __future__ import annotations

import json
import statistics
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from mabl.gpu_check.settings import OUTPUT_FILES, TARGET_STEPS

if TYPE_CHECKING:
    from mabl.gpu_check.driver import Check

BENCH_NOTE = ("mabl bench speed on synthetic batches of each map's sizes; times are medians; "
              "share_of_matmul_rate = achieved GFLOP/s of each phase / the facts stage's matmul rate in the "
              "run's precision (the result's own matmul_gflops is measured again by the bench). "
              "FLOPs are counted on the eager path, also for compiled runs.")

EXTRAPOLATION_NOTE = ("EXTRAPOLATION, not a measurement: 100k env steps at the measured rates, assuming the episode "
                      "length (hence the learner calls per env step: one per episode in the paper's schedule), "
                      "the seconds per learner call and the acting time per env step stay as measured "
                      "(the first learner call, which includes warm-up and compiling, is left out of the "
                      "per-call time). On smax:3m episodes change length as the policy learns, and the "
                      "15-minute target is for smax:3s_vs_4z.")


def parse_junit(path: Path) -> dict:
    """Counts and per-test outcomes from pytest's JUnit XML (empty when it was not written)."""
    if not path.exists():
        return {"counts": {}, "tests": []}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"counts": {}, "tests": [], "error": f"unreadable JUnit XML: {exc}"}
    tests = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:500]
                break
        tests.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0.0), "message": message})
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    return {"counts": counts, "tests": tests}


def summarise_training(metrics_path: Path, schedule: dict, process_s: float,
                       target_steps: int = TARGET_STEPS) -> dict | None:
    """Rates of a (possibly interrupted) training run from its metrics.jsonl and its config's
    ``schedule`` section, and their extrapolation to ``target_steps`` env steps (labelled as such)."""
    episodes, calls = [], []
    for line in metrics_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the stop at the budget
        (episodes if rec.get("kind") == "episode" else calls if rec.get("kind") == "learner" else []).append(rec)
    if not episodes:
        return None
    steps = episodes[-1]["env_step"]
    learner_s = [c["learner_s"] for c in calls]
    # The loop's wall time: each episode record's sps is env steps over the wall time since the loop
    # started, taken before that episode's learner calls; add the calls made after the last record.
    loop_s = steps / episodes[-1]["sps"] + sum(c["learner_s"] for c in calls if c["env_step"] >= steps)
    acting_s = max(loop_s - sum(learner_s), 0.0)
    out = {
        "env_steps": steps, "episodes": len(episodes), "learner_calls": len(calls),
        "mean_episode_length": statistics.fmean(e["length"] for e in episodes),
        "process_s": process_s, "loop_s": loop_s, "startup_s": max(process_s - loop_s, 0.0),
        "env_steps_per_s": steps / loop_s if loop_s > 0 else None,
        "learner_s_total": sum(learner_s), "acting_s_total": acting_s,
        "acting_ms_per_env_step": 1e3 * acting_s / steps,
        "first_learner_call_s": learner_s[0] if learner_s else None,
    }
    steady = learner_s[1:]
    if steady:
        per_call = statistics.fmean(steady)
        # Learner calls per env step by the schedule: one per `train_every` steps, or (the paper's
        # 'episode' mode) one per episode, i.e. 1 / the mean length of the episodes since learning began.
        learning = [e["length"] for e in episodes if e["env_step"] >= schedule.get("learning_starts", 0)]
        episode_length = statistics.fmean(learning or [e["length"] for e in episodes])
        calls_per_step = (1.0 / schedule["train_every"] if schedule.get("mode") == "steps"
                          else 1.0 / episode_length)
        learner_target = target_steps * calls_per_step * per_call
        acting_target = target_steps * acting_s / steps
        out.update({
            "learner_s_per_call_mean": per_call, "learner_s_per_call_median": statistics.median(steady),
            "learner_calls_per_env_step": calls_per_step, "episode_length_since_learning": episode_length,
            "learner_s_per_episode": per_call * calls_per_step * episode_length,
            "extrapolated": {"note": EXTRAPOLATION_NOTE, "env_steps": target_steps,
                             "learner_s": learner_target, "acting_s": acting_target,
                             "total_s": learner_target + acting_target,
                             "total_min": (learner_target + acting_target) / 60},
        })
    return out


def profile_text(profiles: list[dict]) -> str:
    parts = []
    for p in profiles:
        stage = p.get("stage", {})
        parts.append(f"=== profile {p.get('map')} {p.get('mode')} preset={p.get('preset')} device={p.get('device')}"
                     f" [{stage.get('status')}{': ' + stage['detail'] if stage.get('detail') else ''}]")
        for phase, data in p.get("phases", {}).items():
            head = f"--- {phase}: {data.get('wall_ms', 0):.1f} ms wall (profiled), {data.get('aten_ops')} aten ops"
            if "device_events" in data:
                head += (f", {data.get('device_events')} device events, {data.get('kernel_launches')} kernel"
                         f" launch calls, {data.get('graph_launches')} CUDA-graph launches, device busy"
                         f" {data.get('device_busy_ms', 0):.1f} ms, sync calls {data.get('sync_calls')}")
            parts.append(head)
            parts.append(data.get("table", ""))
    return "\n".join(parts) + "\n"


def summary_markdown(check: Check) -> str:
    cfg, facts = check.cfg, check.facts
    quick = " (quick mode: tiny settings, not a measurement of the paper sizes)" if cfg.quick else ""
    lines = ["# mabl GPU check", "",
             f"Device `{cfg.device}`{quick},"
             f" whole budget {cfg.budget_s:.0f} s, {time.monotonic() - check.start:.0f} s used.", ""]
    if facts:
        rates = facts.get("matmul_gflops", {})
        lines += [f"- GPU: {facts.get('gpu_name')} (driver {facts.get('driver')}, {facts.get('gpu_memory_gib')} GiB);"
                  f" torch {facts.get('torch')} (CUDA {facts.get('torch_cuda')}), JAX {facts.get('jax')},"
                  f" jaxmarl {facts.get('jaxmarl')}, Python {facts.get('python')}",
                  f"- matmul rate ({facts.get('matmul_size')}^3): fp32 {rates.get('fp32', 0):.0f} GFLOP/s,"
                  f" bf16 {rates.get('bf16', 0):.0f} GFLOP/s", ""]
    lines += ["## Stages", "", "| stage | status | seconds | budget | detail |", "|---|---|---|---|---|"]
    for r in check.records:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.budget_s:.0f} | {r.detail.replace('|', '/')} |")
    runs = [b for b in check.bench if "result" in b]
    if runs:
        lines += ["", f"## Learner speed (`mabl bench speed`, preset {cfg.bench_preset}; medians)", "",
                  "| map | mode | world-model update ms | policy iteration ms (imag. + PPO) | learner s/episode |"
                  " model / imag. / PPO share of matmul rate | peak MB |", "|---|---|---|---|---|---|---|"]
        for b in runs:
            r, share = b["result"], b.get("share_of_matmul_rate") or {}
            shares = " / ".join(f"{share[k]:.1%}" for k in ("model_update", "imagination", "ppo") if k in share) or "-"
            lines.append(f"| {b['map']} | {b['mode']} | {r['model_update_ms']:.1f} | {r['policy_iteration_ms']:.1f}"
                         f" ({r['imagination_ms']:.1f} + {r['ppo_ms']:.1f}) | {r['learner_s_per_episode']:.2f} |"
                         f" {shares} | {r['peak_memory_mb']:.0f} |")
    profiled = [(p, phase, data) for p in check.profiles for phase, data in p.get("phases", {}).items()]
    if profiled:
        lines += ["", "## Profile (details in profile.txt)", ""]
    for p, phase, data in profiled:
        top = ", ".join(t["name"] for t in (data.get("top") or [])[:5])
        text = f"- {p['mode']} {phase}: {data.get('wall_ms', 0):.1f} ms, {data.get('aten_ops')} aten ops"
        if data.get("device_busy_share") is not None:
            text += (f", {data.get('kernel_launches')} kernel launch calls, {data.get('graph_launches')} CUDA-graph"
                     f" launches, device busy {data['device_busy_share']:.0%} of the wall time")
        lines.append(text + f"; top by self time: {top}")
    if check.tests:
        counts = check.tests.get("counts", {})
        failed = [t["id"] for t in check.tests.get("tests", []) if t["outcome"] in ("failed", "error")]
        lines += ["", "## Tests on the device (`pytest -m gpu`)", "",
                  f"{', '.join(f'{v} {k}' for k, v in counts.items()) or 'no report'}"
                  + (f"; failed: {', '.join(failed)}" if failed else "")]
    t = check.train
    if t.get("env_steps"):
        lines += ["", f"## Training run ({cfg.train_env}, preset {cfg.train_preset}, amp {cfg.train_amp},"
                  f" compile {cfg.train_compile})", "",
                  f"- measured: {t['env_steps']} env steps, {t['episodes']} episodes (mean length"
                  f" {t['mean_episode_length']:.1f}), {t['learner_calls']} learner calls in {t['loop_s']:.1f} s of"
                  f" training loop ({t['env_steps_per_s']:.1f} env-steps/s)"
                  + (", stopped at its budget" if t.get("stopped_at_budget") else "")]
        if "extrapolated" in t:
            e = t["extrapolated"]
            lines += [f"- learner {t['learner_s_per_call_mean']:.2f} s per call, {t['learner_s_per_episode']:.2f} s per"
                      f" episode (first call {t['first_learner_call_s']:.1f} s, left out); acting"
                      f" {t['acting_ms_per_env_step']:.1f} ms per env step",
                      f"- **extrapolated** to {e['env_steps']} env steps: {e['total_min']:.1f} min"
                      f" (learner {e['learner_s']:.0f} s + acting {e['acting_s']:.0f} s). {e['note']}"]
    lines += ["", "Files: " + ", ".join(OUTPUT_FILES) + "."]
    return "\n".join(lines) + "\n"
