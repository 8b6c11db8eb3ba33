"""Pure mask functions for SafePatching: random retention, top-k importance masks, difference sets.

All masks are bool tensors of the scored tensor's shape. Counts use `keep_count(pct, n) = round(pct/100*n)`
(Python's round), so per-tensor and per-row densities are exact; global ranking keeps every score >= one
threshold shared by all tensors (ties may keep a few more).

Random retention is a counter-based generator: entry i of the (seed, name) stream is kept iff a keyed 32-bit hash of
i is below p * 2^32 (`bernoulli_flat`), so a mask is a pure function of (shape, p, seed, name), any block of it can be
computed alone, and it costs a few vectorised integer passes per entry (MASK_VERSION 2; version 1 drew from
torch's mt19937 serially). Whole-tensor masks are computed in blocks (cache-sized, no full-size float
temporaries), and the top-k threshold is the exact order statistic, so a mask is the same whatever the blocking.
"""

from __future__ import annotations

import re

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import torch

from ..errors import ConfigError

SAMPLE_MAX = 1 << 16  # _bracket's sample size cap
EXACT_MAX = 50_000_000  # global_threshold: exact kthvalue up to this many scores...
SAMPLE_SIZE = 10_000_000  # ...else on a deterministic ~uniform random subsample of about this many
RANKINGS = ("global", "per_layer", "per_tensor", "per_row")


def layer_of(name: str) -> str:
    """The layer group of a tensor name: L00, L01, ... for `layers.<i>.`, else embed, head or other (per_layer
    ranking and the diagnosis group by it)."""
    m = re.search(r"layers\.(\d+)\.", name)
    if m:
        return f"L{int(m.group(1)):02d}"
    if "embed" in name:
        return "embed"
    if "lm_head" in name:
        return "head"
    return "other"
BLOCK = 1 << 18  # whole-tensor masks are computed in blocks of this many entries (cache-sized, no big temporaries)
HASH_BLOCK = 1 << 16  # random masks: entries per block of uint32 hashing (fastest on these CPUs: L2-resident)
CHUNK_BITS = 32  # the random stream's counter is the index within a chunk of 2^CHUNK_BITS entries (keys per chunk)
# Version of the random-mask generator, recorded in each merge manifest so masks of different generators are
# never mixed silently. 1: torch.rand (mt19937) seeded by name_seed(seed, name), drawn serially;
# 2: counter-based hash of (seed, name, element index) (bernoulli_flat), ~3.5x faster and blocking-independent.
MASK_VERSION = 2
WEYL = 0x9E3779B9  # 2^32 / golden ratio, odd: i -> i * WEYL mod 2^32 spreads consecutive indices over all 32 bits


def name_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed from (seed, name), stable across processes (sha256, not hash())."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "little") >> 1


def stream_keys(seed: int, name: str, chunk: int = 0) -> tuple[int, int]:
    """The two 32-bit keys of the (seed, name) stream for elements chunk*2^CHUNK_BITS ... (sha256, stable across
    processes and platforms)."""
    d = hashlib.sha256(f"mask-v{MASK_VERSION}\0{seed}\0{name}\0{chunk}".encode()).digest()
    return int.from_bytes(d[:4], "little"), int.from_bytes(d[4:8], "little")


def hash32(i: int, k1: int, k2: int) -> int:
    """The generator on one element, in plain Python (the reference the blocked numpy code follows): C. Wellons'
    lowbias32 (two xorshift-multiply rounds) of a Weyl step of the element's index within its chunk (i * golden
    ratio + k1), keyed again by an xor between the rounds, without lowbias32's final xorshift (h ^= h >> 16 leaves
    the top 16 bits, which decide h < threshold, unchanged; dropping it saves two of eleven passes). The Weyl step
    matters: lowbias32 of i + k1 leaves the kept counts of long runs of consecutive indices under-dispersed (z-score
    std 0.71 over 16M-entry runs)."""
    m = 0xFFFFFFFF
    h = (i * WEYL + k1) & m
    h ^= h >> 16
    h = (h * 0x7FEB352D) & m
    h ^= k2
    h ^= h >> 15
    return (h * 0x846CA68B) & m


def bernoulli_threshold(p: float) -> int:
    """Element i is kept iff its hash32 < this: P(keep) = round(p * 2^32) / 2^32 (|error| <= 2^-33), clipped to
    [0, 2^32 - 1]."""
    return min(0xFFFFFFFF, max(0, round(p * 2.0 ** 32)))


