"""Separability probe (not a test; ~2 min): can any weight direction lower over-refusal without raising harm on the
organism, and does SNIP importance tell the two patches apart?

Uses a finished workspace (after `make run`, or a study seed folder) and one of its rounds (patches + scores). It
adds an *oracle* over-refusal patch that SafePatching never has: gradient descent on the training look-alikes the
backbone was taught to refuse, paired with their helpful answers (organism only: `data/world/sft.jsonl`), trained
with the round's OM settings. Prints
  - cosines between P_SE, P_OM and P_oracle;
  - overlaps of their global top-k% importance sets, for SNIP on weights (|W ⊙ g|, the default) and on deltas
    (|P ⊙ g|);
  - validation metrics of θ + Σ c_k P_k for a few fixed combinations (no selection, no test split).

    OMP_NUM_THREADS=2 .venv/bin/python bench/separability.py --root . --round r1 --out reports/separability
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safepatching import envdefaults  # noqa: E402

envdefaults.apply()

COMBOS = ({}, {"oracle": 1.0}, {"oracle": 2.0}, {"om": 1.0}, {"se": 1.0}, {"se": 1.0, "om": 1.0},
          {"se": 1.0, "oracle": 1.0}, {"se": 0.5, "oracle": 1.0})


def main(argv=None) -> int:
    import torch
    from safetensors.torch import load_file

    from safepatching.config import load_params
    from safepatching.evaluation.generate import DecodingConfig
    from safepatching.evaluation.metrics import evaluate_rows, headline
    from safepatching.evaluation.suite import load_suite
    from safepatching.io.jsonl import read_jsonl
    from safepatching.io.models import load_model
    from safepatching.io.patches import SCORES_FILE, load_patch
    from safepatching.merging.masks import global_threshold
    from safepatching.patching.importance import compute_importance
    from safepatching.patching.train import train_patch
    from safepatching.layout import RoundLayout
    from safepatching.round.steps._pairs import pairs as round_pairs
    from safepatching.round.selection import harm_score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--params", default=None, help="default: <root>/params.yaml")
    ap.add_argument("--round", default="r1")
    ap.add_argument("--out", default="reports/separability")
    args = ap.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    params = load_params(args.params or root / "params.yaml")
    lay = RoundLayout.of(params, args.round, root)
    sft = read_jsonl(lay.project.world / "sft.jsonl")
    oracle_pairs = [(r["prompt"], r["expected"]) for r in sft if r["kind"] == "lookalike" and r["family"] == "refused"]
    if not oracle_pairs:
        print("no refused look-alikes in the world's SFT data (over_safety 0?)", file=sys.stderr)
        return 2
    harmful_pairs = round_pairs(params, lay)
    dirs = {"se": lay.patch("se"), "om": lay.patch("om"), "oracle": out / "oracle"}
    if not (dirs["oracle"] / "manifest.json").exists():
        train_patch(lay.parent_model, oracle_pairs, dirs["oracle"], params.patch.om, seed=params.patch.seed,
                    log=lambda m: None)
    P = {k: load_patch(d)[0] for k, d in dirs.items()}
    flat = lambda d: torch.cat([d[n].flatten().float() for n in sorted(d)])  # noqa: E731
    F = {k: flat(v) for k, v in P.items()}
    print(f"round {args.round}: {len(harmful_pairs)} harmful pairs; oracle: {len(oracle_pairs)} refused look-alikes")
    for a, b in (("se", "om"), ("oracle", "om"), ("oracle", "se")):
        print(f"  cos(P_{a}, P_{b}) = {torch.nn.functional.cosine_similarity(F[a], F[b], dim=0).item():+.3f}")
    for score in ("weight", "delta"):
        S = {}
        for k, d in dirs.items():
            o = out / f"scores_{score}_{k}"
            if not (o / SCORES_FILE).exists():
                compute_importance(lay.parent_model, d, oracle_pairs if k == "oracle" else harmful_pairs, o,
                                   score=score, n_samples=params.importance.n_samples,
                                   batch_size=params.importance.batch_size, seed=params.seed, log=lambda m: None)
            S[k] = load_file(str(o / SCORES_FILE))

        def top(k, pct):  # the merges' own global top-pct% set (merging.masks.global_threshold)
            return flat(S[k]) >= global_threshold(sorted(S[k].items()), pct)

        for pct in (5, 10, 20):
            t = {k: top(k, pct) for k in S}
            share = lambda a, b: float((t[a] & t[b]).sum() / t[a].sum())  # noqa: E731
            print(f"  SNIP {score:6s} top-{pct:2d}%: |OM∩SE|/|OM| {share('om', 'se'):.2f}  "
                  f"|oracle∩OM|/|oracle| {share('oracle', 'om'):.2f}  "
                  f"|oracle∩SE|/|oracle| {share('oracle', 'se'):.2f}  (chance {pct / 100:.2f})")
    split = load_suite(params.eval.suite, "val", root)
    judge = params.eval.decide_with
    model, tok = load_model(lay.parent_model, trainable=False)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dec = DecodingConfig(params.eval.max_new_tokens, params.eval.batch_size)
    rows = []
    for coefs in COMBOS:
        sd = dict(base)
        for k, c in coefs.items():
            for n, d in P[k].items():
                sd[n] = sd[n] + c * d.to(sd[n].dtype)
        with torch.no_grad():
            model.load_state_dict(sd)
        met, _ = evaluate_rows(model, tok, split, {judge: params.eval.judges[judge]}, dec, samples_per_kind=0)
        h = headline(met, judge)
        rows.append({"coefs": coefs, "harm": harm_score(h), **{k: h.get(k) for k in
                     ("harmful_plain", "harmful_jailbreak", "over_refusal", "utility", "other")}})
        name = " + ".join(f"{c:g}·P_{k}" for k, c in coefs.items()) or "parent"
        print(f"  {name:28s} harm {rows[-1]['harm']:5.1f} (plain {h['harmful_plain']:5.1f}, jailbreak "
              f"{h['harmful_jailbreak']:5.1f})  over-refusal {h['over_refusal']:5.1f}  utility "
              f"{h.get('utility', 0):5.1f}  other {h.get('other', 0):4.1f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "separability.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
