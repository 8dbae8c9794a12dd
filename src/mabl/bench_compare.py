"""``mabl bench compare``: two learner variants timed in pairs, interleaved, in one process.

A shared machine's speed drifts by 20-30 % from minute to minute, more than most single changes are
worth, so two separate ``mabl bench speed`` runs cannot tell them apart. Here both variants are built
(:func:`mabl.bench.bench_learner`: a map's sizes, random replay) and timed alternately, A then B,
then B then A (the order flips every pair), after warm-up pairs that are not timed (a compiled
variant compiles there). Each pair sees nearly the same machine, and the median of the per-pair
ratios A/B is robust to drift: > 1 means B is faster.

A variant is a comma-separated list of config settings ``FIELD=VALUE`` on the preset (dotted paths as
``mabl train``'s flags without the dashes), e.g. ``compile=true``, ``algo=mag``,
``amp=true,model.hidden=64``; an empty one is the preset itself.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from mabl.errors import MablError

PHASES = ("model", "imagination", "policy", "call")
"""What one timed repeat is: one world-model update, one imagination (``agent.imagine`` of a policy
batch), one policy iteration (imagination + PPO), or one learner call of the schedule
(``schedule.model_updates`` updates + ``schedule.policy_iterations`` policy iterations)."""


def parse_variant(text: str, flag: str) -> dict[str, str]:
    """``"a.b=1,c=x"`` -> ``{"a.b": "1", "c": "x"}``; ``""`` -> ``{}``."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MablError(f"{flag} {text!r}: {item!r} is not FIELD=VALUE (e.g. {flag} compile=true,model.hidden=64; "
                            f"an empty {flag} '' is the preset itself)")
        out[key.strip()] = value.strip()
    return out


def paired_times(run_a: Callable[[], None], run_b: Callable[[], None], pairs: int, warmup: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], list[float]]:
    """Seconds (by ``clock``) of ``pairs`` timed runs of each, interleaved (A, B in even pairs; B, A in
    odd ones), after ``warmup`` untimed pairs."""
    return paired_clocks(run_a, run_b, pairs, warmup, {"t": clock})["t"]


def paired_clocks(run_a: Callable[[], None], run_b: Callable[[], None], pairs: int, warmup: int,
                  clocks: dict[str, Callable[[], float]]) -> dict[str, tuple[list[float], list[float]]]:
    """:func:`paired_times` read on every clock of ``clocks`` (e.g. wall and process CPU) at once."""
    times = {key: {"a": [], "b": []} for key in clocks}
    runs = {"a": run_a, "b": run_b}
    for i in range(warmup + pairs):
        for name in ("ab" if i % 2 == 0 else "ba"):
            start = {key: clock() for key, clock in clocks.items()}
            runs[name]()
            if i >= warmup:
                for key, clock in clocks.items():
                    times[key][name].append(clock() - start[key])
    return {key: (t["a"], t["b"]) for key, t in times.items()}


def summarize(a: list[float], b: list[float]) -> dict[str, float]:
    """Median seconds of each, and the median, min and max of the per-pair ratios A/B."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"a_median_s": statistics.median(a), "b_median_s": statistics.median(b),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "pairs": len(ratios)}


def _phase_runner(bench, phase: str) -> Callable[[], None]:
    sync = (lambda: __import__("torch").cuda.synchronize(bench.device)) if bench.device.type == "cuda" else (lambda: None)

    def model() -> None:
        bench.model_update()
        sync()

    def imagination() -> None:
        bench.imagination()
        sync()

    def policy() -> None:
        bench.ppo(bench.imagination())
        sync()

    def call() -> None:
        for _ in range(bench.cfg.schedule.model_updates):
            bench.model_update()
        for _ in range(bench.cfg.schedule.policy_iterations):
            bench.ppo(bench.imagination())
        sync()

    return {"model": model, "imagination": imagination, "policy": policy, "call": call}[phase]


def _as_bool(key: str, text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return low in ("1", "true", "yes", "on")
    raise MablError(f"{key}={text!r} is not a boolean (true or false)")


def _learner(preset: str, map_name: str, device: str, algo: str, settings: dict[str, str]):
    from mabl.bench import bench_learner

    settings = dict(settings)
    amp, compile_ = (_as_bool(key, settings.pop(key, "false")) for key in ("amp", "compile"))
    return bench_learner(preset, map_name, device, amp, compile_, settings.pop("algo", algo), 0, settings)


def bench_compare(a: str, b: str, preset: str = "quick", map_name: str = "3s_vs_4z", device: str = "cpu",
                  algo: str = "mabl", phase: str = "model", pairs: int = 10, warmup: int = 1) -> dict:
    """Build variant ``a`` and ``b`` (:func:`parse_variant`) and time ``phase`` in ``pairs`` interleaved pairs."""
    if phase not in PHASES:
        raise MablError(f"--phase={phase!r}: choose one of {', '.join(PHASES)}")
    if pairs <= 0 or warmup < 0:
        raise MablError(f"--pairs={pairs} must be > 0 and --warmup={warmup} >= 0")
    variants = {"a": parse_variant(a, "--a"), "b": parse_variant(b, "--b")}
    learners = {name: _learner(preset, map_name, device, algo, v) for name, v in variants.items()}
    measured = paired_clocks(_phase_runner(learners["a"], phase), _phase_runner(learners["b"], phase), pairs, warmup,
                             {"wall": time.perf_counter, "cpu": time.process_time})
    (times_a, times_b), (cpu_a, cpu_b) = measured["wall"], measured["cpu"]
    import torch

    cpu = summarize(cpu_a, cpu_b)
    return {"a": a, "b": b, "preset": preset, "map": map_name, "device": str(learners["a"].device), "phase": phase,
            "threads": torch.get_num_threads(), "warmup": warmup, **summarize(times_a, times_b),
            "a_cpu_median_s": cpu["a_median_s"], "b_cpu_median_s": cpu["b_median_s"],
            "cpu_ratio_median": cpu["ratio_median"],
            "a_world_model_params": _params(learners["a"]), "b_world_model_params": _params(learners["b"]),
            "a_s": times_a, "b_s": times_b}


def _params(bench) -> int:
    return sum(p.numel() for p in bench.agent.world_model.parameters())


def format_compare(r: dict) -> str:
    ms = 1e3
    return "\n".join([
        f"mabl bench compare  phase={r['phase']} map={r['map']} preset={r['preset']} device={r['device']} "
        f"threads={r['threads']} pairs={r['pairs']} (+{r['warmup']} warm-up)",
        *(f"  {k.upper()} [{r[k] or 'the preset'}]: median {r[f'{k}_median_s'] * ms:.1f} ms wall, "
          f"{r[f'{k}_cpu_median_s'] * ms:.1f} ms process CPU; world model {r[f'{k}_world_model_params'] / 1e6:.2f} M "
          "parameters" for k in ("a", "b")),
        f"  paired ratio A/B: median {r['ratio_median']:.3f} (range {r['ratio_min']:.2f}-{r['ratio_max']:.2f}), "
        f"process CPU {r['cpu_ratio_median']:.3f}; > 1: B is faster"])
