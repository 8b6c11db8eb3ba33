"""Random retention (counter-based generator, MASK_VERSION 2) and top-k masks: reproducibility, blocking
independence, Bernoulli statistics, stream independence, the one-pass top-k path."""

from __future__ import annotations

import math

import pytest
import torch

import safepatching.merging.masks as M
from safepatching.errors import ConfigError
from safepatching.merging.masks import (bernoulli_flat, bernoulli_threshold, hash32, keep_count, random_mask,
                                        stream_keys, topk_mask)

SIGMAS = 5  # statistical checks allow 5 standard errors (the streams are fixed, so these never flake)


def _ref_stream(n: int, p: float, seed: int, name: str, chunk_bits: int = 32) -> torch.Tensor:
    """The generator's definition, one element at a time in plain Python."""
    thr, out = bernoulli_threshold(p), []
    for i in range(n):
        k1, k2 = stream_keys(seed, name, i >> chunk_bits)
        out.append(hash32(i & ((1 << chunk_bits) - 1), k1, k2) < thr)
    return torch.tensor(out)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_pinned_stream():
    """If this fails the random stream changed: bump MASK_VERSION (merge manifests record it)."""
    m = random_mask((1000, 1000), 0.5, 0, "pin")
    first = "".join("1" if b else "0" for b in m.reshape(-1)[:32].tolist())
    assert (M.MASK_VERSION, int(m.sum()), first) == (2, 500_544, "10001100001000010000101011000001")


def test_equals_reference_definition():
    assert torch.equal(bernoulli_flat(3000, 0.37, 5, "layer.3/om"), _ref_stream(3000, 0.37, 5, "layer.3/om"))
    assert torch.equal(random_mask((30, 100), 0.37, 5, "layer.3/om").reshape(-1),
                       _ref_stream(3000, 0.37, 5, "layer.3/om"))


@pytest.mark.parametrize("chunk_bits", [32, 10])
@pytest.mark.parametrize("block", [1, 7, 1000, 4096, 1 << 16])
def test_same_whatever_the_blocking(monkeypatch, chunk_bits, block):
    """The mask is a pure function of (index, p, seed, name): any block size, any slice, chunk boundaries crossed
    inside a block (chunk_bits=10 here stands in for tensors over 2^32 entries) give the same entries."""
    monkeypatch.setattr(M, "CHUNK_BITS", chunk_bits)
    n = 5000
    ref = _ref_stream(n, 0.6, 11, "w", chunk_bits)
    monkeypatch.setattr(M, "HASH_BLOCK", block)
    assert torch.equal(bernoulli_flat(n, 0.6, 11, "w"), ref)
    for start, m in [(0, 1), (1, 1023), (1000, 1048), (1023, 2), (2047, 2953), (4999, 1)]:
        assert torch.equal(bernoulli_flat(m, 0.6, 11, "w", start=start), ref[start:start + m]), (start, m)
    assert torch.equal(random_mask((50, 100), 0.6, 11, "w").reshape(-1), ref)


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_bernoulli_rate(p):
    n = 1 << 22
    m = bernoulli_flat(n, p, 0, f"rate/{p}")
    assert abs(m.double().mean().item() - p) <= SIGMAS * math.sqrt(p * (1 - p) / n)


def test_kept_counts_binomially_dispersed():
    """Over many streams, the kept count of a long run of entries has the binomial spread: z-scores with standard
    deviation 1 (lowbias32 on i + key without the Weyl step gave 0.88 here, 0.71 on 16M-entry runs)."""
    n, p, streams = 1 << 20, 0.5, 256
    z = torch.tensor([(bernoulli_flat(n, p, s, "disp").double().mean().item() - p) / math.sqrt(p * (1 - p) / n)
                      for s in range(streams)])
    assert abs(z.mean().item()) <= SIGMAS / math.sqrt(streams)
    assert abs(z.std().item() - 1) <= SIGMAS / math.sqrt(2 * streams), z.std().item()


def test_no_structure_within_a_stream():
    """Rows and columns of a mask have the binomial spread, and entries are uncorrelated with their neighbours at
    lags up to and across the hashing block."""
    p, rows, cols = 0.5, 2048, 2048
    m = random_mask((rows, cols), p, 3, "grid").double()
    for means, k in ((m.mean(1), cols), (m.mean(0), rows)):
        ratio = means.var().item() / (p * (1 - p) / k)
        assert abs(ratio - 1) <= SIGMAS * math.sqrt(2 / means.numel()), ratio
    flat = m.reshape(-1)
    for lag in (1, 2, 3, 16, 255, 1024, 2048, 1 << 16):
        assert abs(_corr(flat[:-lag], flat[lag:])) <= SIGMAS / math.sqrt(flat.numel() - lag), lag


