"""Great Expectations (1.x) validation of one harmful-data batch, with quarantine of bad batches.

One ephemeral GX context (analytics and progress bars off) is created lazily and reused for the whole
process; importing great_expectations costs ~3 s once, after that a batch validates in ~0.1 s.

The expectation suite is built in code from :class:`~safepatching.config.DataCfg`. Membership in the
comparison sets (evaluation prompts, earlier batches) is precomputed into boolean helper columns that the
suite then expects to be False: GX re-serialises an expectation's kwargs many times per run, so a value
set of thousands of prompts made each batch ~4x slower (and its Data Docs page huge). Each expectation carries ``meta={"rule", "column"}`` so that a
failure maps back to a named rule and the failing rows (ids and 1-based line numbers).

A batch that fails (or cannot be read at all: rule ``malformed_file``) is MOVED to the quarantine folder
together with ``<name>.report.json`` and an HTML report in ``<name>.docs/`` (GX Data Docs, or our own
page when GX cannot render it), then :class:`~safepatching.errors.ValidationFailed` is raised.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import logging
import os
import re
import shutil
import stat
import time
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from ..config import DataCfg
from ..errors import DataError, ValidationFailed
from ..io.records import read_bytes, read_records
from ..refusals import refusal_keyword
from .loading import column_map, load_pairs, to_pairs

log = logging.getLogger(__name__)

SUITE_NAME = "harmful_batch"
ROW = "row_number"          # helper column: 1-based line of each record
NORM = "prompt_normalized"  # helper column: the prompt's comparison key (normalize_prompt)
IN_EVAL = "prompt_in_eval_split"        # helper flag: NORM is an evaluation prompt
IN_EARLIER = "prompt_in_earlier_batch"  # helper flag: NORM is a prompt of an earlier batch
STRIPPED = "{}_stripped"    # helper columns: prompt / response without leading/trailing whitespace (length rule)
REFUSES = "response_refuses"  # helper flag: the response is a refusal (safepatching.refusals)
# C0 controls except \t \n, DEL, C1 controls, lone surrogates (undecodable bytes), U+FFFD (replacement char)
BAD_TEXT = r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffd]"
MAX_IDS_IN_MESSAGE = 5
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_prompt(text: Any) -> str | None:
    """Comparison key of a prompt (None for non-strings): Unicode NFKC, case folded, and every whitespace,
    punctuation and control character dropped, so "How do I X?" == "how do i  x" == "How do I x" (letters, marks,
    digits and symbols such as + or $ are kept)."""
    if not isinstance(text, str):
        return None
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] in "LMNS")


@functools.cache
def gx_context() -> tuple[Any, Any]:
    """The process-wide ephemeral GX context and its whole-dataframe batch definition (created once)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.enable_analytics(False)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    bd = (ctx.data_sources.add_pandas("harmful_data").add_dataframe_asset("batch")
          .add_batch_definition_whole_dataframe("all"))
    return ctx, bd


