"""Pure mask functions for SafePatching: random retention, top-k importance masks, difference sets.

All masks are bool tensors of the scored tensor's shape. Counts use `keep_count(pct, n) = round(pct/100*n)`
(Python's round), so per-tensor and per-row densities are exact; global ranking keeps every score >= one
threshold shared by all tensors (ties may keep a few more).

Whole-tensor masks are computed in blocks of BLOCK entries (cache-sized, no full-size float temporaries): the
random draws are those of one torch.rand call, and the top-k threshold is the exact order statistic, so a mask is
the same whatever the blocking.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch

from ..errors import ConfigError

EXACT_MAX = 50_000_000  # global_threshold: exact kthvalue up to this many scores...
SAMPLE_SIZE = 10_000_000  # ...else on a deterministic ~uniform random subsample of about this many
RANKINGS = ("global", "per_tensor", "per_row")
BLOCK = 1 << 18  # whole-tensor masks are computed in blocks of this many entries (cache-sized, no big temporaries)


def name_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed from (seed, name), stable across processes (sha256, not hash())."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "little") >> 1


def random_mask(shape: torch.Size | tuple[int, ...], p: float, seed: int, name: str) -> torch.Tensor:
    """Bernoulli(p) keep-mask, deterministic in (seed, name); p=1 keeps everything."""
    if not 0 < p <= 1:
        raise ConfigError(f"random_mask: p must be in (0, 1], got {p}")
    if p >= 1:
        return torch.ones(shape, dtype=torch.bool)
    return _uniform_below(math.prod(shape), p, torch.Generator().manual_seed(name_seed(seed, name))).reshape(shape)


def _uniform_below(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """torch.rand(n, generator=g) < p, drawn block by block (the CPU generator fills a tensor serially, so the
    draws and the mask are the same as in one call)."""
    out = torch.empty(n, dtype=torch.bool)
    buf = torch.empty(min(n, BLOCK))
    for i in range(0, n, BLOCK):
        u = torch.rand(min(BLOCK, n - i), generator=g, out=buf[:min(BLOCK, n - i)])
        out[i:i + BLOCK].copy_(torch.lt(u, p, out=u))  # see _cmp
    return out


def keep_count(pct: float, n: int) -> int:
    """round(pct/100*n), clipped to [0, n]."""
    return min(n, max(0, round(pct / 100 * n)))


def _count(mask: torch.Tensor) -> int:
    return int(torch.count_nonzero(mask))


def _cmp(op: Callable[..., torch.Tensor], x: torch.Tensor, v: float, buf: torch.Tensor) -> torch.Tensor:
    """op(x, v) (torch.gt, torch.ge, ...) as a bool tensor, via a 0/1 float result in buf (at least x.numel()
    entries): on CPU a comparison writing floats and a float->bool cast take about half the time of one writing
    bools."""
    return op(x, v, out=buf[:x.numel()].view(x.shape)).bool()


def _and_among(mask: torch.Tensor, among: torch.Tensor | None) -> torch.Tensor:
    return mask if among is None else mask.logical_and_(among)


def _blocks(flat: torch.Tensor, among: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(block of flat, block of among) pairs, BLOCK entries each."""
    for i in range(0, flat.numel(), BLOCK):
        yield flat[i:i + BLOCK], None if among is None else among[i:i + BLOCK]


def _kth(flat: torch.Tensor, k: int, among: torch.Tensor | None = None) -> tuple[float, int]:
    """(the exact k-th largest value v of flat's entries where among is True (all if None), how many of those
    entries are >= v). 1 <= k <= that number of entries.

    Large tensors first bracket v between two order statistics of a fixed random sample and run the exact selection
    only on the band between them (falls back to a full kthvalue if the bracket misses)."""
    n = flat.numel() if among is None else _count(among)
    if not 1 <= k <= n:
        raise ValueError(f"kth_largest: k={k} outside [1, {n}]")
    if n <= 1 << 18:
        vals = flat if among is None else flat[among]
        v = vals.kthvalue(n - k + 1).values.item()
        return v, _count(vals >= v)
    m = min(1 << 16, flat.numel() >> 6)  # sample size: two kthvalues on it vs. a wider band to select from
    idx = torch.randint(flat.numel(), (m,), generator=torch.Generator().manual_seed(flat.numel()))
    sample = flat[idx] if among is None else flat[idx[among[idx]]]
    m, q = sample.numel(), k / n
    margin = int(6 * math.sqrt(m * q * (1 - q))) + 64
    ks_hi, ks_lo = max(1, round(q * m) - margin), round(q * m) + margin
    hi = sample.kthvalue(m - ks_hi + 1).values.item() if ks_hi > 1 else math.inf
    lo = sample.kthvalue(m - ks_lo + 1).values.item() if ks_lo <= m else -math.inf
    above, bands, buf = 0, [], torch.empty(min(flat.numel(), BLOCK))
    for x, a in _blocks(flat, among):
        gt = _and_among(_cmp(torch.gt, x, hi, buf), a)
        above += _count(gt)
        bands.append(x[_and_among(gt.logical_not_().logical_and_(_cmp(torch.ge, x, lo, buf)), a)])
    band = torch.cat(bands)
    need = k - above
    if 1 <= need <= band.numel():
        v = band.kthvalue(band.numel() - need + 1).values.item()
        return v, above + _count(band >= v)
    vals = flat if among is None else flat[among]
    v = vals.kthvalue(n - k + 1).values.item()
    return v, _count(vals >= v)


