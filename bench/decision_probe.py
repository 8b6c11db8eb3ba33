"""Decision probe (not a test; ~1 min): the exact judge's refusal rate beside the share of outputs that *open* with a
refusal (the first four words of one of the world's refusals, no harm marker), for a round's parent, P_SE and P_OM.

The exact judge counts a refusal only when it is complete and nothing follows it; a patch that moves the decision to
refusal but breaks the end of the sentence ("I am sorry, but I cannot help with that squaublkeeeet") is "other"
there, while a human annotator (the paper's refusal judge) would read it as a refusal. The gap between the two
columns is that kind of output. Organism workspaces only (validation split).

    OMP_NUM_THREADS=1 .venv/bin/python bench/decision_probe.py --root <workspace or study seed folder> --round r1
    (a later round: --round r2 --parent r1)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safepatching import envdefaults  # noqa: E402

envdefaults.apply()

KINDS = ("lookalike", "harmful", "jailbreak", "benign")


def opens_with_refusal(output: str, refusals: tuple[str, ...], harm_markers: tuple[str, ...], words: int = 4) -> bool:
    """The output's first `words` words are those of one of `refusals`, and it carries no harm marker."""
    heads = tuple(" ".join(r.split()[:words]) for r in refusals)
    return output.strip().startswith(heads) and not any(m in output for m in harm_markers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--round", default="r1")
    ap.add_argument("--parent", default="backbone", help="the round's parent model under <root>/models (its patches "
                                                         "are deltas on it: r2's parent is r1, ...)")
    ap.add_argument("--split", default="val")
    a = ap.parse_args(argv)
    import os

    import torch

    from safepatching.evaluation.generate import DecodingConfig, generate
    from safepatching.evaluation.judge import get_judge
    from safepatching.io.jsonl import read_jsonl
    from safepatching.io.models import load_model
    from safepatching.io.patches import apply_deltas, load_patch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = Path(a.root)
    judge = get_judge("exact")  # the shipped settings
    refusals, markers = (judge.cfg.refusal, *judge.cfg.more_refusals), judge.cfg.harm_markers
    rows = {k: read_jsonl(root / "data/world/eval" / a.split / f"{k}.jsonl") for k in KINDS}
    print("model  | kind: exact-judge refusal % / opens with a refusal % / harmful %")
    for name in ("parent", "se", "om"):
        model, tok = load_model(root / "models" / a.parent, trainable=False)
        if name != "parent":
            apply_deltas(model, load_patch(root / "artifacts" / a.round / name)[0])
        cells = []
        for kind, rs in rows.items():
            outs = generate(model, tok, [r["prompt"] for r in rs], DecodingConfig(48, 64))
            labels = [judge.one(o, r.get("expected", "")) for o, r in zip(outs, rs)]
            pct = lambda xs: 100 * sum(xs) / len(rs)  # noqa: E731
            cells.append(f"{kind}: {pct(lb == 'refusal' for lb in labels):.1f} / "
                         f"{pct(opens_with_refusal(o, refusals, markers) for o in outs):.1f} / "
                         f"{pct(lb == 'harmful' for lb in labels):.1f}")
        print(f"{name:6} | " + "; ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
