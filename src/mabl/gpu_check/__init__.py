"""One prepared command that measures and validates mabl on a GPU: ``mabl bench gpu`` (also
``python -m mabl.gpu_check``; ``benchmarks/gpu_check.sh`` runs it from a repository copy without an install).

    mabl bench gpu [--out DIR] [--device cuda|cpu] [--quick] [--budget SECONDS] [--stages ...]

Stages, in this order (each one in its own process with its own time budget, cut to what is left of
the whole budget; a stage that fails, times out or finds no time left is recorded as such and the
next one runs; every result is written to the output folder as soon as it exists):

1. ``facts``: GPU name, driver, memory, torch / CUDA / cuDNN / JAX / jaxmarl versions, and the
   measured fp32 and bf16 matmul rates (one large square product, best of 5).
2. ``bench``: ``mabl bench speed`` at 3s_vs_4z and corridor sizes, fp32, bf16 (``--amp``) and
   bf16 + ``--compile`` (CUDA graphs on a GPU): each phase's time, its FLOP/s against the matmul
   rate of ``facts``, peak memory. The compiled run of 3s_vs_4z comes right after the eager runs,
   that of corridor near the end (compiling takes minutes; see :data:`STAGES`).
3. ``profile``: torch.profiler over one world-model update and one policy iteration (3s_vs_4z,
   bf16, eager; and compiled at the end): top ops/kernels by self time, kernel launches per update.
4. ``tests``: ``pytest -m gpu`` (compiled vs eager, device replay vs host, the host-sync detectors
   on CUDA; all skipped without a GPU).
5. ``train``: a short real run (``smax:3m``, paper preset, a few thousand steps on a GPU; the debug
   preset and a few hundred steps with ``--quick``), stopped at its budget if not done; env-steps/s,
   learner seconds per episode, and an extrapolation to 100k steps labelled as such.

The output folder holds at most eight files, a fixed set that is easy to copy back: ``facts.json``,
``bench.json``, ``profile.txt``, ``profile.json``, ``tests.json``, ``train.json``, ``summary.md``
and ``log.txt`` (every stage's output). Scratch files (the training run, pytest's report) go to
``--work`` (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from mabl.errors import MablError
from mabl.gpu_check.driver import Check, StageRecord, gpu_test_files
from mabl.gpu_check.report import (
    BENCH_NOTE,
    EXTRAPOLATION_NOTE,
    parse_junit,
    profile_text,
    summarise_training,
    summary_markdown,
)
from mabl.gpu_check.settings import (
    MAPS,
    MODES,
    OUTPUT_FILES,
    QUICK_MODES,
    QUICK_OVERRIDES,
    STAGES,
    TARGET_STEPS,
    Settings,
    settings,
)
from mabl.gpu_check.workers import (
    LAUNCH_PREFIXES,
    SYNC_PREFIXES,
    WORKERS,
    _summarise_profile,
    worker_bench,
    worker_facts,
    worker_profile,
)

__all__ = ["BENCH_NOTE", "Check", "EXTRAPOLATION_NOTE", "LAUNCH_PREFIXES", "MAPS", "MODES", "OUTPUT_FILES",
           "QUICK_MODES", "QUICK_OVERRIDES", "STAGES", "SYNC_PREFIXES", "Settings", "StageRecord", "TARGET_STEPS",
           "WORKERS", "gpu_test_files", "main", "parse_junit", "profile_text", "settings", "summarise_training",
           "summary_markdown", "worker_bench", "worker_facts", "worker_profile", "_summarise_profile"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mabl bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default: $OUT)")
    p.add_argument("--work", help="scratch folder for the training run and pytest's report (default: a new temp folder)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:K or cpu")
    p.add_argument("--quick", action="store_true", help="tiny settings (debug preset, few steps): a CPU run in minutes")
    p.add_argument("--budget", type=float, help="seconds for the whole check (default 530; 600 with --quick)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--maps", default=",".join(MAPS), help="bench map sizes (default 3s_vs_4z,corridor)")
    p.add_argument("--modes", help="bench modes among fp32,bf16,bf16+compile (default all three; fp32,bf16 with --quick)")
    p.add_argument("--train-steps", type=int, help="env steps of the training run (default 3000; 300 with --quick)")
    p.add_argument("--train-compile", action="store_true", help="train with --compile true (compiling takes minutes)")
    p.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def _run_worker(name: str, params: str, result: str) -> int:
    try:
        data = {"result": WORKERS[name](**json.loads(params))}
        code = 0
    except MablError as exc:
        data, code = {"error": str(exc)}, 2
    except Exception as exc:  # noqa: BLE001 -- recorded in the output, the check goes on
        import traceback

        traceback.print_exc()
        data, code = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]}, 1
    Path(result).write_text(json.dumps(data, default=str))
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _run_worker(args.worker, args.params, args.result)
    try:
        out = args.out or os.environ.get("OUT")
        if not out:
            raise MablError("no output folder: pass --out DIR or set $OUT")
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise MablError(f"unknown stage {', '.join(bad)}; choose among {', '.join(STAGES)}")
        if args.device != "cpu" and not args.device.startswith("cuda"):
            raise MablError(f"--device={args.device!r}: use cuda, cuda:K or cpu")
        modes = tuple(args.modes.split(",")) if args.modes else None
        cfg = settings(args.device, args.quick, args.budget, tuple(args.maps.split(",")), modes, args.train_steps,
                       args.train_compile)
        out_path = Path(out)
        if out_path.exists() and any(out_path.iterdir()):
            leftovers = [p.name for p in out_path.iterdir() if p.name not in OUTPUT_FILES]
            if leftovers:
                raise MablError(f"output folder {out_path} holds other files ({', '.join(leftovers[:3])}); "
                                "use an empty or new folder")
            for name in OUTPUT_FILES:  # an earlier check's files: replaced, never mixed with this one's
                (out_path / name).unlink(missing_ok=True)
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mabl-gpu-check-"))
    except MablError as exc:
        print(f"mabl gpu check: error: {exc}", file=sys.stderr)
        return 2
    records = Check(out_path, work, cfg, stages).run()
    failed = [r.name for r in records if r.status not in ("ok", "off")]
    print(f"mabl gpu check: {sum(r.status == 'ok' for r in records)} of {len(records)} stages ok"
          + (f"; not ok: {', '.join(failed)}" if failed else "") + f"; results in {out_path}")
    return 0 if not failed else 1