def kth_largest(flat: torch.Tensor, k: int) -> float:
    """The exact k-th largest value of a 1-D tensor (1 <= k <= numel)."""
    return _kth(flat, k)[0]


def _drop_last_ties(mask: torch.Tensor, flat: torch.Tensor, thr: float, drop: int) -> None:
    """In place: unset the last `drop` entries of mask where flat == thr (ties at the threshold keep the lowest
    indices); scans blocks from the end, so it usually touches only the last one."""
    for start in reversed(range(0, flat.numel(), BLOCK)):
        m = mask[start:start + BLOCK]
        idx = (m & (flat[start:start + BLOCK] == thr)).nonzero().squeeze(1)
        m[idx[max(0, idx.numel() - drop):]] = False
        drop -= idx.numel()
        if drop <= 0:
            return


def _top_flat(flat: torch.Tensor, k: int, among: torch.Tensor | None = None) -> torch.Tensor:
    """Mask of exactly k largest entries of a 1-D tensor (among: of the entries where among is True; all of them
    when there are at most k); ties at the threshold go to the lowest indices."""
    n = flat.numel() if among is None else _count(among)
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(flat, dtype=torch.bool) if among is None else among.clone()
    thr, n_ge = _kth(flat, k, among)
    mask, buf = torch.empty_like(flat, dtype=torch.bool), torch.empty(min(flat.numel(), BLOCK))
    for (x, a), m in zip(_blocks(flat, among), mask.split(BLOCK)):
        _and_among(m.copy_(torch.ge(x, thr, out=buf[:x.numel()])), a)  # as _cmp, straight into the mask
    if n_ge > k:
        _drop_last_ties(mask, flat, thr, n_ge - k)
    return mask


def topk_mask(scores: torch.Tensor, pct: float, ranking: str, threshold: float | None = None,
              among: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the top pct% of `scores`.

    global: keep scores >= threshold (from `global_threshold`; ties may keep slightly more).
    per_tensor: exactly keep_count(pct, numel) entries of the tensor.
    per_row: exactly keep_count(pct, cols) entries in each output row (dim 0; 1-D tensors are one row).
    among (a bool mask of scores' shape): rank only the entries where it is True, as if the others scored -inf, and
    keep only those (the counts stay pct% of all entries, capped at the number of entries among).
    """
    if ranking not in RANKINGS:
        raise ConfigError(f"topk_mask: ranking must be one of {RANKINGS}, got {ranking!r}")
    if pct <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if pct >= 100:
        return torch.ones_like(scores, dtype=torch.bool) if among is None else among.clone()
    if ranking == "global":
        if threshold is None:
            raise ConfigError("topk_mask: ranking='global' needs a threshold (see global_threshold)")
        return _and_among(scores >= threshold, among)
    if ranking == "per_row" and scores.dim() >= 2:
        if among is not None:
            scores = scores.masked_fill(~among, float("-inf"))
        rows = scores.reshape(scores.shape[0], -1)
        k = keep_count(pct, rows.shape[1])
        mask = torch.zeros_like(rows, dtype=torch.bool)
        if k:
            mask.scatter_(1, rows.topk(k, dim=1, sorted=False).indices, True)
        return _and_among(mask.reshape(scores.shape), among)
    flat_among = None if among is None else among.reshape(-1)
    return _top_flat(scores.reshape(-1), keep_count(pct, scores.numel()), flat_among).reshape(scores.shape)


def where0(keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """torch.where(keep, x, 0.0) for a float32 x, bit for bit, as an integer AND with keep's 0 / all-ones words
    (torch.where with a bool mask runs ~10x slower on CPU)."""
    if x.dtype != torch.float32:
        return torch.where(keep, x, 0.0)
    return (x.view(torch.int32) & keep.to(torch.int32).neg_()).view(torch.float32)


def global_threshold(scores: Iterable[tuple[str, torch.Tensor]], pct: float, total: int | None = None,
                     seed: int = 0) -> float:
    """The score threshold keeping the top pct% of all (name, scores) tensors together.

    total (the number of scores, from file headers) lets the scores stream; without it they are collected first.
    Up to EXACT_MAX scores: the exact k-th largest (k = keep_count(pct, total)). Above: the same order statistic of
    a sample drawn per tensor with probability SAMPLE_SIZE/total from a generator seeded by (seed, name), so the
    result does not depend on the order of the tensors; its density is then pct% only up to sampling error.
    Returns +inf for pct <= 0 and -inf for pct >= 100."""
    if pct <= 0:
        return math.inf
    if pct >= 100:
        return -math.inf
    if total is None:
        scores = list(scores)
        total = sum(s.numel() for _, s in scores)
    if total == 0:
        return math.inf
    if total <= EXACT_MAX:
        buf = torch.empty(total, dtype=torch.float32)
        off = 0
        for _, s in scores:
            buf[off:off + s.numel()] = s.reshape(-1)
            off += s.numel()
        if off != total:
            raise ValueError(f"global_threshold: got {off} scores, expected total={total}")
        return kth_largest(buf, max(1, keep_count(pct, total)))
    rate = SAMPLE_SIZE / total
    parts = []
    for name, s in scores:
        g = torch.Generator().manual_seed(name_seed(seed, "threshold-sample/" + name))
        flat = s.reshape(-1)
        parts.append(flat[_uniform_below(flat.numel(), rate, g)].float())
    sample = torch.cat(parts)
    return kth_largest(sample, max(1, keep_count(pct, sample.numel())))


def difference_sets(t_se: torch.Tensor, t_om: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_SE minus T_OM, T_OM minus T_SE): the entries important to one patch only."""
    return t_se & ~t_om, t_om & ~t_se
