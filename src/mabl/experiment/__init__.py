"""Controlled experiments run as ``mabl experiment NAME``: :mod:`mabl.experiment.representation`
(what the world models of mabl, mabl-sg and dreamer learn from one fixed dataset; docs/DIAGNOSTICS.md)
and :mod:`mabl.experiment.reward_loss` (what the reward head learns under each reward loss;
docs/PERFORMANCE.md)."""
