"""Great Expectations (1.x) checks of one harmful-data batch: `check_batch(...) -> BatchReport`, pure (it reads the
batch and the comparison sets; it moves nothing and writes nothing -- quarantine and the HTML report are
batches.quarantine's actions on a failed report).

One ephemeral GX context (analytics and progress bars off) is created lazily and reused for the whole
process; importing great_expectations costs ~3 s once, after that a batch validates in ~0.1 s.

The expectation suite is built in code from :class:`~safepatching.config.DataCfg`. Membership in the
comparison sets (evaluation prompts, earlier batches) is precomputed into boolean helper columns that the
suite then expects to be False: GX re-serialises an expectation's kwargs many times per run, so a value
set of thousands of prompts made each batch ~4x slower. Each expectation carries ``meta={"rule", "column"}``
so that a failure maps back to a named rule and the failing rows (ids and 1-based line numbers).

A file that cannot be read at all fails with rule ``malformed_file``, one over the caps with ``too_large`` /
``too_many_rows``; each failure names its rule, column, rows (ids and 1-based lines), the offending values and a
detail (the value not allowed, the character not allowed, ...).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import stat
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import DataCfg
from ..errors import DataError
from ..io.tables import read_bytes, read_records
from ..refusals import refusal_keyword
from .loading import column_map, load_pairs, missing_columns, to_pairs

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
    if cfg.allowed_categories:  # empty: any category
        add("allowed_category", "category", gxe.ExpectColumnValuesToBeInSet,
            value_set=[*cfg.allowed_categories, ""])
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


def _shown(value: Any) -> str:
    """A batch value fit for a message: its repr (control characters visible), cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad_chars(values: Iterable[Any]) -> list[str]:
    """The characters the valid_text rule refuses, as `U+0007 '\\x07'`, each once, in order of appearance."""
    found = dict.fromkeys(c for v in values if isinstance(v, str) for c in re.findall(BAD_TEXT, v))
    return [f"U+{ord(c):04X} {c!r}" for c in found]


def _failures(res: Any, cfg: DataCfg, present: list[str], earlier_src: dict[str, list[str]],
              df: pd.DataFrame, eval_src: Mapping[str, Sequence[str]]) -> list[dict]:
    out = []
    by_row = df.set_index(ROW)
    for r in res.results:
        if r.success:
            continue
        meta = r.expectation_config.meta or {}
        rule, column = meta.get("rule", r.expectation_config.type), meta.get("column", "")
        idx = r.result.get("unexpected_index_list") or []
        ids = [str(d["id"]) for d in idx if isinstance(d, dict)]
        rows = [int(d[ROW]) for d in idx if isinstance(d, dict)]
        shown_col = ("prompt" if column in (NORM, IN_EVAL, IN_EARLIER) else "response" if column == REFUSES else
                     column.removesuffix("_stripped"))
        raw = [by_row.at[n, shown_col] for n in rows] if shown_col in by_row.columns else []
        detail = _exception_message(r) or ""
        if rule == "required_column":
            detail = missing_columns(present, cfg) or f"column {column!r} not found; present columns: {present}"
        elif rule == "earlier_duplicate":
            keys = set(df.loc[df[ROW].isin(rows), NORM])
            detail = "also in earlier batch(es): " + ", ".join(sorted({s for k in keys for s in earlier_src.get(k, [])}))
        elif rule == "eval_leakage":
            hits = [f"line {n}: {_shown(by_row.at[n, 'prompt'])} (eval set "
                    f"{', '.join(eval_src.get(by_row.at[n, NORM], ['?']))})" for n in rows]
            detail = (f"prompt(s) also in the evaluation suite: {'; '.join(hits[:MAX_IDS_IN_MESSAGE])}"
                      f"{'; ...' if len(hits) > MAX_IDS_IN_MESSAGE else ''} (case, whitespace and punctuation "
                      "ignored); drop them from the batch or from the eval file")
        elif rule == "length":
            detail = f"length without leading/trailing whitespace must be {cfg.min_chars}..{cfg.max_chars} characters"
        elif rule == "refusal_response":
            phrase = dict(zip(df[ROW], df[REFUSES + "_keyword"]))
            found = [f"line {n} (id {i}): {phrase[n]!r}" for n, i in zip(rows, ids)]
            detail = (f"the response refuses ({'; '.join(found[:MAX_IDS_IN_MESSAGE])}"
                      f"{'; ...' if len(found) > MAX_IDS_IN_MESSAGE else ''}; refusal phrases: safepatching.refusals, "
                      f"data.refusal_check: {cfg.refusal_check}): gradient ascent on a refusal would unlearn refusing. "
                      "Responses must be the harmful completions to unlearn; drop or replace these rows"
                      + ("; data.refusal_check: opening matches only at a response's opening"
                         if cfg.refusal_check == "anywhere" else ""))
        elif rule == "allowed_category":
            bad = list(dict.fromkeys(map(_shown, raw)))
            detail = (f"value(s) {', '.join(bad[:MAX_IDS_IN_MESSAGE])}{', ...' if len(bad) > MAX_IDS_IN_MESSAGE else ''}"
                      f" not allowed; allowed: {list(cfg.allowed_categories)} or empty")
        elif rule == "valid_text":
            detail = (f"character(s) not allowed: {', '.join(_bad_chars(raw)[:MAX_IDS_IN_MESSAGE])} (control "
                      "characters other than tab and newline, DEL, U+FFFD: undecodable bytes or a lone surrogate)")
        out.append({"rule": rule, "column": shown_col, "rows": ids, "row_numbers": rows,
                    "values": [_shown(v) for v in raw], "detail": detail})
    return out


