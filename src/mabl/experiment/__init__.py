"""Controlled experiments run as ``mabl experiment NAME``: :mod:`mabl.experiment.representation`
(what the world models of mabl, mabl-sg and dreamer learn from one fixed dataset; docs/DIAGNOSTICS.md)."""
