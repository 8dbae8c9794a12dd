"""StarCraft II SMAC maps (placeholder: the adapter is being written)."""

SMAC_MAPS: dict[str, dict] = {}
