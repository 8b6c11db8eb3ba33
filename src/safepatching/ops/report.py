"""Reports over a lineage: the metrics table printed by the flow and the per-round plot logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from ..layout import BACKBONE, Project

TABLE_KEYS = ("harmful_plain", "harmful_jailbreak", "over_refusal", "utility", "other")


def read_headline(path: Path) -> dict:
    return json.loads(Path(path).read_text())["headline"]


def write_round_report(params, project: Project, upto: str) -> Path:
    """Plots of harmful / over-refusal / utility over the lineage up to `upto` (test split), backbone first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [BACKBONE] + params.lineage(upto)
    rows = [read_headline(project.round(n).metrics("test")) for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, keys, title in zip(axes, [("harmful_jailbreak", "harmful_plain"), ("over_refusal",), ("utility", "other")],
                               ["harmful (%)", "over-refusal (%)", "utility / other (%)"]):
        for k in keys:
            ax.plot(names, [r.get(k, 0) for r in rows], marker="o", label=k)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = project.round(upto).report
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def table(params, project: Project) -> str:
    """The test-split headline of the backbone and every round that has metrics."""
    names = [BACKBONE] + list(params.rounds)
    lines = [f"{'model':10s} {'harm-plain':>10s} {'harm-jb':>8s} {'over-ref':>8s} {'utility':>8s} {'other':>6s}"]
    for n in names:
        f = project.round(n).metrics("test")
        if f.exists():
            h = read_headline(f)
            lines.append(f"{n:10s} {h.get('harmful_plain', 0):10.1f} {h.get('harmful_jailbreak', 0):8.1f} "
                         f"{h.get('over_refusal', 0):8.1f} {h.get('utility', 0):8.1f} {h.get('other', 0):6.1f}")
    return "\n".join(lines)
