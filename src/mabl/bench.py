"""``mabl bench speed``: learner speed on synthetic batches of a map's sizes; ``mabl bench env``:
an env adapter's steps per second under uniform random actions.

What it runs is fixed by the preset and the map's sizes (not by an env), so numbers are
comparable across machines and commits: world-model updates on ``batch_size`` windows of
``seq_len`` rows, and policy iterations (filter + imagination + MAPPO epochs). The replay is filled
with random episodes of the map's shapes (random lengths, terminations with absorbing rows).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from mabl.envs.base import EnvSpec
from mabl.errors import MablError

MAP_SIZES: dict[str, tuple[int, int, int, int]] = {
    # name: (n_agents, n_actions, obs_dim, state_dim), SMAC's sizes
    "3s_vs_4z": (3, 10, 42, 61),
    "corridor": (6, 30, 156, 282),
}


def fill_random_episodes(replay, sizes: tuple[int, int, int, int], rng: np.random.Generator, rows: int = 10_000):
    """Add random terminated episodes of ``sizes`` (N, A, O, G) to ``replay`` until it holds ``rows``
    real rows (random lengths 20-119, ~70% of actions available); returns ``replay``."""
    n, a, o, g = sizes
    while replay.real_rows < rows:
        length = int(rng.integers(20, 120))
        avail = rng.random((length, n, a)) < 0.7
        avail[..., 0] = True
        replay.add_episode({
            "obs": rng.normal(size=(length, n, o)).astype(np.float32),
            "state": rng.normal(size=(length, g)).astype(np.float32),
            "action": rng.integers(0, a, size=(length, n)),
            "reward": rng.normal(size=length).astype(np.float32),
            "done": np.arange(length) == length - 1, "avail": avail}, terminated=True, rng=rng)
    return replay


def _is_sparse(x) -> bool:
    return isinstance(x, torch.Tensor) and x.layout in (torch.sparse_csr, torch.sparse_coo)


class MatmulFlops(TorchDispatchMode):
    """Counts the floating-point operations of the matrix products run inside it (forward and
    backward: matmuls, convolutions, attention kernels, with torch's own formulas), 2 per
    multiply-add. A product with a sparse operand counts its non-zeros only (``2 nnz n``), i.e.
    the work done, not that of the dense product it equals. Gathers (embedding bags) count 0."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sparse = [a for a in args if _is_sparse(a)]
        if sparse:
            if func._overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.matmul):
                self.flops += 2 * sparse[0]._nnz() * out.shape[-1]
        else:
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products ``fn()`` runs (see :class:`MatmulFlops`)."""
    with MatmulFlops() as counter:
        fn()
    return counter.flops


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of one ``[size, size] x [size, size]`` product in ``dtype`` on ``device`` (best of
    ``repeats``, after a warm-up): what the device's matrix units reach on a large, easy shape.
    ``size`` defaults to 2048 on a CPU and 8192 on a GPU (where a 2048^3 product takes tens of
    microseconds, too short to reach the matrix units' rate)."""
    if size is None:
        size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


@dataclass
class SpeedResult:
    map: str
    preset: str
    algo: str
    device: str
    amp: bool
    compiled: bool
    threads: int
    model_update_ms: float
    policy_iteration_ms: float
    imagination_ms: float
    ppo_ms: float
    learner_s_per_episode: float
    model_updates_per_call: int
    policy_iterations_per_call: int
    peak_memory_mb: float
    model_update_gflop: float
    imagination_gflop: float
    ppo_gflop: float
    matmul_gflops: float
    """The device's rate on one large matrix product in the run's precision (bf16 with ``--amp``)."""

    def achieved_gflops(self) -> dict[str, float]:
        """GFLOP/s of matrix work each phase achieves (its counted FLOPs over its median time)."""
        return {"model_update": self.model_update_gflop / self.model_update_ms * 1e3,
                "imagination": self.imagination_gflop / self.imagination_ms * 1e3,
                "ppo": self.ppo_gflop / self.ppo_ms * 1e3}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class BenchLearner:
    """A learner of a map's sizes with a replay of random episodes, and its three timed phases."""

    agent: object
    cfg: object
    device: torch.device
    model_update: Callable[[], None]
    imagination: Callable[[], object]
    ppo: Callable[[object], None]


