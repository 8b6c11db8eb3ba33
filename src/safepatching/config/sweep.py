"""Sweep-grid expansion: a `select.grid.<method>` entry -> the method's whole sweep space -> its points."""

from __future__ import annotations

import itertools
from typing import Any

from .settings import MergeSettings, merge_settings


def sweep_space(method: str, given: Any) -> dict[str, Any]:
    """`select.grid.<method>` -> the method's whole sweep space: the keys it names (in its order), then the method's
    default sweep (`sweep=` at its registration) for the settings it does not name, then every other setting at its
    default. So a short entry ({a: [10, 20]}) changes only what it names."""
    from ..registry import discover

    if not isinstance(given, dict):
        raise ValueError(f"{method}: expected a mapping of setting -> value or [values], got {type(given).__name__}")
    if "method" in given:
        raise ValueError(f"{method}: 'method' is the key of this entry, not a setting")
    try:
        m = discover("merge method").get(method)
    except KeyError as e:  # UnknownNameError lists the known names
        raise ValueError(str(e)) from None
    defaults = {k: f.get_default(call_default_factory=True) for k, f in m.settings.model_fields.items()
                if k != "method" and not f.is_required()}
    return {**given, **{k: v for k, v in m.sweep.items() if k not in given},
            **{k: v for k, v in defaults.items() if k not in given and k not in m.sweep}}


def grid_points(method: str, space: dict[str, Any]) -> list[MergeSettings]:
    """A method's sweep space (see sweep_space) -> its points: list values are swept (product, in the order given),
    scalars fixed."""
    swept = [(k, v) for k, v in space.items() if isinstance(v, (list, tuple))]
    for k, v in swept:
        if not v:
            raise ValueError(f"{method}.{k}: an empty list sweeps nothing")
    fixed = {k: v for k, v in space.items() if not isinstance(v, (list, tuple))}
    return [merge_settings({"method": method, **fixed, **dict(zip([k for k, _ in swept], combo))})
            for combo in itertools.product(*[v for _, v in swept])]
