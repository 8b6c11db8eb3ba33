"""The merge-method extension point (like mergekit / peft): `register_merge`, `get_merge`, `known_merges`, the
per-tensor inputs, the settings every method shares, and the mask helpers the methods are built from.

A merge method is one registered object (`MergeMethod`): its name, its own settings model (a subclass of
`config.MergeSettings`, validated when params.yaml is loaded), a pure per-tensor function, and a label for sweep
tables. The built-in methods live one per file in `merging/methods/` (a new method = one new file there; the tests
parametrise over every registered method).
`get_merge(name)(t, cfg) -> θ'` (a `MergeMethod` is callable that way). `MergeMethod.apply(t, cfg)` also returns which entries of each patch were kept (for merge stats).
Everything is computed in float32 and returned in the base tensor's dtype; a tensor neither patch touches is
returned unchanged (the same object).

The streaming merge calls a method once per row block of a tensor (`t.rows`), so memory holds a block, not the
tensor. Masks that need the whole tensor (random retention, per-tensor top-k) are built once per tensor by
`t.whole.mask(key, make)` from whole inputs loaded one at a time (`t.whole.load`), kept as bool (1 byte per entry)
and cut to the block; everything else is elementwise, so a merge in row blocks is bit-identical to one in a piece.

Masks (SafePatching, Zhao et al. 2024, arXiv 2405.13820; see methods/safepatching.py), for patch deltas P_SE, P_OM and importance scores:
  R_X   = random_mask(shape, p, seed, name + "/se" | "/om")            random retention, Bernoulli(p)
  T_X   = top-a% (SE) / top-b% (OM) by score (ranking: global | per_tensor | per_row)
  sequential: T_X ranks only entries retained by R_X (k = pct of the tensor, capped at the retained count);
              M_SE = R_SE & (T_SE & ~T_OM), M_OM = R_OM & (T_OM & ~T_SE)     (difference=False: M_X = R_X & T_X)
  union:      T_X ranks every entry; M_SE = (R_SE | T_SE) & ~T_OM, M_OM = (R_OM | T_OM) & ~T_SE
              (difference=False: M_X = R_X | T_X). With p=1 union keeps everything outside the other's top set.
  rescale:    kept entries that R_X retained are multiplied by 1/p (DARE), others are not.
  θ' = θ + α·(M_SE ⊙ P_SE) + β·(M_OM ⊙ P_OM)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

from ..config import MergeSettings
from ..errors import CheckpointError, NonFiniteError
from ..registry import Registry
from .masks import layer_of, random_mask, topk_mask, where0

Keep = torch.Tensor | bool  # a bool mask, or True (every entry kept) / False (none)
SIDES = ("se", "om")


class Whole:
    """The whole tensor behind a TensorInputs, shared by its row blocks: its shape, its inputs loaded on demand
    (`load("s_se")`: the whole tensor or None; read-only, and valid only until the next load) and a cache of
    whole-tensor masks."""

    def __init__(self, shape: tuple[int, ...], load: Callable[[str], torch.Tensor | None]):
        self.shape, self.load = tuple(shape), load
        self._masks: dict[Hashable, Keep] = {}

    def mask(self, key: Hashable, make: Callable[[], Keep]) -> Keep:
        """make() on the first call with this key (include the cfg in it), then the cached whole-tensor mask."""
        if key not in self._masks:
            self._masks[key] = make()
        return self._masks[key]


@dataclass
class TensorInputs:
    """One tensor's merge inputs. p_*: patch deltas (None: that patch does not touch the tensor); s_*: importance
    scores (None for methods that need none); thr_*: global-ranking thresholds (None unless ranking='global').
    rows: the row block (dim 0) of the tensor the inputs hold, None for the whole tensor; whole: the whole tensor
    (default: these inputs themselves, so rows must be None). A row block carries no scores (s_* None): scores
    are only ranked, over the whole tensor, so methods read them with t.whole.load("s_se")."""

    name: str
    base: torch.Tensor
    p_se: torch.Tensor | None = None
    p_om: torch.Tensor | None = None
    s_se: torch.Tensor | None = None
    s_om: torch.Tensor | None = None
    thr_se: float | None = None
    thr_om: float | None = None
    rows: slice | None = None
    whole: Whole = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.whole is None:
            if self.rows is not None:
                raise ValueError(f"{self.name}: a row block needs its whole tensor (whole=)")
            inputs = {f: getattr(self, f) for f in ("base", "p_se", "p_om", "s_se", "s_om")}  # (no ref. cycle)
            self.whole = Whole(self.base.shape, inputs.get)

    def side(self, side: str) -> tuple[torch.Tensor | None, torch.Tensor | None, float | None]:
        return (self.p_se, self.s_se, self.thr_se) if side == "se" else (self.p_om, self.s_om, self.thr_om)

    def cut(self, keep: Keep) -> Keep:
        """A whole-tensor mask cut to these inputs' rows."""
        return keep if isinstance(keep, bool) or self.rows is None else keep[self.rows]


