"""Loading users' harmful data: (prompt, response) pairs from JSONL / JSON / CSV files (`io.tables`).

Column names come from :class:`~safepatching.config.DataCfg`; the AdvBench preset (``goal,target``)
is recognised by itself when those columns exist and the configured prompt/response columns don't.

Every malformed input raises :class:`~safepatching.errors.DataError` naming the file, the 1-based
line (JSON lines, CSV) or element (JSON array) and the rule that was broken. "Row numbers" used
throughout are these same 1-based positions, so a report can point straight at the line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import DataCfg
from ..errors import DataError
from ..io.tables import as_text as _as_text, read_records

PAIR_COLUMNS = ("id", "prompt", "response", "category")
ADVBENCH_COLUMNS = {"prompt": "goal", "response": "target"}


def column_map(columns: list[str], cfg: DataCfg) -> dict[str, str | None]:
    """Map canonical names (id, prompt, response, category) to the file's columns (None when absent).

    The configured names win; the AdvBench preset (goal -> prompt, target -> response) applies only when
    both its columns exist and the configured prompt/response columns don't.
    """
    present = set(columns)
    wanted = {"id": cfg.id_column, "prompt": cfg.prompt_column, "response": cfg.response_column,
              "category": cfg.category_column}
    out: dict[str, str | None] = {k: (v if v in present else None) for k, v in wanted.items()}
    if out["prompt"] is None and out["response"] is None and set(ADVBENCH_COLUMNS.values()) <= present:
        out.update(ADVBENCH_COLUMNS)
    return out


def to_pairs(raw: pd.DataFrame, lines: list[int], mapping: dict[str, str | None]) -> pd.DataFrame:
    """Build the canonical pairs table from a raw table; prompt/response are left as found (for type checks).

    Missing ids become ``row-<n>`` (n = the record's line number); a missing category becomes "".
    A prompt/response column that the mapping lacks is left out (validation reports it).
    """
    out: dict[str, pd.Series] = {}
    src = mapping.get("id")
    ids = [_as_text(v) for v in raw[src]] if src else [None] * len(raw)
    out["id"] = pd.Series([i if i is not None else f"row-{n}" for i, n in zip(ids, lines)], dtype=object)
    for col in ("prompt", "response"):
        if mapping.get(col):
            out[col] = pd.Series(list(raw[mapping[col]]), dtype=object)
    src = mapping.get("category")
    cats = [_as_text(v) for v in raw[src]] if src else [None] * len(raw)
    out["category"] = pd.Series([c if c is not None else "" for c in cats], dtype=object)
    return pd.DataFrame(out)


def load_pairs(path: str | Path, cfg: DataCfg | None = None) -> pd.DataFrame:
    """Load a harmful-data file into a DataFrame with columns id, prompt, response, category.

    Raises DataError for a malformed file or when the prompt/response columns are missing.
    """
    cfg = cfg or DataCfg()
    raw, lines = read_records(path)
    mapping = column_map(list(raw.columns), cfg)
    missing = [getattr(cfg, f"{c}_column") for c in ("prompt", "response") if mapping[c] is None]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; present columns: {list(raw.columns)} "
                        f"(set data.prompt_column / data.response_column, or use AdvBench goal,target)")
    return to_pairs(raw, lines, mapping)