def build_suite(cfg: DataCfg, columns: Iterable[str]) -> Any:
    """The expectation suite for one batch; column expectations only for columns that exist."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    cols = set(columns)
    suite = gx.ExpectationSuite(name=SUITE_NAME)

    def add(rule: str, column: str, exp_cls: Any, description: str | None = None, **kw: Any) -> None:
        suite.add_expectation(exp_cls(column=column, meta={"rule": rule, "column": column},
                                      description=description, **kw))

    for col in ("prompt", "response"):
        add("required_column", col, gxe.ExpectColumnToExist)
        if col not in cols:
            continue
        add("not_null", col, gxe.ExpectColumnValuesToNotBeNull)
        add("string_type", col, gxe.ExpectColumnValuesToBeInTypeList, type_list=["str"])
        add("length", STRIPPED.format(col), gxe.ExpectColumnValueLengthsToBeBetween,
            f"{col} length without leading/trailing whitespace", min_value=cfg.min_chars, max_value=cfg.max_chars)
        add("valid_text", col, gxe.ExpectColumnValuesToNotMatchRegex, regex=BAD_TEXT)
    if "response" in cols and cfg.refusal_check != "off":
        add("refusal_response", REFUSES, gxe.ExpectColumnValuesToBeInSet,
            f"no response is a refusal (refusal keywords, data.refusal_check: {cfg.refusal_check})", value_set=[False])
    add("allowed_category", "category", gxe.ExpectColumnValuesToBeInSet, value_set=[*cfg.allowed_categories, ""])
    add("unique_id", "id", gxe.ExpectColumnValuesToBeUnique)
    if "prompt" in cols:
        add("unique_prompt", NORM, gxe.ExpectColumnValuesToBeUnique,
            "prompts (case, whitespace and punctuation ignored) are unique within the batch")
        add("eval_leakage", IN_EVAL, gxe.ExpectColumnValuesToBeInSet,
            "no prompt (case, whitespace and punctuation ignored) appears in an evaluation split", value_set=[False])
        add("earlier_duplicate", IN_EARLIER, gxe.ExpectColumnValuesToBeInSet,
            "no prompt (case, whitespace and punctuation ignored) repeats one of an earlier batch", value_set=[False])
    return suite


def _exception_message(r: Any) -> str | None:
    info = r.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for c in candidates:
        if c.get("raised_exception"):
            return str(c.get("exception_message"))
    return None


def _failures(res: Any, cfg: DataCfg, present: list[str], earlier_src: dict[str, list[str]],
              df: pd.DataFrame) -> list[dict]:
    out = []
    for r in res.results:
        if r.success:
            continue
        meta = r.expectation_config.meta or {}
        rule, column = meta.get("rule", r.expectation_config.type), meta.get("column", "")
        idx = r.result.get("unexpected_index_list") or []
        ids = [str(d["id"]) for d in idx if isinstance(d, dict)]
        rows = [int(d[ROW]) for d in idx if isinstance(d, dict)]
        detail = _exception_message(r) or ""
        if rule == "required_column":
            name = getattr(cfg, f"{column}_column")
            detail = f"column {name!r} (data.{column}_column) not found; present columns: {present}"
        elif rule == "earlier_duplicate":
            keys = set(df.loc[df[ROW].isin(rows), NORM])
            detail = "also in earlier batch(es): " + ", ".join(sorted({s for k in keys for s in earlier_src.get(k, [])}))
        elif rule == "length":
            detail = f"length without leading/trailing whitespace must be {cfg.min_chars}..{cfg.max_chars} characters"
            column = column.removesuffix("_stripped")
        elif rule == "refusal_response":
            found = sorted({str(k) for k in df.loc[df[ROW].isin(rows), REFUSES + "_keyword"] if k})
            detail = (f"the response refuses (keyword(s) {found[:5]}; data.refusal_check: {cfg.refusal_check}): gradient "
                      "ascent on a refusal would unlearn refusing. Responses must be the harmful completions to unlearn"
                      + ("; set data.refusal_check: opening to reject only responses that begin with a refusal"
                         if cfg.refusal_check == "anywhere" else ""))
        elif rule == "allowed_category":
            detail = f"allowed: {list(cfg.allowed_categories)} or empty"
        out.append({"rule": rule, "column": "prompt" if column in (NORM, IN_EVAL, IN_EARLIER) else
                    "response" if column == REFUSES else column,
                    "rows": ids, "row_numbers": rows, "detail": detail})
    return out


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
    os.replace(tmp, path)


def _json(obj: Any) -> str:
    def default(o: Any) -> Any:
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        return str(o)
    return json.dumps(obj, indent=2, default=default)


def render_html(report: dict) -> str:
    """A self-contained HTML page listing every failed rule and its rows (fallback for GX Data Docs)."""
    esc = html.escape
    parts = [f"<html><head><meta charset='utf-8'><title>Validation report: {esc(report['file'])}</title></head><body>",
             f"<h1>Validation FAILED: {esc(report['file'])}</h1>",
             f"<p>sha256 {esc(str(report['sha256']))} &middot; {report['rows']} rows</p>"]
    for f in report["failures"]:
        parts.append(f"<h2>{esc(f['rule'])} ({esc(f['column'])})</h2><p>{esc(f.get('detail', ''))}</p>")
        if f["rows"]:
            parts.append("<table border='1'><tr><th>id</th><th>line</th></tr>" + "".join(
                f"<tr><td>{esc(i)}</td><td>{n}</td></tr>" for i, n in zip(f["rows"], f["row_numbers"])) + "</table>")
    return "\n".join(parts + ["</body></html>"])


def _escaped(value: Any) -> Any:
    """Every string inside `value` HTML-escaped (dicts, lists and tuples walked; keys too)."""
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def escaped_result(result: Any) -> Any:
    """A copy of a GX validation result whose batch-derived values (unexpected values, row ids, queries) are
    HTML-escaped: GX's Data Docs renderer writes them into the page as raw HTML (stored XSS from a batch's ids
    or categories)."""
    import copy

    out = copy.deepcopy(result)
    for r in out.results:
        r.result = _escaped(dict(r.result or {}))
    return out


def _gx_data_docs(result: Any, docs_dir: Path, run_name: str) -> Path:
    """Build GX Data Docs for one validation result into `docs_dir` (a temporary file-system site)."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier, ValidationResultIdentifier)

    ctx, _ = gx_context()
    site = f"quarantine-{uuid.uuid4().hex[:12]}"
    key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=SUITE_NAME),
                                     run_id=RunIdentifier(run_name=run_name),
                                     batch_identifier=re.sub(r"[^A-Za-z0-9_-]", "_", run_name))
    ctx.add_data_docs_site(site, {"class_name": "SiteBuilder",
                                  "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                                  "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                                    "base_directory": str(docs_dir.resolve())}})
    ctx.validation_results_store.set(key, escaped_result(result))
    try:
        ctx.build_data_docs(site_names=[site], resource_identifiers=[key])
    finally:
        ctx.delete_data_docs_site(site)
        ctx.validation_results_store.remove_key(key)
    return docs_dir / "index.html"


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def safe_name(name: str) -> str:
    """`name` if it is a plain file name (letters, digits, . _ -; at most 128 characters; not starting with a dot or
    dash), else a sanitised version of it (every other character replaced by '_', cut to 128 characters)."""
    if SAFE_NAME.fullmatch(name):
        return name
    out = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    out = ("_" + out[1:] if out[:1] in (".", "-") else out) or "_"
    return out[-128:] if len(out) > 128 else out


