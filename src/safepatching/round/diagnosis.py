"""An honest diagnosis of a round's two patches under one merge config.

Per layer (tensors grouped by `layers.<i>`, plus embed / head / other):
  cos        cosine of P_SE and P_OM (flattened over the layer)
  overlap    |T_SE ∩ T_OM| / min(|T_SE|, |T_OM|): how much the two top-k importance sets coincide, ranked as the
             merge ranks (its `ranking`, with its global thresholds); only for methods that rank scores
  kept_se    L2 share of P_SE kept by the merge's SE mask, ||M_SE ⊙ P_SE|| / ||P_SE|| (likewise kept_om)
  n_se/n_om  number of parameters kept by each mask (the layer distribution)
The masks are the merge method's own (via merge_in_memory's stats hook), so the numbers describe
exactly what the merge applies.
The paper reports the two patches' important parameters sit in different layers; this shows whether
they do here.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ..config import MergeSettings
from ..merging.masks import layer_of, topk_mask


class _Collector:
    """A `stats` hook for merge_in_memory: gets each tensor's inputs and the exact masks the merge used."""

    def __init__(self, cfg: MergeSettings):
        self.cfg = cfg
        self.acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def update(self, t, m) -> None:
        if t.p_se is None or t.p_om is None:
            return
        a, b = t.p_se.float(), t.p_om.float()
        k_se, k_om = _dense(m.keep_se, a), _dense(m.keep_om, b)
        L = self.acc[layer_of(t.name)]
        L["dot"] += float((a * b).sum())
        L["nse"] += float((a * a).sum())
        L["nom"] += float((b * b).sum())
        L["kse"] += float((a * a * k_se).sum())
        L["kom"] += float((b * b * k_om).sum())
        L["n_se"] += float(k_se.sum())
        L["n_om"] += float(k_om.sum())
        L["numel"] += a.numel()
        ranked = all(hasattr(self.cfg, k) for k in ("a", "b", "ranking"))
        if ranked and t.s_se is not None and t.s_om is not None:  # overlap of the plain top-a / top-b sets
            t_se = topk_mask(t.s_se.float(), self.cfg.a, self.cfg.ranking, t.thr_se)
            t_om = topk_mask(t.s_om.float(), self.cfg.b, self.cfg.ranking, t.thr_om)
            L["inter"] += float((t_se & t_om).sum())
            L["tse"] += float(t_se.sum())
            L["tom"] += float(t_om.sum())


def _dense(keep, like: torch.Tensor) -> torch.Tensor:
    if isinstance(keep, bool):
        return torch.full_like(like, float(keep))
    return keep.float()


def diagnose(p_se: dict[str, torch.Tensor], p_om: dict[str, torch.Tensor], s_se: dict[str, torch.Tensor],
             s_om: dict[str, torch.Tensor], cfg: MergeSettings) -> dict:
    """Per-layer diagnosis of the two patches under `cfg`, using the exact masks of the merge itself."""
    from ..merging.in_memory import merge_in_memory

    col = _Collector(cfg)
    shapes = {n: torch.zeros_like(v, dtype=torch.float32) for n, v in (p_se | p_om).items()}
    merge_in_memory(shapes, p_se, p_om, cfg, s_se, s_om, stats=col)
    rows = {}
    tot: dict[str, float] = defaultdict(float)
    for layer, L in sorted(col.acc.items()):
        for k, v in L.items():
            tot[k] += v
        rows[layer] = _summ(L)
    return {"layers": rows, "total": _summ(tot), "config": cfg.model_dump()}


def _summ(L: dict) -> dict:
    eps = 1e-30
    return {"cos": round(L["dot"] / ((L["nse"] * L["nom"]) ** 0.5 + eps), 4),
            "overlap": round(L["inter"] / (min(L["tse"], L["tom"]) + eps), 4),
            "kept_se": round((L["kse"] / (L["nse"] + eps)) ** 0.5, 4),
            "kept_om": round((L["kom"] / (L["nom"] + eps)) ** 0.5, 4),
            "n_se": int(L["n_se"]), "n_om": int(L["n_om"]), "numel": int(L["numel"])}


def format_diagnosis(d: dict) -> str:
    lines = [f"{'layer':6s} {'cos':>7s} {'overlap':>8s} {'kept_se':>8s} {'kept_om':>8s} {'n_se':>8s} {'n_om':>8s}"]
    for layer, r in list(d["layers"].items()) + [("total", d["total"])]:
        lines.append(f"{layer:6s} {r['cos']:7.3f} {r['overlap']:8.3f} {r['kept_se']:8.3f} {r['kept_om']:8.3f} "
                     f"{r['n_se']:8d} {r['n_om']:8d}")
    return "\n".join(lines)


def importance_by_layer(s_se: dict[str, torch.Tensor], s_om: dict[str, torch.Tensor], pct: float = 10.0) -> dict:
    """Where each patch's most important parameters sit (the paper's Figure 3): the share of the global top-pct% SNIP
    set of each patch that falls in each layer, ranked across the whole model (not per tensor, which would spread
    every set evenly by construction)."""
    from ..merging.masks import global_threshold

    out: dict[str, dict[str, float]] = {}
    for side, scores in (("se", s_se), ("om", s_om)):
        thr = global_threshold(sorted(scores.items()), pct, total=sum(v.numel() for v in scores.values()))
        counts: dict[str, float] = defaultdict(float)
        for n, v in scores.items():
            counts[layer_of(n)] += float((v.float() >= thr).sum())
        tot = sum(counts.values()) or 1.0
        out[side] = {k: round(c / tot, 4) for k, c in sorted(counts.items())}
    return {"pct": pct, "share": out}


def plot_importance_layers(d: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(set(d["share"]["se"]) | set(d["share"]["om"]))
    x = range(len(layers))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([i - 0.2 for i in x], [100 * d["share"]["se"].get(k, 0) for k in layers], 0.4, label="SE patch (ascent)")
    ax.bar([i + 0.2 for i in x], [100 * d["share"]["om"].get(k, 0) for k in layers], 0.4, label="OM patch (descent)")
    ax.set_xticks(list(x), layers, rotation=45)
    ax.set_ylabel(f"share of the global top-{d['pct']:g}% (%)")
    ax.set_title("where each patch's important parameters sit")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
