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


# columns of published files that hold a prompt / a response, for the suggestion of a missing-column message
_PROMPT_LIKE = ("goal", "behavior", "Behavior", "prompt", "question", "instruction", "objective", "query")
_RESPONSE_LIKE = ("target", "response", "completion", "output", "answer", "assistant_response", "target_response")


def missing_columns(columns: list[str], cfg: DataCfg) -> str | None:
    """What is missing when the file's `columns` do not map to prompt and response (None when they do): names the
    mapping keys, the AdvBench preset, and the data: settings that would read this file (e.g. `behavior,target`:
    data.prompt_column: behavior, data.response_column: target)."""
    mapping = column_map(columns, cfg)
    missing = [c for c in ("prompt", "response") if mapping[c] is None]
    if not missing:
        return None
    guess = {"prompt": next((c for c in _PROMPT_LIKE if c in columns), None),
             "response": next((c for c in _RESPONSE_LIKE if c in columns), None)}
    hint = ", ".join(f"data.{c}_column: {guess[c]}" for c in missing if guess[c])
    return (f"missing required column(s) {[getattr(cfg, f'{c}_column') for c in missing]} "
            f"(data.{' / data.'.join(f'{c}_column' for c in missing)}); present columns: {columns}. "
            "Map the file's columns with data.prompt_column / data.response_column (and data.id_column, "
            "data.category_column)" + (f", here: {hint}" if hint else "") +
            "; the AdvBench preset reads goal,target without a mapping")


def load_pairs(path: str | Path, cfg: DataCfg | None = None) -> pd.DataFrame:
    """Load a harmful-data file into a DataFrame with columns id, prompt, response, category.

    Raises DataError for a malformed file or when the prompt/response columns are missing.
    """
    cfg = cfg or DataCfg()
    raw, lines = read_records(path)
    missing = missing_columns(list(raw.columns), cfg)
    if missing:
        raise DataError(f"{path}: {missing}")
    return to_pairs(raw, lines, column_map(list(raw.columns), cfg))