def _free_dest(quarantine_dir: Path, name: str) -> Path:
    """A quarantine path for `name` (sanitised) that holds nothing yet: quarantine never overwrites."""
    base = safe_name(name)
    dest = quarantine_dir / base
    while os.path.lexists(dest) or (quarantine_dir / f"{dest.name}.report.json").exists():
        ts = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        root, ext = os.path.splitext(base)
        dest = quarantine_dir / f"{root}.{ts}{ext}"
    return dest


def _message(path: Path, dest: Path, report_path: Path, report: dict) -> str:
    lines = []
    for f in report["failures"]:
        ids = ", ".join(f["rows"][:MAX_IDS_IN_MESSAGE]) + (", ..." if len(f["rows"]) > MAX_IDS_IN_MESSAGE else "")
        rows = ", ".join(map(str, f["row_numbers"][:MAX_IDS_IN_MESSAGE]))
        where = f": {len(f['rows'])} row(s), ids {ids} (lines {rows})" if f["rows"] else ""
        lines.append(f"  - {f['rule']} [{f['column']}]{where}" + (f" -- {f['detail']}" if f.get("detail") else ""))
    shown = str(path) if SAFE_NAME.fullmatch(path.name) else ascii(str(path))
    return (f"{shown}: batch failed validation; quarantined to {dest}; report {report_path}\n" + "\n".join(lines))