@dataclass(frozen=True)
class Merged:
    tensor: torch.Tensor
    keep_se: Keep
    keep_om: Keep


Impl = Callable[[TensorInputs, MergeSettings], Merged]


@dataclass(frozen=True)
class Prepass:
    """A method's whole-model pass before merging (global / per-layer ranking): the engine streams each side's
    importance scores once, as `ranked(name, scores, side)` returns them, and computes the score threshold of the
    top pct[side]% within each group of tensors (group None: one threshold for the whole model; else group(name)
    names a tensor's group, e.g. its layer). Each tensor's TensorInputs.thr_se / thr_om carry its threshold."""

    pct: Mapping[str, float]
    group: Callable[[str], str] | None
    ranked: Callable[[str, torch.Tensor, str], torch.Tensor]
    seed: int


def _no_prepass(cfg: MergeSettings) -> Prepass | None:
    return None


def _plain_label(cfg: MergeSettings) -> str:
    return cfg.method


@dataclass(frozen=True)
class MergeMethod:
    """One merge method: its name, its own settings model, its per-tensor function, whether it needs importance
    scores, the whole-model prepass a settings object needs (`prepass(cfg)`: a Prepass, or None for none), a short
    label for sweep tables and plots, and its default sweep space."""

    name: str
    impl: Impl
    settings: type[MergeSettings] = MergeSettings
    needs_scores: bool = False
    prepass: Callable[[MergeSettings], Prepass | None] = field(default=_no_prepass)
    label: Callable[[MergeSettings], str] = field(default=_plain_label)
    sweep: Mapping[str, Any] = field(default_factory=dict)  # its default sweep space (select.grid.<name>)

    def __call__(self, t: TensorInputs, cfg: MergeSettings) -> torch.Tensor:
        return self.apply(t, cfg).tensor

    def apply(self, t: TensorInputs, cfg: MergeSettings) -> Merged:
        """Validate the inputs (shapes, finiteness, scores present), merge, and refuse a non-finite result."""
        if t.p_se is None and t.p_om is None:
            return Merged(t.base, False, False)
        shape = tuple(t.base.shape)
        if not t.base.is_floating_point():
            raise CheckpointError(f"{t.name}: cannot patch a {t.base.dtype} tensor")
        for side in SIDES:
            p, s, _ = t.side(side)
            if p is None:
                continue
            for what, x in (("patch", p), ("scores", s)):
                if x is None:
                    continue
                if tuple(x.shape) != shape:
                    raise CheckpointError(f"{t.name}: {side} {what} shape {tuple(x.shape)} != base shape {shape}")
                if not all_finite(x):
                    raise NonFiniteError(f"{t.name}: {side} {what} has NaN/Inf values")
            if self.needs_scores and s is None and t.rows is None:  # a row block's scores come from t.whole
                raise CheckpointError(f"{t.name}: merge method {self.name!r} needs importance scores for the "
                                      f"{side} patch, none given")
        m = self.impl(t, cfg)
        if not all_finite(m.tensor):
            raise NonFiniteError(f"{t.name}: merge method {self.name!r} produced NaN/Inf")
        return m