def _hash_below(start: int, out: np.ndarray, thr: int, seed: int, name: str, keys: dict[int, tuple[int, int]],
                work: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """out[j] = hash32 of element start + j < thr, for one block (at most HASH_BLOCK entries); splits the block
    where it crosses a chunk boundary. keys caches stream_keys per chunk; work: arange * WEYL (mod 2^32) and two
    uint32 buffers."""
    ar, h, t = work
    n, j = out.size, 0
    while j < n:
        i = start + j
        chunk, lo = i >> CHUNK_BITS, i & ((1 << CHUNK_BITS) - 1)
        m = min(n - j, (1 << CHUNK_BITS) - lo)
        if chunk not in keys:
            keys[chunk] = stream_keys(seed, name, chunk)
        k1, k2 = keys[chunk]
        hb, tb = h[:m], t[:m]
        np.add(ar[:m], np.uint32((lo * WEYL + k1) & 0xFFFFFFFF), out=hb)  # uint32 arithmetic wraps mod 2^32
        np.right_shift(hb, 16, out=tb)
        hb ^= tb
        hb *= np.uint32(0x7FEB352D)
        hb ^= np.uint32(k2)
        np.right_shift(hb, 15, out=tb)
        hb ^= tb
        hb *= np.uint32(0x846CA68B)
        np.less(hb, np.uint32(thr), out=out[j:j + m])
        j += m


def bernoulli_flat(n: int, p: float, seed: int, name: str, start: int = 0) -> torch.Tensor:
    """Entries start ... start+n-1 of the (seed, name) Bernoulli(p) stream as a 1-D bool tensor: entry i is
    hash32(i mod 2^CHUNK_BITS, *stream_keys(seed, name, i >> CHUNK_BITS)) < bernoulli_threshold(p). A pure function
    of (i, p, seed, name), so any slice of the stream is the same whatever the blocking; computed in blocks of
    HASH_BLOCK entries with uint32 numpy ops (9 vectorised passes over a cache-resident block)."""
    out = torch.empty(n, dtype=torch.bool)
    o = out.numpy()
    thr = bernoulli_threshold(p)
    b = min(n, HASH_BLOCK)
    work = (np.arange(b, dtype=np.uint32) * np.uint32(WEYL), np.empty(b, np.uint32), np.empty(b, np.uint32))
    keys: dict[int, tuple[int, int]] = {}
    for j in range(0, n, HASH_BLOCK):
        _hash_below(start + j, o[j:j + HASH_BLOCK], thr, seed, name, keys, work)
    return out


def random_mask(shape: torch.Size | tuple[int, ...], p: float, seed: int, name: str) -> torch.Tensor:
    """Bernoulli(p) keep-mask, a pure function of (shape, p, seed, name) (see bernoulli_flat; entries in row-major
    order); p=1 keeps everything."""
    if not 0 < p <= 1:
        raise ConfigError(f"random_mask: p must be in (0, 1], got {p}")
    if p >= 1:
        return torch.ones(shape, dtype=torch.bool)
    return bernoulli_flat(math.prod(shape), p, seed, name).reshape(shape)


def keep_count(pct: float, n: int) -> int:
    """round(pct/100*n), clipped to [0, n]."""
    return min(n, max(0, round(pct / 100 * n)))


def _np(x: torch.Tensor) -> np.ndarray:
    """A flat numpy view of a CPU tensor (a copy if not contiguous; float16 / bfloat16 are upcast to float32, which
    keeps every order and tie). The blocked mask loops run in numpy: its comparisons into bool arrays, bool counts
    and flatnonzero are several times faster than torch's on CPU."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x.detach().reshape(-1).contiguous().numpy()


def _count(mask: torch.Tensor | np.ndarray) -> int:
    return int(np.count_nonzero(_np(mask) if isinstance(mask, torch.Tensor) else mask))


def _kth_np(vals: np.ndarray, k: int) -> float:
    """The exact k-th largest of vals (1 <= k <= size)."""
    return float(np.partition(vals, vals.size - k)[vals.size - k])


def _bracket(x: np.ndarray, k: int, n: int, among: np.ndarray | None) -> tuple[float, float]:
    """(lo, hi): two order statistics of a fixed random sample of x's entries (among) that very probably bracket
    the k-th largest of the n entries (hi >= it >= lo; inf / -inf when the sample has no such statistic). Only
    speed depends on the sample: callers check the bracket and fall back to an exact selection."""
    m = min(SAMPLE_MAX, x.size >> 6)  # sample size: two selections on it vs. a wider band to select from
    step = x.size // m  # stratified: one random entry of each of m consecutive strata, read in increasing order
    # (a cache-friendly scan; iid random indices cost a cache miss each, ~0.35 ns per entry of a 1-3M tensor)
    idx = np.arange(m) * step + torch.randint(step, (m,), generator=torch.Generator().manual_seed(x.size)).numpy()
    sample = x[idx] if among is None else x[idx[among[idx]]]
    m, q = sample.size, k / n
    margin = int(6 * math.sqrt(m * q * (1 - q))) + 64
    ks_hi, ks_lo = max(1, round(q * m) - margin), round(q * m) + margin
    hi = _kth_np(sample, ks_hi) if ks_hi > 1 else math.inf
    lo = _kth_np(sample, ks_lo) if ks_lo <= m else -math.inf
    return lo, hi


def _band_pass(x: np.ndarray, lo: float, hi: float, among: np.ndarray | None,
               out: np.ndarray | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """One pass over x (among only) in blocks of BLOCK entries: (how many entries are > hi, the indices and values
    of the band entries lo <= x <= hi, in index order). out (bool, x's size), if given, receives x > hi (& among)."""
    n = x.size
    gt_buf, band = np.empty(min(n, BLOCK), bool), np.empty(min(n, BLOCK), bool)
    lo_, hi_ = x.dtype.type(lo), x.dtype.type(hi)  # exact: lo / hi are values of x's dtype (or +-inf)
    above, idx, vals = 0, [], []
    for s in range(0, n, BLOCK):
        xb = x[s:s + BLOCK]
        g, b = (gt_buf if out is None else out[s:s + BLOCK])[:xb.size], band[:xb.size]
        np.greater(xb, hi_, out=g)
        np.greater_equal(xb, lo_, out=b)
        if among is not None:
            np.logical_and(g, among[s:s + BLOCK], out=g)
            np.logical_and(b, among[s:s + BLOCK], out=b)
        above += int(np.count_nonzero(g))
        np.logical_xor(b, g, out=b)  # g is a subset of b
        i = np.flatnonzero(b)
        idx.append(i + s)
        vals.append(xb[i])
    return above, np.concatenate(idx), np.concatenate(vals)


def _kth(flat: torch.Tensor, k: int, among: torch.Tensor | None = None) -> tuple[float, int]:
    """(the exact k-th largest value v of flat's entries where among is True (all if None), how many of those
    entries are >= v). 1 <= k <= that number of entries.

    Large tensors first bracket v between two order statistics of a fixed random sample and run the exact selection
    only on the band between them (falls back to a full selection if the bracket misses)."""
    x, a = _np(flat), None if among is None else _np(among)
    n = x.size if a is None else _count(a)
    if not 1 <= k <= n:
        raise ValueError(f"kth_largest: k={k} outside [1, {n}]")
    if n > 1 << 18:
        lo, hi = _bracket(x, k, n, a)
        above, _, band = _band_pass(x, lo, hi, a)
        need = k - above
        if 1 <= need <= band.size:
            v = _kth_np(band, need)
            return v, above + _count(band >= band.dtype.type(v))
    vals = x if a is None else x[a]
    v = _kth_np(vals, k)
    return v, _count(vals >= vals.dtype.type(v))


def kth_largest(flat: torch.Tensor, k: int) -> float:
    """The exact k-th largest value of a 1-D tensor (1 <= k <= numel)."""
    return _kth(flat, k)[0]


def _ge_mask(flat: torch.Tensor, thr: float, among: torch.Tensor | None, out: np.ndarray) -> None:
    """out = flat >= thr (& among), in blocks."""
    if flat.dtype in (torch.float16, torch.bfloat16):  # compared as torch does: thr rounded to the tensor's dtype
        thr = torch.tensor(thr, dtype=flat.dtype).item()
    x, a = _np(flat), None if among is None else _np(among)
    t = x.dtype.type(thr)  # rounded to x's dtype, as torch compares a tensor with a Python float
    for s in range(0, x.size, BLOCK):
        o = out[s:s + BLOCK]
        np.greater_equal(x[s:s + BLOCK], t, out=o)
        if a is not None:
            np.logical_and(o, a[s:s + BLOCK], out=o)


def _drop_last_ties(mask: np.ndarray, x: np.ndarray, thr: float, drop: int) -> None:
    """In place: unset the last `drop` entries of mask where x == thr (ties at the threshold keep the lowest
    indices); scans blocks from the end, so it usually touches only the last one."""
    for start in reversed(range(0, x.size, BLOCK)):
        m = mask[start:start + BLOCK]
        idx = np.flatnonzero(m & (x[start:start + BLOCK] == x.dtype.type(thr)))
        m[idx[max(0, idx.size - drop):]] = False
        drop -= idx.size
        if drop <= 0:
            return


def _top_flat(flat: torch.Tensor, k: int, among: torch.Tensor | None = None) -> torch.Tensor:
    """Mask of exactly k largest entries of a 1-D tensor (among: of the entries where among is True; all of them
    when there are at most k); ties at the threshold go to the lowest indices.

    Large tensors take one pass over the scores: with (lo, hi) from `_bracket`, each block writes its entries > hi
    straight into the mask and keeps the indices and values of its band entries (lo <= x <= hi); the exact
    threshold v is then selected among the band alone, and the band entries > v and the first ties == v are set.
    If the bracket misses (rare), an exact selection over the whole tensor and a second pass run instead."""
    x, a = _np(flat), None if among is None else _np(among)
    n = x.size if a is None else _count(a)
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(flat, dtype=torch.bool) if among is None else among.clone()
    mask = torch.empty(flat.shape, dtype=torch.bool)  # contiguous, so o is a view of it
    o = mask.numpy()
    if x.size > 1 << 18:
        lo, hi = _bracket(x, k, n, a)
        above, idx, vals = _band_pass(x, lo, hi, a, out=o)
        need = k - above
        if 1 <= need <= vals.size:
            v = vals.dtype.type(_kth_np(vals, need))
            gt = vals > v
            o[idx[gt]] = True
            o[idx[vals == v][:need - _count(gt)]] = True  # ties: every entry == v is in the band, in index order
            return mask
    thr, n_ge = _kth(flat, k, among)
    _ge_mask(flat, thr, among, o)
    if n_ge > k:
        _drop_last_ties(o, x, thr, n_ge - k)
    return mask


def topk_mask(scores: torch.Tensor, pct: float, ranking: str, threshold: float | None = None,
              among: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the top pct% of `scores`.

    global / per_layer: keep scores >= threshold (from `global_threshold` over the whole model / over the tensor's
    layer group; ties may keep slightly more).
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
    if ranking in ("global", "per_layer"):
        if threshold is None:
            raise ConfigError(f"topk_mask: ranking={ranking!r} needs a threshold (see global_threshold)")
        mask = torch.empty(scores.shape, dtype=torch.bool)  # contiguous, so its flat numpy view is a view
        _ge_mask(scores, threshold, among, mask.numpy().reshape(-1))
        return mask
    if ranking == "per_row" and scores.dim() >= 2:
        if among is not None:
            scores = scores.masked_fill(~among, float("-inf"))
        rows = scores.reshape(scores.shape[0], -1)
        k = keep_count(pct, rows.shape[1])
        mask = torch.zeros_like(rows, dtype=torch.bool)
        if k:
            mask.scatter_(1, rows.topk(k, dim=1, sorted=False).indices, True)
        mask = mask.reshape(scores.shape)
        return mask if among is None else mask.logical_and_(among)
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
    a sample drawn per tensor with probability SAMPLE_SIZE/total from the (seed, "threshold-sample/" + name) random
    stream (bernoulli_flat), so the result does not depend on the order of the tensors; its density is then pct% only up to sampling error.
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
        flat = s.reshape(-1)
        parts.append(flat[bernoulli_flat(flat.numel(), rate, seed, "threshold-sample/" + name)].float())
    sample = torch.cat(parts)
    return kth_largest(sample, max(1, keep_count(pct, sample.numel())))


def difference_sets(t_se: torch.Tensor, t_om: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_SE minus T_OM, T_OM minus T_SE): the entries important to one patch only."""
    return t_se & ~t_om, t_om & ~t_se
