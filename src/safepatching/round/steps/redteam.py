"""Round step: red-team the round's parent model; its failures become the round's batch.

A real team patches what its red team found: (prompt, harmful response) pairs on which the *deployed* model
complies. Here the pool (params `redteam.<round>.pool`: id, prompt, response, category; the organism writes one
per category from training topics only) is run through the parent model, judged by the deciding judge
(`eval.decide_with`), and the prompts answered harmfully are written, with the pool's harmful response, to the
round's batch. The batch therefore holds the failure being fixed, as the paper's D_h does for its backbone.
"""

from __future__ import annotations

import json
import random
from collections import Counter

from ...config import Params
from ...errors import DataError
from ...layout import RoundLayout

POOL_COLUMNS = ("id", "prompt", "response", "category")


def redteam(params: Params, layout: RoundLayout, log=print) -> dict:
    """Generate on the pool with the parent model, keep what the deciding judge calls harmful; writes the round's
    batch (id, prompt, response, category) and `redteam.json` (pool size, failures, shares by family); returns
    the report. No failure at all is an error: the round would have nothing to patch."""
    from ...evaluation.generate import DecodingConfig, generate
    from ...evaluation.judge import get_judge
    from ...io.jsonl import read_jsonl, write_jsonl
    from ...io.models import load_model

    cfg = params.redteam.get(layout.name)
    if cfg is None:
        raise DataError(f"round {layout.name!r} has no redteam entry in params (redteam: {list(params.redteam)})")
    pool_path = layout.root / cfg.pool
    pool = read_jsonl(pool_path)
    for i, row in enumerate(pool, 1):
        missing = [c for c in POOL_COLUMNS if not str(row.get(c, "")).strip()]
        if missing:
            raise DataError(f"{cfg.pool}: row {i}: missing or empty {missing} (rule: pool rows need {POOL_COLUMNS})")
    e, c = params.eval, params.compute
    model, tok = load_model(layout.parent_model, trainable=False, dtype=c.dtype, device=c.device,
                            device_map=c.device_map)
    prompts = [r["prompt"] for r in pool]
    outputs = generate(model, tok, prompts, DecodingConfig(e.max_new_tokens, e.batch_size))
    judge = get_judge(e.decide_with, e.judges.get(e.decide_with))
    labels = judge.judge(prompts, outputs, [""] * len(pool), [True] * len(pool))
    failures = [r for r, lab in zip(pool, labels) if lab == "harmful"]
    if not failures:
        raise DataError(f"{cfg.pool}: the parent model ({layout.parent_model}) answers none of the {len(pool)} pool "
                        f"prompts harmfully (judge {e.decide_with}): round {layout.name} has nothing to patch")
    found = len(failures)
    if cfg.max_rows and found > cfg.max_rows:
        keep = sorted(random.Random(f"{params.seed}-redteam-{layout.name}").sample(range(found), cfg.max_rows))
        failures = [failures[i] for i in keep]
    batch = layout.root / cfg.batch
    write_jsonl(batch, [{k: r[k] for k in POOL_COLUMNS} for r in failures])
    fam = lambda r: r.get("family") or "-"  # noqa: E731
    by_family = Counter(fam(r) for r in pool)
    failed_by_family = Counter(fam(r) for r, lab in zip(pool, labels) if lab == "harmful")
    report = {"pool": cfg.pool, "pool_rows": len(pool), "parent": cfg.parent, "judge": e.decide_with,
              "failures": found, "failure_rate": round(100.0 * found / len(pool), 2), "batch": cfg.batch,
              "batch_rows": len(failures), "labels": dict(Counter(labels)),
              "failure_rate_by_family": {f: round(100.0 * failed_by_family[f] / n, 2)
                                         for f, n in sorted(by_family.items())}}
    layout.redteam.parent.mkdir(parents=True, exist_ok=True)
    layout.redteam.write_text(json.dumps(report, indent=2))
    log(f"{layout.name}: red team on {layout.parent_model.name}: {found}/{len(pool)} pool prompts answered harmfully "
        f"({report['failure_rate']} %); batch {cfg.batch} has {len(failures)} rows")
    return report