def all_finite(x: torch.Tensor) -> bool:
    """No NaN/Inf in x. A float sum is NaN/Inf whenever an entry is, and is much cheaper than isfinite(x).all();
    the exact check runs only when the sum is not finite (it may overflow on huge finite values)."""
    if not x.is_floating_point():
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


_REGISTRY: Registry[MergeMethod] = Registry("merge method")


def register_merge(name: str, settings: type[MergeSettings] = MergeSettings, needs_scores: bool = False,
                   prepass: Callable[[MergeSettings], Prepass | None] = _no_prepass,
                   label: Callable[[MergeSettings], str] = _plain_label,
                   sweep: Mapping[str, Any] | None = None) -> Callable[[Impl], Impl]:
    """Decorator: register `impl(t, cfg) -> Merged` under `name` with its settings model (a duplicate name raises
    ValueError). `sweep`: the settings the selection sweeps by default, {setting: [values]} in sweep order (the
    settings it does not name stay at their defaults; a `select.grid.<name>` entry updates it key by key)."""
    def deco(impl: Impl) -> Impl:
        _REGISTRY.add(name, MergeMethod(name, impl, settings, needs_scores, prepass, label,
                                        dict(sweep or {})))
        return impl
    return deco


def get_merge(name: str) -> MergeMethod:
    from ..registry import discover

    return discover("merge method").get(name)


def known_merges() -> list[str]:
    from ..registry import discover

    return discover("merge method").names()


def label(cfg: MergeSettings) -> str:
    """The registered method's short label of a settings object (sweep tables, plots)."""
    return get_merge(cfg.method).label(cfg)


# ---------------------------------------------------------------- settings shared by several methods

class RetentionSettings(MergeSettings):
    """Random retention (DARE-style): keep each patch entry with probability p, optionally rescaled by 1/p."""

    p: float = Field(1.0, gt=0, le=1, description="random retention probability (Bernoulli); 1 keeps every entry")
    rescale: bool = Field(False, description="rescale kept random-retention entries by 1/p (DARE)")
    seed: int = Field(0, description="seed of the random-retention masks (with each tensor's name)")


class RankedSettings(RetentionSettings):
    """Top-a% / top-b% importance sets of the SE / OM patch, by SNIP score (the paper's full method: p < 1, a and
    b < 100 p)."""

    p: float = Field(0.5, gt=0, le=1, description="random retention probability (Bernoulli); 1 keeps every entry")
    a: float = Field(20.0, ge=0, le=100, description="top-a% most important of the SE patch")
    b: float = Field(5.0, ge=0, le=100, description="top-b% most important of the OM patch")
    ranking: Literal["global", "per_layer", "per_tensor", "per_row"] = Field(
        "global", description="where scores are ranked: across the model, within each layer, tensor or row")


def ranking_prepass(ranks_retained: Callable[[RankedSettings], bool]) -> Callable[[RankedSettings], Prepass | None]:
    """The prepass of a method ranking by RankedSettings: with ranking global or per_layer, the thresholds of the
    top-a% (SE) / top-b% (OM) scores across the model or within each layer; `ranks_retained(cfg)`: whether it ranks
    only the entries random retention kept (the others rank as -inf)."""
    def prepass(cfg: RankedSettings) -> Prepass | None:
        if cfg.ranking not in ("global", "per_layer"):
            return None
        retained = ranks_retained(cfg) and cfg.p < 1

        def ranked(name: str, scores: torch.Tensor, side: str) -> torch.Tensor:
            if not retained:
                return scores
            return scores.float().masked_fill(~random_mask(scores.shape, cfg.p, cfg.seed, f"{name}/{side}"),
                                              float("-inf"))

        return Prepass({"se": cfg.a, "om": cfg.b}, None if cfg.ranking == "global" else layer_of, ranked, cfg.seed)
    return prepass


