"""Registry operations from the shell.

    python -m safepatching.ops.cli [--params params.yaml] status
    python -m safepatching.ops.cli promote --version N [--alias champion] [--force --reason "..." [--by NAME]]
    python -m safepatching.ops.cli rollback [--force --reason "..." [--by NAME]]
    python -m safepatching.ops.cli generate --prompt "..." [--alias champion] [--max-new-tokens N]

MLflow settings come from the params file's `mlflow:` section; a relative sqlite URI resolves against
`--root` (default: the folder holding the params file); an `http(s)://` URI is a tracking server (one that does not
answer is one error naming it). Typed errors exit with code 2 and one message.

`promote` refuses a superseded version, a version not in the lineage (its model is no round's current
`models/<round>`), and -- for `champion` -- a version whose recorded gate did not pass; `--force` overrides, always
needs `--reason` and is always recorded on the version (tag `forced_promotions`: alias, who, why, when), also when the
alias already points at the version (nothing moves then; the output says so). `status` only reads (a copied
workspace's store is left as it is); it shows per version its round, model hash, DVC stage hash, gate decision
(reference and reasons), the deciding judge (`judge`, eval.decide_with), whether the round's chosen point was
feasible (`selection`: `INFEASIBLE` is listed with its rule below the table), state (current / superseded / stale)
and aliases, which reference a new round's gate compares with, and warns when the champion is not in the lineage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import envdefaults
from ..errors import SafePatchingError
from .gate import HEADLINE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m safepatching.ops.cli", description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--root", default=None, help="project root for relative paths (default: the params file's folder)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="list model versions, aliases, gate decisions and headline metrics")
    pr = sub.add_parser("promote", help="point an alias (default champion) at a version")
    pr.add_argument("--version", required=True)
    pr.add_argument("--alias", default="champion")
    rb = sub.add_parser("rollback", help="move champion back to the version it replaced")
    for q in (pr, rb):
        q.add_argument("--force", action="store_true",
                       help="override a refusal (superseded, not in the lineage, gate not passed); needs --reason; "
                            "always recorded")
        q.add_argument("--reason", default="", help="why (recorded on the version with --force)")
        q.add_argument("--by", default=None, help="who (recorded with --force; default: the current user)")
    g = sub.add_parser("generate", help="generate with the champion (or --alias) loaded from the registry")
    g.add_argument("--prompt", required=True)
    g.add_argument("--alias", default="champion")
    g.add_argument("--max-new-tokens", type=int, default=None)
    return p


def _status(reg, hashes: dict[str, str], anchor: str) -> str:
    from .lineage import champion_warning, version_state
    from .registry.promotion import CHAMPION, gate_reference
    from .registry.rows import short

    rows = reg.versions() if reg.exists() else []
    if not rows:
        return f"model {reg.model_name!r}: no versions registered ({reg.uri})"
    head = ["version", "round", "parent", "model", "dvc_stage", "gate", "reference", "judge", "selection", "state",
            "aliases", *HEADLINE]
    table = [head] + [[r.version, r.round, r.parent_version, short(r.model_sha256), short(r.dvc_stage_hash),
                       r.gate or "-", r.gate_reference or "-", r.decided_by or "-",
                       {"infeasible": "INFEASIBLE"}.get(r.selection, r.selection or "-"), version_state(r, hashes),
                       ",".join(r.aliases), *(f"{r.metrics[m]:.1f}" if m in r.metrics else "-" for m in HEADLINE)]
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    reasons = [f"  v{r.version} ({r.round}) gate {r.gate} vs {r.gate_reference or '-'}: {'; '.join(r.gate_reasons)}"
               for r in rows if r.gate_reasons]
    if reasons:
        lines += ["", "gate reasons:", *reasons]
    infeasible = [f"  v{r.version} ({r.round}): no validation point met the selection's constraints; chosen by rule "
                  f"{r.selection_rule or '-'}" for r in rows if r.selection == "infeasible"]
    if infeasible:
        lines += ["", "infeasible selections registered:", *infeasible]
    forced = [f"  v{r.version} ({r.round}) -> {f.get('alias')} by {f.get('by')} at {f.get('at')}: {f.get('reason')}"
              for r in rows for f in r.forced if isinstance(f, dict)]
    if forced:
        lines += ["", "forced promotions:", *forced]
    champion = next((r.version for r in rows if CHAMPION in r.aliases), None)
    lines += ["", f"gate of a new round: against {gate_reference(champion)}"
              + (" and the backbone (gate.anchor)" if anchor == "backbone" and champion is not None else "")]
    warning = champion_warning(rows, hashes)
    if warning:
        lines += ["", f"WARNING: {warning}"]
    return "\n".join(lines)


def _promoted(model: str, done) -> str:
    """The line for a carried-out `promotion.Promotion`."""
    if done.moves:
        return f"{model}@{done.alias} -> v{done.version}" + (" (forced)" if done.forced else "")
    recorded = "; the forced promotion is recorded on it" if done.forced else ""
    return f"{model}@{done.alias} already -> v{done.version}: unchanged{recorded}"


def _generate(reg, prompt: str, alias: str, max_new_tokens: int) -> str:
    pipe = reg.load_champion_pipeline(alias)
    out = pipe([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens, do_sample=False)
    text = out[0]["generated_text"]
    return text[-1]["content"] if isinstance(text, list) else str(text)


def main(argv: list[str] | None = None) -> int:
    envdefaults.apply()
    args = _parser().parse_args(argv)
    try:
        from ..config import load_params
        from .lineage import model_hashes
        from .registry.versions import ModelRegistry

        params = load_params(args.params)
        root = Path(args.root) if args.root else Path(args.params).resolve().parent
        read_only = args.cmd == "status"
        reg = ModelRegistry.from_params(params, root=root, writable=not read_only)
        note = reg.rehome_pending() if read_only else reg.rehomed
        if note:
            print(note, file=sys.stderr)
        if args.cmd == "status":
            print(_status(reg, model_hashes(params, root), params.gate.anchor))
        elif args.cmd == "promote":
            done = reg.promote(args.version, args.alias, force=args.force, reason=args.reason, by=args.by,
                               lineage=set(model_hashes(params, root).values()))
            print(_promoted(reg.model_name, done))
        elif args.cmd == "rollback":
            v = reg.rollback(force=args.force, reason=args.reason, by=args.by)
            print(f"{reg.model_name}@champion -> v{v} (rolled back)" + (" (forced)" if args.force else ""))
        elif args.cmd == "generate":
            print(_generate(reg, args.prompt, args.alias, args.max_new_tokens or params.eval.max_new_tokens))
    except SafePatchingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