def bench_learner(preset: str = "paper", map_name: str = "3s_vs_4z", device: str = "cpu", amp: bool = False,
                  compile: bool = False, algo: str = "mabl", seed: int = 0,
                  overrides: dict | None = None) -> BenchLearner:
    """The learner of ``algo`` (any world-model algorithm, :mod:`mabl.algo.registry` entries with ``world_model``) at
    ``map_name``'s sizes with ``preset``'s settings (and config ``overrides``, dotted paths), and
    closures running one world-model update, one imagination and one PPO phase on windows sampled
    from random episodes."""
    from mabl.algo import ALGORITHMS, algorithm
    from mabl.device import resolve_device
    from mabl.presets import build_config
    from mabl.replay import SequenceReplay

    if map_name not in MAP_SIZES:
        raise MablError(f"unknown map '{map_name}' for bench; choose one of {', '.join(MAP_SIZES)}")
    if algo not in ALGORITHMS or not ALGORITHMS[algo].world_model:
        raise MablError(f"--algo={algo!r}: bench speed times world-model learners; choose one of "
                        f"{', '.join(name for name, entry in ALGORITHMS.items() if entry.world_model)}")
    n, a, o, g = MAP_SIZES[map_name]
    spec = EnvSpec(name=f"bench:{map_name}", n_agents=n, obs_dim=o, state_dim=g, discrete=True, n_actions=a,
                   has_action_mask=True, episode_limit=200)
    cfg = build_config(preset, {**(overrides or {}), "amp": amp, "device": device, "compile": compile, "algo": algo})
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    agent = algorithm(algo).build(spec, cfg, dev)
    replay = fill_random_episodes(SequenceReplay(spec, 20_000), MAP_SIZES[map_name], rng)

    def model_update() -> None:
        agent.train_world_model(replay.sample(cfg.model.batch_size, cfg.model.seq_len, rng))

    def imagination():
        return agent.imagine(replay.sample(cfg.policy.batch_size, cfg.model.seq_len, rng))

    def ppo(rollout) -> None:
        with agent.autocast():
            agent.ppo.update(rollout)

    return BenchLearner(agent, cfg, dev, model_update, imagination, ppo)


def bench_speed(preset: str = "paper", map_name: str = "3s_vs_4z", device: str = "cpu", amp: bool = False,
                model_repeats: int = 10, policy_repeats: int = 3, seed: int = 0, compile: bool = False,
                algo: str = "mabl", overrides: dict | None = None, matmul_size: int | None = None) -> SpeedResult:
    """Time ``model_repeats`` world-model updates and ``policy_repeats`` policy iterations of the
    learner of ``algo`` (:func:`bench_learner`) after a warm-up; each phase reports the **median**
    of its repeats (a shared machine's bursts of interference move a mean far more than a median)."""
    bench = bench_learner(preset, map_name, device, amp, compile, algo, seed, overrides)
    agent, cfg, dev = bench.agent, bench.cfg, bench.device
    model_update, imagination, ppo = bench.model_update, bench.imagination, bench.ppo

    model_update()  # warm-up (allocator, kernels, lazy init; compilation with --compile)
    ppo(imagination())
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model_times = []
    for _ in range(model_repeats):
        _sync(dev)
        t0 = time.perf_counter()
        model_update()
        _sync(dev)
        model_times.append(time.perf_counter() - t0)
    imag_times, ppo_times = [], []
    for _ in range(policy_repeats):
        t0 = time.perf_counter()
        rollout = imagination()
        _sync(dev)
        t1 = time.perf_counter()
        ppo(rollout)
        _sync(dev)
        imag_times.append(t1 - t0)
        ppo_times.append(time.perf_counter() - t1)
    # The matrix work of one more of each phase (counting makes every op slower, so not timed),
    # on the eager path: a compiled graph's kernels are not seen op by op.
    agent.model_loss, agent.imagine_fn = agent.eager_model_loss, agent.imagine_batch
    model_flops = count_flops(model_update)
    rollout = None

    def imagine_once() -> None:
        nonlocal rollout
        rollout = imagination()

    imag_flops = count_flops(imagine_once)
    ppo_flops = count_flops(lambda: ppo(rollout))
    rate = matmul_rate(dev, torch.bfloat16 if amp else torch.float32, matmul_size)
    model_ms = float(np.median(model_times)) * 1e3
    imag_ms, ppo_ms = float(np.median(imag_times)) * 1e3, float(np.median(ppo_times)) * 1e3
    sched = cfg.schedule
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return SpeedResult(
        map=map_name, preset=preset, algo=algo, device=str(dev), amp=amp, compiled=compile, threads=torch.get_num_threads(),
        model_update_ms=model_ms, policy_iteration_ms=imag_ms + ppo_ms, imagination_ms=imag_ms, ppo_ms=ppo_ms,
        learner_s_per_episode=(sched.model_updates * model_ms + sched.policy_iterations * (imag_ms + ppo_ms)) / 1e3,
        model_updates_per_call=sched.model_updates, policy_iterations_per_call=sched.policy_iterations,
        peak_memory_mb=peak, model_update_gflop=model_flops / 1e9, imagination_gflop=imag_flops / 1e9,
        ppo_gflop=ppo_flops / 1e9, matmul_gflops=rate / 1e9)


