"""The GPU check's settings: its stages, output files, bench modes and maps, and the sizes and time budgets
of a full or a quick (``--quick``) check."""

from __future__ import annotations

import dataclasses

from mabl.errors import MablError

OUTPUT_FILES = ("facts.json", "bench.json", "profile.txt", "profile.json", "tests.json", "train.json",
                "summary.md", "log.txt")
"""Everything the check writes into the output folder (scratch files go to ``--work``)."""

STAGES = ("facts", "bench", "bench-compiled", "profile", "tests", "train", "bench-compiled-more", "profile-compiled")
"""In order of value per second: the compiled bench of the first map (the number the GPU targets are
about) before the profile, the tests and the training run; the other map's compiled bench and the
compiled profile last, where the whole budget may cut them."""

MODES = {"fp32": (False, False), "bf16": (True, False), "bf16+compile": (True, True)}
"""bench mode -> (amp, compile)."""

MAPS = ("3s_vs_4z", "corridor")

TARGET_STEPS = 100_000

QUICK_MODES = ("fp32", "bf16")

QUICK_OVERRIDES = {"model.seq_len": 4, "policy.horizon": 3}
"""--quick: shorter windows and imagination on top of the debug preset, so that compiling (the
unrolled filter and imagination loops) takes a few minutes less on a small CPU."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one check runs; :func:`settings` makes the GPU and the ``--quick`` versions."""

    device: str
    quick: bool
    budget_s: float
    """The whole check (all stages) stops at this many seconds."""
    bench_preset: str
    bench_overrides: dict
    """Config overrides of the bench and profile runs on top of ``bench_preset``."""
    maps: tuple[str, ...]
    compiled_maps: tuple[str, ...]
    """The maps of the compiled bench runs (compiling takes minutes per map)."""
    modes: tuple[str, ...]
    model_repeats: int
    policy_repeats: int
    matmul_size: int
    train_env: str
    train_preset: str
    train_steps: int
    train_amp: bool
    train_compile: bool
    stage_budget_s: dict[str, float]
    """Upper bound of each stage (one bench run, one profile, the tests, the training run)."""


def settings(device: str, quick: bool, budget_s: float | None = None, maps: tuple[str, ...] = MAPS,
             modes: tuple[str, ...] | None = None, train_steps: int | None = None,
             train_compile: bool = False) -> Settings:
    """The GPU settings (fit in 9 minutes with compiling) or, with ``quick``, tiny ones for a CPU.
    ``modes`` defaults to all three, but ``--quick`` leaves compiling out (on a small shared CPU,
    compiling even the debug preset's graphs took over 15 minutes): pass them to include it."""
    modes = modes or (QUICK_MODES if quick else tuple(MODES))
    unknown = [m for m in maps if m not in MAPS] + [m for m in modes if m not in MODES]
    if unknown:
        raise MablError(f"unknown map or mode {', '.join(unknown)}; maps: {', '.join(MAPS)}; "
                        f"modes: {', '.join(MODES)}")
    if quick:
        return Settings(device=device, quick=True, budget_s=budget_s or 600.0, bench_preset="debug", maps=maps,
                        bench_overrides=QUICK_OVERRIDES,
                        compiled_maps=maps[:1], modes=modes, model_repeats=2, policy_repeats=1, matmul_size=512,
                        train_env="smax:3m", train_preset="debug", train_steps=train_steps or 300, train_amp=False,
                        train_compile=train_compile,
                        stage_budget_s={"facts": 60, "bench": 90, "bench-compiled": 240, "profile": 90,
                                        "profile-compiled": 120, "tests": 120, "train": 150})
    return Settings(device=device, quick=False, budget_s=budget_s or 530.0, bench_preset="paper", maps=maps,
                    bench_overrides={},
                    compiled_maps=maps, modes=modes, model_repeats=20, policy_repeats=5, matmul_size=8192,
                    train_env="smax:3m", train_preset="paper", train_steps=train_steps or 3000, train_amp=True,
                    train_compile=train_compile,
                    stage_budget_s={"facts": 60, "bench": 60, "bench-compiled": 150, "profile": 60,
                                    "profile-compiled": 90, "tests": 130, "train": 110})