# ---------------------------------------------------------------- helpers on Keep (bool | tensor)

def keep_and(a: Keep, b: Keep) -> Keep:
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return a & b


def keep_or(a: Keep, b: Keep) -> Keep:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    return a | b


def keep_not(a: Keep) -> Keep:
    return (not a) if isinstance(a, bool) else ~a


def whole_retention(t: TensorInputs, cfg: RetentionSettings, side: str) -> Keep:
    """R_X over the whole tensor (built once per tensor)."""
    if cfg.p >= 1:
        return True
    return t.whole.mask(("R", side, cfg), lambda: random_mask(t.whole.shape, cfg.p, cfg.seed, f"{t.name}/{side}"))


def retention(t: TensorInputs, cfg: RetentionSettings, side: str) -> Keep:
    return t.cut(whole_retention(t, cfg, side))


def important(t: TensorInputs, cfg: RankedSettings, side: str, retained_only: bool) -> Keep:
    """T_X: top-a% (se) / top-b% (om) entries by score over the whole tensor; with retained_only, among R-retained
    entries only (then T_X ⊆ R_X)."""
    p, _, thr = t.side(side)
    pct = cfg.a if side == "se" else cfg.b
    if p is None or pct <= 0:
        return False
    if pct >= 100:
        return retention(t, cfg, side) if retained_only else True

    def make() -> torch.Tensor:
        r = whole_retention(t, cfg, side) if retained_only else True
        return topk_mask(t.whole.load(f"s_{side}").float(), pct, cfg.ranking, thr, among=None if r is True else r)

    return t.cut(t.whole.mask(("T", side, retained_only, cfg), make))


def masked_delta(p: torch.Tensor | None, keep: Keep, r: Keep, cfg: RetentionSettings) -> torch.Tensor | None:
    """keep ⊙ P; with cfg.rescale (and p < 1) the entries inside r are multiplied by 1/p. r=True: every kept
    entry was retained by random retention (sequential), so all of them are rescaled."""
    if p is None or keep is False:
        return None
    p = p.float()
    d = p if keep is True else where0(keep, p)
    if cfg.rescale and cfg.p < 1 and r is not False:
        if r is not True:
            d = torch.where(r, d * (1.0 / cfg.p), d)
        elif d is p:
            d = d * (1.0 / cfg.p)
        else:
            d.mul_(1.0 / cfg.p)
    return d


def combine(base: torch.Tensor, terms: Iterable[tuple[float, Callable[[], torch.Tensor | None]]]) -> torch.Tensor:
    """θ + Σ coef·delta in float32, returned in base's dtype. Each delta is built only when its coef is non-zero and
    freed before the next is built (keeps one delta in memory)."""
    out = base.to(torch.float32, copy=True)
    for coef, make in terms:
        if coef != 0:
            d = make()
            if d is not None:
                out.add_(d, alpha=coef)
            del d
    return out.to(base.dtype)


def given(x: torch.Tensor | None) -> Callable[[], torch.Tensor | None]:
    return lambda: x


def masked_merge(t: TensorInputs, cfg: MergeSettings, keep_se: Keep, keep_om: Keep, r_se: Keep = True,
                  r_om: Keep = True) -> Merged:
    """θ + α·(keep_se ⊙ P_SE) + β·(keep_om ⊙ P_OM); r_*: where rescaling applies (see _masked_delta)."""
    out = combine(t.base, [(cfg.alpha, lambda: masked_delta(t.p_se, keep_se, r_se, cfg)),
                           (cfg.beta, lambda: masked_delta(t.p_om, keep_om, r_om, cfg))])
    return Merged(out, keep_se if t.p_se is not None else False, keep_om if t.p_om is not None else False)