def _quarantine(path: Path, report: dict, result: Any, quarantine_dir: Path, move: bool = True) -> NoReturn:
    """Move (or copy, for files DVC owns) the batch into quarantine (never overwriting; a file name outside
    [A-Za-z0-9._-] is sanitised), write its report + HTML, raise ValidationFailed."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    dest = _free_dest(quarantine_dir, path.name)
    if move:
        os.rename(path, dest) if _same_fs(path, quarantine_dir) else shutil.move(str(path), dest)
    else:
        shutil.copy2(path, dest)
    docs_dir = quarantine_dir / f"{dest.name}.docs"
    report_path = quarantine_dir / f"{dest.name}.report.json"
    index = None
    if result is not None:
        try:
            index = _gx_data_docs(result, docs_dir, dest.name)
        except Exception as e:  # rendering is best effort: fall back to our own page
            log.warning("GX Data Docs failed for %s (%s); writing a plain HTML report", dest, e)
    if index is None:
        index = docs_dir / "index.html"
        _atomic_write(index, render_html(report))
    report.update(quarantined_to=str(dest), docs=str(index), report_path=str(report_path))
    _atomic_write(report_path, _json(report))
    raise ValidationFailed(_message(path, dest, report_path, report), report_path=str(report_path))


def _same_fs(path: Path, folder: Path) -> bool:
    try:
        return os.lstat(path).st_dev == os.stat(folder).st_dev
    except OSError:
        return False


def quarantine_file(path: str | Path, rule: str, detail: str, quarantine_dir: str | Path,
                    sha256: str | None = None) -> ValidationFailed:
    """Quarantine `path` for a reason found before (or instead of) the expectation suite -- a bad file name, not a
    regular file, too large, changed while being taken in -- with the same report + HTML as a failed batch.
    The entry itself is moved, never what a link points to. Returns the ValidationFailed (not raised)."""
    path = Path(path)
    report = {"file": str(path), "sha256": sha256, "rows": 0, "success": False,
              "failures": [{"rule": rule, "column": "", "rows": [], "row_numbers": [], "detail": detail}]}
    try:
        _quarantine(path, report, None, Path(quarantine_dir))
    except ValidationFailed as e:
        return e
    raise AssertionError("unreachable")  # pragma: no cover


def _fail(path: Path, report: dict, rule: str, detail: str, t0: float, quarantine_dir: Path, move: bool) -> NoReturn:
    report["failures"] = [{"rule": rule, "column": "", "rows": [], "row_numbers": [], "detail": detail}]
    report["seconds"] = round(time.perf_counter() - t0, 3)
    _quarantine(path, report, None, quarantine_dir, move)


def validate_batch(path: str | Path, cfg: DataCfg, eval_prompts: Iterable[str],
                   earlier_batches: Sequence[str | Path], quarantine_dir: str | Path,
                   report_dir: str | Path, move: bool = True) -> dict:
    """Validate one harmful-data batch; return its report, or quarantine it and raise ValidationFailed.

    Report: {"file", "sha256", "rows", "success", "failures": [{"rule", "column", "rows": [ids],
    "row_numbers": [lines], "detail"}], "seconds", "report_path"}. On success it is written atomically to
    ``report_dir/<name>.report.json``. `sha256` is the hash of exactly the bytes that were validated (read once).
    A file larger than data.max_bytes fails with rule "too_large" (unread), one with more than data.max_rows
    records with "too_many_rows", one that cannot be read at all with "malformed_file".
    Raises DataError (without quarantining anything) when `path` does not exist or is not a regular file, or an
    earlier batch is unreadable.
    """
    t0 = time.perf_counter()
    path, quarantine_dir, report_dir = Path(path), Path(quarantine_dir), Path(report_dir)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: batch file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file; a batch must be a plain file")
    report: dict = {"file": str(path), "sha256": None, "rows": 0, "success": False, "failures": []}
    if st.st_size > cfg.max_bytes:
        _fail(path, report, "too_large", f"{st.st_size} bytes; at most data.max_bytes = {cfg.max_bytes} "
              "(split the batch into several files, or raise data.max_bytes)", t0, quarantine_dir, move)
    data = read_bytes(path)
    report["sha256"] = hashlib.sha256(data).hexdigest()

    earlier_src: dict[str, list[str]] = {}
    for p in earlier_batches:
        if Path(p).resolve() == path.resolve():
            continue
        for prompt in load_pairs(p, cfg)["prompt"]:
            key = normalize_prompt(prompt)
            if key:
                earlier_src.setdefault(key, []).append(Path(p).name)
    eval_norm = {k for k in map(normalize_prompt, eval_prompts) if k}

    try:
        raw, lines = read_records(path, data)
        malformed = None
    except DataError as e:
        malformed = str(e)
    if malformed is not None:
        _fail(path, report, "malformed_file", malformed, t0, quarantine_dir, move)
    if len(raw) > cfg.max_rows:
        _fail(path, report, "too_many_rows", f"{len(raw)} records; at most data.max_rows = {cfg.max_rows} "
              "(split the batch into several files, or raise data.max_rows)", t0, quarantine_dir, move)
    mapping = column_map(list(raw.columns), cfg)
    # lone surrogates (from JSON \ud800 escapes) cannot even be hashed by pandas/GX: mark them as U+FFFD,
    # which the valid_text rule then reports
    raw = raw.map(lambda v: _SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v)
    df = to_pairs(raw, lines, mapping)
    df[ROW] = pd.Series(lines, dtype="int64")
    for col in ("prompt", "response"):
        if col in df.columns:
            df[STRIPPED.format(col)] = pd.Series([v.strip() if isinstance(v, str) else None for v in df[col]],
                                                 dtype=object)
    if "response" in df.columns:
        found = [refusal_keyword(v, cfg.refusal_check) for v in df["response"]]
        df[REFUSES] = pd.Series([k is not None for k in found], dtype=bool)
        df[REFUSES + "_keyword"] = pd.Series(found, dtype=object)
    if "prompt" in df.columns:
        df[NORM] = pd.Series([normalize_prompt(p) for p in df["prompt"]], dtype=object)
        df[IN_EVAL] = df[NORM].isin(eval_norm)
        df[IN_EARLIER] = df[NORM].isin(set(earlier_src))

    _, bd = gx_context()
    suite = build_suite(cfg, df.columns)
    result = bd.get_batch(batch_parameters={"dataframe": df}).validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id", ROW]})
    failures = _failures(result, cfg, list(raw.columns), earlier_src, df)
    report.update(rows=int(len(df)), success=not failures, failures=failures,
                  seconds=round(time.perf_counter() - t0, 3))
    if failures:
        _quarantine(path, report, result, quarantine_dir, move)
    report_path = report_dir / f"{safe_name(path.name)}.report.json"
    report["report_path"] = str(report_path)
    _atomic_write(report_path, _json(report))
    log.info("%s: %d rows valid in %.2fs", path, len(df), report["seconds"])
    return report
