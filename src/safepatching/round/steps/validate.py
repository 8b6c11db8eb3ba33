"""Round step: validate the round's batch (Great Expectations)."""

from __future__ import annotations

import json

from ...config import Params
from ...layout import RoundLayout


def validate(params: Params, layout: RoundLayout, log=print) -> dict:
    """Great Expectations checks of the round's batch against the eval splits and its lineage's earlier batches;
    a failing batch raises ValidationFailed (report + HTML page in data/quarantine/, the batch is copied)."""
    from ...batches.expectations import check_batch
    from ...batches.quarantine import quarantine, save_report
    from ...evaluation.suite import suite_prompt_sets

    project = layout.project
    batch = layout.root / params.round(layout.name).batch
    earlier = [layout.root / params.round(n).batch for n in params.lineage(layout.name)[:-1]]
    evals = suite_prompt_sets(params.eval.suite, layout.root)
    checked = check_batch(batch, params.data, evals, earlier)
    if not checked.success:
        raise quarantine(batch, checked, project.quarantine, move=False)
    rep = save_report(checked, layout.validation_reports)
    layout.validation.parent.mkdir(parents=True, exist_ok=True)
    # validation.json is a DVC output and dependency: the report's content, no wall-clock time (the time is in the
    # log and in validation_reports/, which DVC does not track)
    layout.validation.write_text(json.dumps(checked.content(), indent=2, default=str))
    log(f"{layout.name}: batch {params.round(layout.name).batch} valid ({rep['rows']} rows, "
        f"sha256 {rep['sha256'][:12]}) in {rep['seconds']:.2f}s")
    return rep