def test_streams_independent():
    """Different names, seeds and sides give uncorrelated masks (also shifted against each other)."""
    n, p = 1 << 21, 0.3
    streams = [(0, "w/se"), (0, "w/om"), (1, "w/se"), (0, "v/se"), (0, "threshold-sample/w/se")]
    masks = [bernoulli_flat(n, p, s, name) for s, name in streams]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            both = (masks[i] & masks[j]).double().mean().item()
            assert abs(both - p * p) <= SIGMAS * math.sqrt(p * p * (1 - p * p) / n), (streams[i], streams[j])
            for lag in (0, 1, 1000):
                a, b = masks[i][lag:], masks[j][:n - lag]
                assert abs(_corr(a, b)) <= SIGMAS / math.sqrt(n - lag), (streams[i], streams[j], lag)


def test_p_edges():
    assert random_mask((4, 5), 1.0, 0, "w").all()
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError):
            random_mask((4, 5), bad, 0, "w")
    assert bernoulli_threshold(0.5) == 1 << 31 and bernoulli_threshold(1 - 1e-12) == (1 << 32) - 1
    assert not bernoulli_flat(10_000, 1e-12, 0, "w").any()


# ---------------------------------------------------------------- top-k


def _ref_top(s: torch.Tensor, k: int, among: torch.Tensor | None = None) -> torch.Tensor:
    """k largest entries (among), ties to the lowest indices, by a stable sort."""
    flat = s.reshape(-1).double()
    idx = torch.arange(flat.numel()) if among is None else among.reshape(-1).nonzero().squeeze(1)
    order = torch.argsort(-flat[idx], stable=True)
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[idx[order[:k]]] = True
    return mask.reshape(s.shape)


def test_topk_one_pass_per_tensor(monkeypatch):
    """A large per-tensor top-k reads the scores once (one _band_pass; no exact selection over the tensor), with or
    without `among`, and is exact."""
    calls = []
    band_pass = M._band_pass
    monkeypatch.setattr(M, "_band_pass", lambda *a, **kw: calls.append(1) or band_pass(*a, **kw))
    monkeypatch.setattr(M, "_kth", lambda *a, **kw: pytest.fail("second pass over the scores"))
    g = torch.Generator().manual_seed(0)
    s = torch.rand(2_000_000, generator=g)
    among = random_mask(s.shape, 0.7, 0, "among")
    for pct, a in ((10.0, None), (10.0, among), (63.0, among)):
        calls.clear()
        got = topk_mask(s, pct, "per_tensor", among=a)
        k = keep_count(pct, s.numel())
        assert calls == [1] and torch.equal(got, _ref_top(s, k, a))


@pytest.mark.parametrize("bracket", [(0.99, 1.0), (0.0, 0.01), (0.5, 0.5)])
def test_topk_bracket_miss_falls_back_exactly(monkeypatch, bracket):
    monkeypatch.setattr(M, "_bracket", lambda *a: bracket)
    s = (torch.rand(600_000, generator=torch.Generator().manual_seed(1)) * 50).floor() / 50  # ties everywhere
    among = random_mask(s.shape, 0.8, 0, "among")
    for a in (None, among):
        assert torch.equal(topk_mask(s, 10.0, "per_tensor", among=a), _ref_top(s, keep_count(10.0, s.numel()), a))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_topk_dtypes(dtype):
    s = torch.randn(700, 1000, generator=torch.Generator().manual_seed(2)).to(dtype)  # low precision: many ties
    among = random_mask(s.shape, 0.9, 0, "among")
    k = keep_count(20.0, s.numel())
    assert torch.equal(topk_mask(s, 20.0, "per_tensor", among=among), _ref_top(s, k, among))
    thr = 0.3333333333  # not representable: compared in the tensor's dtype, as torch does
    assert torch.equal(topk_mask(s, 20.0, "global", thr, among=among), (s >= thr) & among)


def test_noncontiguous_scores():
    s = torch.rand(700, 900, generator=torch.Generator().manual_seed(3)).t()  # a transposed view
    among = random_mask(s.shape, 0.9, 0, "among")
    k = keep_count(15.0, s.numel())
    assert torch.equal(topk_mask(s, 15.0, "per_tensor", among=among), _ref_top(s.contiguous(), k, among))
    assert torch.equal(topk_mask(s, 15.0, "global", 0.5, among=among), (s >= 0.5) & among)
