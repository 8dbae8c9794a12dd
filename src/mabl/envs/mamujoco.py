"""Multi-agent MuJoCo tasks (placeholder: the adapter is being written)."""

MAMUJOCO_TASKS: tuple[str, ...] = ("Humanoid-9|8", "HumanoidStandup-9|8")