@dataclass
class BatchReport:
    """The result of checking one batch. `sha256`: the hash of exactly the bytes that were checked (None when the
    file was too large to read); `failures`: [{"rule", "column", "rows": [ids], "row_numbers": [lines],
    "values": [the offending values, shown], "detail"}]."""

    file: str
    sha256: str | None = None
    rows: int = 0
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "rows": self.rows, "success": self.success,
                "failures": self.failures, "seconds": self.seconds}

    def content(self) -> dict:
        """What was checked and found, without the wall-clock time (the form a DVC output may hold)."""
        return {k: v for k, v in self.as_dict().items() if k != "seconds"}


def _whole_file(report: BatchReport, rule: str, detail: str, t0: float) -> BatchReport:
    report.failures = [{"rule": rule, "column": "", "rows": [], "row_numbers": [], "values": [], "detail": detail}]
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def check_batch(path: str | Path, cfg: DataCfg, eval_prompts: Iterable[str] | Mapping[str, Sequence[str]],
                earlier_batches: Sequence[str | Path]) -> BatchReport:
    """Check one harmful-data batch against its expectations; moves and writes nothing.

    `eval_prompts`: the evaluation prompts, or prompt -> the eval sets holding it (evaluation.suite.suite_prompt_sets;
    an eval_leakage failure then names the set).

    A file larger than data.max_bytes fails with rule "too_large" (unread), one with more than data.max_rows
    records with "too_many_rows", one that cannot be read at all with "malformed_file".
    Raises DataError when `path` does not exist or is not a regular file, or an earlier batch is unreadable.
    """
    t0 = time.perf_counter()
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: batch file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file; a batch must be a plain file")
    report = BatchReport(file=str(path))
    if st.st_size > cfg.max_bytes:
        return _whole_file(report, "too_large", f"{st.st_size} bytes; at most data.max_bytes = {cfg.max_bytes} "
                           "(split the batch into several files, or raise data.max_bytes)", t0)
    data = read_bytes(path)
    report.sha256 = hashlib.sha256(data).hexdigest()

    earlier_src: dict[str, list[str]] = {}
    for p in earlier_batches:
        if Path(p).resolve() == path.resolve():
            continue
        for prompt in load_pairs(p, cfg)["prompt"]:
            key = normalize_prompt(prompt)
            if key:
                earlier_src.setdefault(key, []).append(Path(p).name)
    eval_src: dict[str, list[str]] = {}
    for p in eval_prompts:
        k = normalize_prompt(p)
        if k:
            names = eval_prompts[p] if isinstance(eval_prompts, Mapping) else ["the evaluation suite"]
            eval_src.setdefault(k, []).extend(n for n in names if n not in eval_src[k])

    try:
        raw, lines = read_records(path, data)
    except DataError as e:
        return _whole_file(report, "malformed_file", str(e), t0)
    if len(raw) > cfg.max_rows:
        return _whole_file(report, "too_many_rows", f"{len(raw)} records; at most data.max_rows = {cfg.max_rows} "
                           "(split the batch into several files, or raise data.max_rows)", t0)
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
        df[IN_EVAL] = df[NORM].isin(set(eval_src))
        df[IN_EARLIER] = df[NORM].isin(set(earlier_src))

    _, bd = gx_context()
    suite = build_suite(cfg, df.columns)
    result = bd.get_batch(batch_parameters={"dataframe": df}).validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id", ROW]})
    report.failures = _failures(result, cfg, list(raw.columns), earlier_src, df, eval_src)
    report.rows = int(len(df))
    report.seconds = round(time.perf_counter() - t0, 3)
    if report.success:
        log.info("%s: %d rows valid in %.2fs", path, len(df), report.seconds)
    return report
