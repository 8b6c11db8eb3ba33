"""Before a merge touches a tensor: its inputs checked against the base (`check_names`: every patched or scored
tensor exists in the base with the same shape; `check_scores`: a score-using method has scores for every patched
tensor) and the method's whole-model prepass run (`run_prepass`: the ranking thresholds of a global or per-layer
method, `MergeMethod.prepass`). Shared by the streaming and the in-memory merge."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import MergeSettings
from ..errors import CheckpointError
from .masks import global_threshold
from .method import SIDES, MergeMethod


@dataclass(frozen=True)
class Thresholds:
    """A prepass's result: per side, one threshold for the model (float), one per group ({group: threshold}), or
    None; `group` names a tensor's group."""

    se: Any = None
    om: Any = None
    group: Callable[[str], str] | None = None

    def of(self, side: str, name: str) -> float | None:
        """Tensor `name`'s threshold on `side`."""
        t = getattr(self, side)
        return t.get(self.group(name)) if isinstance(t, dict) and self.group is not None else t

    def as_manifest(self) -> dict:
        return {side: ({k: _finite_or_str(x) for k, x in t.items()} if isinstance(t, dict) else _finite_or_str(t))
                for side, t in ((side, getattr(self, side)) for side in SIDES)}


def run_prepass(method: MergeMethod, cfg: MergeSettings, names: dict[str, list[str]],
                get: dict[str, Callable[[str], torch.Tensor] | None],
                numel: dict[str, Callable[[str], int] | None]) -> Thresholds:
    """The method's whole-model prepass (`method.prepass(cfg)`), run: ranking thresholds per side, one for the model
    (group None) or one per group ({group: threshold}, e.g. per layer); None when the method declares no prepass."""
    pre = method.prepass(cfg)
    if pre is None:
        return Thresholds()
    thr: dict[str, Any] = {"se": None, "om": None}
    for side in SIDES:
        g, ne = get[side], numel[side]
        if not names[side] or g is None or ne is None:
            continue
        groups: dict[str, list[str]] = {}
        for n in names[side]:
            groups.setdefault("all" if pre.group is None else pre.group(n), []).append(n)
        per = {}
        for key, group in groups.items():
            items: Iterable[tuple[str, torch.Tensor]] = ((n, pre.ranked(n, g(n), side)) for n in group)
            per[key] = global_threshold(items, pre.pct[side], total=sum(ne(n) for n in group), seed=pre.seed)
        thr[side] = per["all"] if pre.group is None else per
    return Thresholds(thr["se"], thr["om"], pre.group)


def check_names(label: str, names: Iterable[str], shape_of: Callable[[str], tuple[int, ...]],
                 base_shape: dict[str, tuple[int, ...]], base_label: str) -> None:
    for n in names:
        if n not in base_shape:
            raise CheckpointError(f"{label}: tensor {n!r} is not in the base checkpoint {base_label}")
        if tuple(shape_of(n)) != base_shape[n]:
            raise CheckpointError(f"{n}: shape mismatch: {label} has {tuple(shape_of(n))}, "
                                  f"base {base_label} has {base_shape[n]}")


def check_scores(method: MergeMethod, side: str, patch_names: Iterable[str], score_names: set[str] | None,
                  label: str) -> None:
    if not method.needs_scores:
        return
    if score_names is None:
        raise CheckpointError(f"merge method {method.name!r} needs importance scores for the {side} patch; none given")
    missing = [n for n in patch_names if n not in score_names]
    if missing:
        raise CheckpointError(f"{label}: no scores for patched tensor(s) {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}")


def _finite_or_str(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else str(x)
