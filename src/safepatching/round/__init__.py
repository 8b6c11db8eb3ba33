"""The round: its layout (`RoundLayout`, `Project`) and its steps (`safepatching.round.steps`)."""

from .layout import BACKBONE, KINDS, SPLITS, Project, RoundLayout

__all__ = ["BACKBONE", "KINDS", "SPLITS", "Project", "RoundLayout"]
