"""The GPU check's stage workers, each run in its own process (``python -m mabl.gpu_check --worker NAME``):
the device facts and matmul rates, ``mabl bench speed`` and the torch.profiler summary."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time

from mabl.gpu_check.settings import MODES


def worker_facts(device: str, matmul_size: int) -> dict:
    """Versions and the device's measured matmul rates."""
    from importlib import metadata

    import torch

    from mabl.bench import matmul_rate
    from mabl.device import resolve_device

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    dev = resolve_device(device)
    facts: dict = {
        "device": str(dev), "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "jax": version("jax"), "jaxlib": version("jaxlib"), "jaxmarl": version("jaxmarl"), "numpy": version("numpy"),
        "triton": version("triton"), "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "wheels": os.environ.get("MABL_WHEELS", "not reported (run through benchmarks/gpu_check.sh)"),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        facts.update(gpu_name=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                     gpu_multiprocessors=props.multi_processor_count,
                     compute_capability=f"{props.major}.{props.minor}", driver=_nvidia_smi_driver())
    else:
        facts.update(gpu_name=None, driver=None)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates[name] = matmul_rate(dev, dtype, size=matmul_size) / 1e9
    facts["matmul_gflops"] = rates
    facts["matmul_size"] = matmul_size
    return facts


def _nvidia_smi_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def worker_bench(map_name: str, mode: str, device: str, preset: str, model_repeats: int, policy_repeats: int,
                 overrides: dict | None = None, matmul_size: int | None = None) -> dict:
    """One ``mabl bench speed`` run; its JSON fields."""
    from mabl.bench import bench_speed

    amp, compile = MODES[mode]
    result = bench_speed(preset, map_name, device, amp, model_repeats, policy_repeats, compile=compile,
                         overrides=overrides, matmul_size=matmul_size)
    return {**dataclasses.asdict(result), "achieved_gflops": result.achieved_gflops()}


LAUNCH_PREFIXES = ("cudaLaunch", "cuLaunch", "cudaGraphLaunch", "cuGraphLaunch")
"""CUDA runtime/driver calls that launch work (the profiler records them as CPU-side events)."""

SYNC_PREFIXES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                 "cuStreamSynchronize", "cuCtxSynchronize")
"""Calls that make the host wait (cudaMemcpy without Async; cudaMemcpyAsync is counted apart)."""


def worker_profile(map_name: str, mode: str, device: str, preset: str, overrides: dict | None = None,
                   top: int = 25) -> dict:
    """torch.profiler over one world-model update and one policy iteration (after a warm-up of each,
    two when compiled):
    per phase, the wall time, the top ops by self time (device time on a GPU, CPU time otherwise),
    the number of kernels run and of launch calls, and the profiler's table as text."""
    from torch.profiler import ProfilerActivity, profile

    from mabl.bench import _sync, bench_learner

    amp, compile = MODES[mode]
    bench = bench_learner(preset, map_name, device, amp, compile, overrides=overrides)
    dev = bench.device
    for _ in range(2 if compile or dev.type == "cuda" else 1):  # warm-up: lazy init (compiling, CUDA graphs: 2)
        bench.model_update()
        bench.ppo(bench.imagination())
    _sync(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])

    def policy_iteration() -> None:
        bench.ppo(bench.imagination())

    phases = {}
    for name, fn in (("world_model_update", bench.model_update), ("policy_iteration", policy_iteration)):
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            wall = time.perf_counter() - t0
        phases[name] = _summarise_profile(prof, dev.type, wall, top)
    return {"map": map_name, "mode": mode, "preset": preset, "overrides": overrides or {}, "device": str(dev),
            "phases": phases}


def _summarise_profile(prof, device_type: str, wall_s: float, top: int) -> dict:
    """Numbers of one profiled phase; each part guarded so that one profiler API change costs one field."""
    import torch

    out: dict = {"wall_ms": wall_s * 1e3, "errors": []}
    cuda = device_type == "cuda"
    sort_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    try:
        out["table"] = prof.key_averages().table(sort_by=sort_key, row_limit=top)
    except Exception as exc:  # noqa: BLE001 -- a profiler quirk must not lose the other numbers
        out["table"] = f"(no table: {exc})"
        out["errors"].append(f"table: {exc}")
    try:
        rows = []
        for avg in prof.key_averages():
            self_dev = _first_attr(avg, ("self_device_time_total", "self_cuda_time_total"))
            rows.append({"name": avg.key, "calls": avg.count, "self_cpu_us": avg.self_cpu_time_total,
                         "self_device_us": self_dev})
        key = "self_device_us" if cuda else "self_cpu_us"
        rows.sort(key=lambda r: -(r[key] or 0))
        out["top"] = rows[:top]
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"top: {exc}")
    try:
        events = prof.events()
        cpu_names = [e.name for e in events if e.device_type == torch.autograd.DeviceType.CPU]
        out["aten_ops"] = sum(name.startswith("aten::") for name in cpu_names)
        if cuda:
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            out["device_events"] = len(kernels)
            out["device_busy_ms"] = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
            out["device_busy_share"] = out["device_busy_ms"] / out["wall_ms"] if out["wall_ms"] else None
            out["launch_calls"] = _count_by_name(cpu_names, LAUNCH_PREFIXES)
            graph = {k: v for k, v in out["launch_calls"].items() if "Graph" in k}
            out["graph_launches"] = sum(graph.values())
            out["kernel_launches"] = sum(out["launch_calls"].values()) - out["graph_launches"]
            out["sync_calls"] = {k: v for k, v in _count_by_name(cpu_names, SYNC_PREFIXES).items()
                                 if not k.startswith("cudaMemcpyAsync")}
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"events: {exc}")
    return out


def _count_by_name(names: list[str], prefixes: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        if name.startswith(prefixes):
            counts[name] = counts.get(name, 0) + 1
    return counts


def _first_attr(obj, names: tuple[str, ...]):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


WORKERS = {"facts": worker_facts, "bench": worker_bench, "profile": worker_profile}
