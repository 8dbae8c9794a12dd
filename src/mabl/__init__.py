"""MABL: bi-level latent-variable world model for sample-efficient multi-agent RL (AAMAS 2024)."""

__version__ = "0.4.0"


def load_policy(path: str, device: str = "cpu", seed: int | None = None):
    """Load a decentralized policy written by ``mabl export`` (see :mod:`mabl.policy`)."""
    from mabl.policy import load_policy as _load

    return _load(path, device=device, seed=seed)


__all__ = ["load_policy", "__version__"]
