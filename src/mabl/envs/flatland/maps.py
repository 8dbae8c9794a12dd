"""Flatland's maps as the paper's tasks: task settings, importing Flatland, its malfunctions and
timetable as the adapter drives them, and the process-wide caches it empties (docs/ENVIRONMENTS.md,
Flatland)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mabl.errors import MablError

FLATLAND_TASKS: dict[str, dict[str, Any]] = {
    "5_agents": {
        "n_agents": 5,
        "width": 35,
        "height": 35,
        "n_cities": 3,
        "max_rails_between_cities": 2,
        "max_rail_pairs_in_city": 2,
        "malfunction_rate": 1 / 100,
        "malfunction_min_duration": 20,
        "malfunction_max_duration": 50,
        "speed": 1.0,
    },
    "10_agents": {
        "n_agents": 10,
        "width": 35,
        "height": 35,
        "n_cities": 4,
        "max_rails_between_cities": 2,
        "max_rail_pairs_in_city": 2,
        "malfunction_rate": 1 / 150,
        "malfunction_min_duration": 20,
        "malfunction_max_duration": 50,
        "speed": 1.0,
    },
}
"""Task name -> the settings of its maps (the paper's; ``max_rail_pairs_in_city=2``: at most 4 rails)."""


def episode_limit(settings: dict[str, Any]) -> int:
    """Flatland's sparse-schedule episode limit for a task's maps: ``int(8 (W + H + N / cities))``."""
    return int(8 * (settings["width"] + settings["height"] + settings["n_agents"] / settings["n_cities"]))


@contextmanager
def python_random_kept() -> Iterator[None]:
    """Run a block that reseeds Python's global ``random`` (Flatland does) and restore its state."""
    saved = random.getstate()
    try:
        yield
    finally:
        random.setstate(saved)


def clear_rail_caches(rail: Any) -> None:
    """Empty the ``lru_cache`` of every method of the rail's classes.

    Flatland memoises its rail's methods in caches shared by all instances (keyed by the instance,
    up to millions of entries): each new map adds thousands of entries and keeps the old maps alive,
    about 3 MB per episode. Clearing them when a map is replaced bounds the memory to one map's
    worth. The caches are pure memoisation, so another env in the same process only recomputes.
    """
    for cls in type(rail).__mro__:
        for attribute in vars(cls).values():
            clear = getattr(attribute, "cache_clear", None)
            if clear is not None:
                clear()


def import_flatland(task: str) -> dict[str, Any]:
    """The Flatland classes the adapter uses, or a one-line MablError naming what to install."""
    try:
        from flatland.core.env_observation_builder import DummyObservationBuilder
        from flatland.envs.line_generators import SparseLineGen
        from flatland.envs.malfunction_generators import Malfunction, MalfunctionProcessData
        from flatland.envs.observations import TreeObsForRailEnv
        from flatland.envs.predictions import ShortestPathPredictorForRailEnv
        from flatland.envs.rail_env import RailEnv
        from flatland.envs.rail_generators import SparseRailGen
        from flatland.envs.timetable_utils import Timetable
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "flatland":
            raise MablError(
                f"flatland:{task} needs flatland-rl: pip install 'mabl[flatland]' && "
                "pip install --no-deps flatland-rl==4.3.0"
            ) from None
        raise MablError(
            f"flatland:{task}: flatland-rl is installed but needs '{exc.name}': pip install 'mabl[flatland]'"
        ) from None
    except ImportError as exc:
        raise MablError(f"flatland:{task}: cannot import flatland-rl ({exc})") from None
    return {
        "DummyObservationBuilder": DummyObservationBuilder,
        "SparseLineGen": SparseLineGen,
        "Malfunction": Malfunction,
        "MalfunctionProcessData": MalfunctionProcessData,
        "TreeObsForRailEnv": TreeObsForRailEnv,
        "ShortestPathPredictorForRailEnv": ShortestPathPredictorForRailEnv,
        "RailEnv": RailEnv,
        "SparseRailGen": SparseRailGen,
        "Timetable": Timetable,
    }


class Malfunctions:
    """Flatland's malfunction process, drawn from the env's generator at each call.

    Same law as Flatland's ``ParamMalfunctionGen`` (break with probability ``1 - exp(-rate)`` per
    train and step, for ``randint(min, max) + 1`` counter steps: the counter also ticks on the step
    the malfunction starts), without its cache of a million draws kept across episodes.
    """

    def __init__(self, rate: float, min_duration: int, max_duration: int, flatland: dict[str, Any]) -> None:
        self.probability = 1.0 - math.exp(-rate)
        self.min_duration, self.max_duration = min_duration, max_duration
        self._malfunction = flatland["Malfunction"]
        self._process_data = flatland["MalfunctionProcessData"](rate, min_duration, max_duration)

    def generate(self, np_random: np.random.RandomState) -> Any:
        if np_random.rand() < self.probability:
            return self._malfunction(int(np_random.randint(self.min_duration, self.max_duration + 1)) + 1)
        return None

    def get_process_data(self) -> Any:
        return self._process_data


def departures_at_once(limit: int, timetable_type: Any) -> Callable[..., Any]:
    """A Flatland timetable generator: every train may depart at step 0; ``limit`` steps per episode."""

    def generate(agents: list, distance_map: Any, agents_hints: Any, np_random: Any = None) -> Any:
        earliest = [[0] * (len(agent.waypoints) - 1) + [None] for agent in agents]
        latest = [[None] + [limit] * (len(agent.waypoints) - 1) for agent in agents]
        return timetable_type(earliest_departures=earliest, latest_arrivals=latest, max_episode_steps=limit)

    return generate
