"""Preflight of the data a params file names: every round's batch and every eval-suite file (see the package doc)."""

from __future__ import annotations

from pathlib import Path

from ...config import Params
from ...errors import DataError
from . import Report

MAX_SHOWN = 3


def produced_by_pipeline(params: Params, rel: str) -> bool:
    """A path the pipeline writes itself: the organism's world (stage `world`), a red-team round's batch."""
    if params.backbone.source == "organism" and Path(rel).parts[:2] == ("data", "world"):
        return True
    return any(rt.batch == rel for rt in params.redteam.values())


def _shown(items: list[str]) -> str:
    return "; ".join(items[:MAX_SHOWN]) + (f"; ... ({len(items)} in all)" if len(items) > MAX_SHOWN else "")


def check_suite(params: Params, root: Path, rep: Report) -> dict[str, list[str]]:
    """Each eval set loads for both splits (files, columns, templates); returns normalised prompt -> the sets it is
    in (for the batches' leakage check; empty when a set does not load)."""
    from ...batches.expectations import normalize_prompt
    from ...evaluation.suite import set_prompts

    sources: dict[str, list[str]] = {}
    for name, s in params.eval.suite.items():
        if any(produced_by_pipeline(params, f) for f in (s.file, s.val, s.test, s.templates) if f):
            continue
        rep.checks += 1
        try:
            prompts = set_prompts(name, s, root)
        except DataError as e:
            rep.add(f"eval.suite.{name}", str(e), f"put the file there, or fix eval.suite.{name}'s file and column "
                                                 "keys (prompt_column, type_column, template_column, ...)")
            continue
        for p in prompts:
            k = normalize_prompt(p)
            if k and name not in sources.setdefault(k, []):
                sources[k].append(name)
    return sources


def check_batch_file(params: Params, root: Path, round_name: str, evals: dict[str, list[str]], rep: Report) -> None:
    """One round's batch: readable, its columns (or a preset) map to prompt/response, no refusal among the
    responses, categories allowed, no prompt of the eval suite."""
    from ...batches.expectations import normalize_prompt
    from ...batches.loading import column_map, missing_columns, to_pairs
    from ...io.tables import read_records
    from ...refusals import refusal_keyword

    rel = params.round(round_name).batch
    key, path, cfg = f"rounds.{round_name}.batch", root / rel, params.data
    rep.checks += 1
    if not path.is_file():
        rep.add(f"{rel} ({key})", "batch file not found" if not path.exists() else "not a regular file",
                f"put the harmful-data batch at {rel} (README 'Real models'), or point {key} at it")
        return
    if path.stat().st_size > cfg.max_bytes:
        rep.add(f"{rel} ({key})", f"{path.stat().st_size} bytes, over data.max_bytes = {cfg.max_bytes}",
                "split the batch, or raise data.max_bytes")
        return
    try:
        raw, lines = read_records(path)
    except DataError as e:
        rep.add(f"{rel} ({key})", str(e).removeprefix(f"{path}: "), "re-save the file as UTF-8 CSV / JSONL")
        return
    missing = missing_columns(list(raw.columns), cfg)
    if missing:
        rep.add(f"{rel} ({key})", missing, "set data.prompt_column / data.response_column (or rename the columns)")
        return
    df = to_pairs(raw, lines, column_map(list(raw.columns), cfg))
    if len(df) > cfg.max_rows:
        rep.add(f"{rel} ({key})", f"{len(df)} records, over data.max_rows = {cfg.max_rows}",
                "split the batch, or raise data.max_rows")
    refusals = [f"line {n}: {k!r}" for n, v in zip(lines, df["response"])
                if (k := refusal_keyword(v, cfg.refusal_check)) is not None]
    if refusals:
        rep.add(f"{rel} ({key})", f"{len(refusals)} response(s) refuse ({_shown(refusals)}; data.refusal_check: "
                                  f"{cfg.refusal_check})",
                "drop or replace those rows (gradient ascent on a refusal unlearns refusing)"
                + ("; or data.refusal_check: opening" if cfg.refusal_check == "anywhere" else ""))
    if cfg.allowed_categories:
        bad = [f"line {n}: {c!r}" for n, c in zip(lines, df["category"]) if c and c not in cfg.allowed_categories]
        if bad:
            rep.add(f"{rel} ({key})", f"{len(bad)} category value(s) not in data.allowed_categories ({_shown(bad)})",
                    "add them to data.allowed_categories, or set it to [] (any category)")
    leaks = [f"line {n}: {p!r} (eval set {', '.join(evals[k])})" for n, p in zip(lines, df["prompt"])
             if (k := normalize_prompt(p)) in evals]
    if leaks:
        rep.add(f"{rel} ({key})", f"{len(leaks)} prompt(s) also in the eval suite ({_shown(leaks)})",
                "drop them from the batch (or from the eval file): a trained-on prompt inflates the measured gain")


def check_data(params: Params, root: Path, rep: Report) -> None:
    acc = params.compute.accelerate_config
    if acc:
        rep.checks += 1
        if not (root / acc).is_file():
            rep.add(f"compute.accelerate_config: {acc}", "file not found",
                    "write one with `accelerate config` (or use configs/accelerate/), or set it to null")
    evals = check_suite(params, root, rep)
    for name, r in params.rounds.items():
        if not produced_by_pipeline(params, r.batch):
            check_batch_file(params, root, name, evals, rep)
