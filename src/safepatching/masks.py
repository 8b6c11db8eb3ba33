"""Pure mask functions for SafePatching: random retention, top-k importance masks, difference sets.

All masks are bool tensors of the scored tensor's shape. Counts use `keep_count(pct, n) = round(pct/100*n)`
(Python's round), so per-tensor and per-row densities are exact; global ranking keeps every score >= one
threshold shared by all tensors (ties may keep a few more).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import torch

from .errors import ConfigError

EXACT_MAX = 50_000_000  # global_threshold: exact kthvalue up to this many scores...
SAMPLE_SIZE = 10_000_000  # ...else on a deterministic ~uniform random subsample of about this many
RANKINGS = ("global", "per_tensor", "per_row")
RAND_BLOCK = 1 << 16  # uniforms are drawn in blocks of this many into a reused buffer (no full-size float temporary)


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
    buf = torch.empty(min(n, RAND_BLOCK))
    for i in range(0, n, RAND_BLOCK):
        u = torch.rand(min(RAND_BLOCK, n - i), generator=g, out=buf[:min(RAND_BLOCK, n - i)])
        torch.lt(u, p, out=out[i:i + RAND_BLOCK])
    return out


def keep_count(pct: float, n: int) -> int:
    """round(pct/100*n), clipped to [0, n]."""
    return min(n, max(0, round(pct / 100 * n)))


def kth_largest(flat: torch.Tensor, k: int) -> float:
    """The exact k-th largest value of a 1-D tensor (1 <= k <= numel).

    Large tensors first bracket the answer between two order statistics of a fixed random sample and run the exact
    selection only on the band between them (falls back to a full kthvalue if the bracket misses)."""
    n = flat.numel()
    if not 1 <= k <= n:
        raise ValueError(f"kth_largest: k={k} outside [1, {n}]")
    if n <= 1 << 18:
        return flat.kthvalue(n - k + 1).values.item()
    m = 1 << 16
    idx = torch.randint(n, (m,), generator=torch.Generator().manual_seed(n))
    sample = flat[idx]
    q = k / n
    margin = int(6 * math.sqrt(m * q * (1 - q))) + 64
    ks_hi, ks_lo = max(1, round(q * m) - margin), round(q * m) + margin
    hi = sample.kthvalue(m - ks_hi + 1).values if ks_hi > 1 else None
    lo = sample.kthvalue(m - ks_lo + 1).values if ks_lo <= m else None
    above = int(torch.count_nonzero(flat > hi)) if hi is not None else 0
    band_mask = flat <= hi if hi is not None else torch.ones_like(flat, dtype=torch.bool)
    if lo is not None:
        band_mask &= flat >= lo
    band = flat[band_mask]
    need = k - above
    if 1 <= need <= band.numel():
        return band.kthvalue(band.numel() - need + 1).values.item()
    return flat.kthvalue(n - k + 1).values.item()


def _keep_first(mask: torch.Tensor, m: int, block: int = 1 << 20) -> None:
    """In place: keep only the first m True entries of a flat bool tensor (block-wise: no full-size cumsum)."""
    seen = 0
    for start in range(0, mask.numel(), block):
        blk = mask[start:start + block]
        c = int(torch.count_nonzero(blk))
        if seen + c > m:
            blk &= blk.cumsum(0, dtype=torch.int32) <= m - seen
            mask[start + block:] = False
            return
        seen += c


def _top_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly k largest entries of a 1-D tensor; ties at the threshold go to the lowest indices."""
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    if k >= flat.numel():
        return torch.ones_like(flat, dtype=torch.bool)
    thr = kth_largest(flat, k)
    mask = flat >= thr
    if int(torch.count_nonzero(mask)) > k:  # ties at thr: keep only the first of them
        ties = flat == thr
        mask ^= ties
        _keep_first(ties, k - int(torch.count_nonzero(mask)))
        mask |= ties
    return mask


def topk_mask(scores: torch.Tensor, pct: float, ranking: str, threshold: float | None = None) -> torch.Tensor:
    """Keep the top pct% of `scores`.

    global: keep scores >= threshold (from `global_threshold`; ties may keep slightly more).
    per_tensor: exactly keep_count(pct, numel) entries of the tensor.
    per_row: exactly keep_count(pct, cols) entries in each output row (dim 0; 1-D tensors are one row).
    """
    if ranking not in RANKINGS:
        raise ConfigError(f"topk_mask: ranking must be one of {RANKINGS}, got {ranking!r}")
    if pct <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if pct >= 100:
        return torch.ones_like(scores, dtype=torch.bool)
    if ranking == "global":
        if threshold is None:
            raise ConfigError("topk_mask: ranking='global' needs a threshold (see global_threshold)")
        return scores >= threshold
    if ranking == "per_row" and scores.dim() >= 2:
        rows = scores.reshape(scores.shape[0], -1)
        k = keep_count(pct, rows.shape[1])
        mask = torch.zeros_like(rows, dtype=torch.bool)
        if k:
            mask.scatter_(1, rows.topk(k, dim=1, sorted=False).indices, True)
        return mask.reshape(scores.shape)
    return _top_flat(scores.reshape(-1), keep_count(pct, scores.numel())).reshape(scores.shape)


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