OTHER_HOST = {"3s_vs_4z": (820.0, 18000.0, 121.0), "corridor": (1571.0, 38800.0, 250.0)}
"""The authors' released MABL learner (paper preset) as measured on ANOTHER machine, a 2-core
AVX-512 CPU (torch 2.13, 2 threads; lower ends of 820-906 ms, 18.0-19.5 s, 121-132 s at 3s_vs_4z;
docs/PERFORMANCE.md): ms per model update, ms per policy iteration, learner seconds per episode.
The same released code measured 1050 ms / 25.1 s (3s_vs_4z) and 2206 ms / 51.4 s (corridor) on a
second host, so a ratio of this machine's times to these numbers is a ratio to
another host's measurement, not a speed-up."""

OTHER_HOST_SOURCE = ("the released MABL learner on a 2-core AVX-512 CPU (docs/PERFORMANCE.md; a second "
                     "host measured 1050 ms / 25.1 s at 3s_vs_4z)")


def format_result(r: SpeedResult, as_json: bool = False) -> str:
    if as_json:
        return json.dumps({**r.__dict__, "achieved_gflops": r.achieved_gflops()})
    rate = r.achieved_gflops()

    def work(phase: str, gflop: float) -> str:
        return (f"{gflop:8.2f} GFLOP, {rate[phase]:5.0f} GFLOP/s = {rate[phase] / r.matmul_gflops:4.0%} of the"
                f" matmul rate")

    lines = [
        f"mabl bench speed  algo={r.algo} map={r.map} preset={r.preset} device={r.device} amp={r.amp}"
        f" compile={r.compiled} threads={r.threads}",
        f"  world-model update : {r.model_update_ms:9.1f} ms",
        f"  policy iteration   : {r.policy_iteration_ms:9.1f} ms  (imagination {r.imagination_ms:.1f} ms"
        f" + PPO {r.ppo_ms:.1f} ms)",
        f"  learner / episode  : {r.learner_s_per_episode:9.2f} s   ({r.model_updates_per_call} model updates +"
        f" {r.policy_iterations_per_call} policy iterations)",
        f"  peak memory        : {r.peak_memory_mb:9.0f} MB ({'GPU allocated' if 'cuda' in r.device else 'process RSS'})",
        f"  matrix work (matmul rate of this device, {'bf16' if r.amp else 'fp32'}: {r.matmul_gflops:.0f} GFLOP/s)"
        + (" -- counted on the eager path; compiled graphs multiply one-hots densely" if r.compiled else ""),
        f"    world-model update {work('model_update', r.model_update_gflop)}",
        f"    imagination        {work('imagination', r.imagination_gflop)}",
        f"    PPO epochs         {work('ppo', r.ppo_gflop)}",
    ]
    if r.preset == "paper" and r.algo == "mabl" and r.map in OTHER_HOST and r.device == "cpu":
        wm, pi, ep = OTHER_HOST[r.map]
        lines += [
            f"  ratio to ANOTHER host's measurement (not a speed-up on this machine): its time / this time ="
            f" {wm / r.model_update_ms:.2f}x, {pi / r.policy_iteration_ms:.2f}x, {ep / r.learner_s_per_episode:.2f}x",
            f"    of {wm:.0f} ms, {pi / 1e3:.1f} s, {ep:.0f} s: {OTHER_HOST_SOURCE}; time both on one machine to compare",
        ]
    return "\n".join(lines)


def bench_env(name: str, steps: int, seed: int = 0) -> dict:
    """Step env ``name`` (through mabl's adapter and its checks) ``steps`` times with uniform random
    actions (among the available ones); resets are timed separately, not counted as steps."""
    from mabl.envs import make_env

    env = make_env(name, seed=seed)
    spec, rng = env.spec, np.random.default_rng(seed)
    reset_s, step_s, episodes, done = 0.0, 0.0, 0, True
    timestep = None
    for _ in range(steps):
        if done:
            start = time.perf_counter()
            timestep = env.reset()
            reset_s += time.perf_counter() - start
            episodes += 1
        if spec.discrete:
            scores = rng.random((spec.n_agents, spec.n_actions))
            if timestep.avail is not None:
                scores = np.where(timestep.avail, scores, -1.0)
            action = scores.argmax(-1)
        else:
            action = rng.uniform(spec.action_low, spec.action_high, (spec.n_agents, spec.action_dim)).astype(np.float32)
        start = time.perf_counter()
        timestep = env.step(action)
        step_s += time.perf_counter() - start
        done = timestep.done
    env.close()
    return {"env": name, "steps": steps, "episodes": episodes, "env_steps_per_s": steps / step_s,
            "reset_ms": 1000 * reset_s / max(episodes, 1)}
