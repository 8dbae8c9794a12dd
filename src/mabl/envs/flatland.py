"""Flatland railway tasks (placeholder: the adapter is being written)."""

FLATLAND_TASKS: dict[str, dict] = {"5_agents": {}, "10_agents": {}}
