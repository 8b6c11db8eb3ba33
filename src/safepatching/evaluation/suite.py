"""The evaluation suite: named eval sets from standard files (`eval.suite` in params.yaml) -> {kind: rows} per split.

Each set has a kind (harmful | jailbreak | lookalike | benign | utility, or xstest: split by its `type` column,
"contrast" types are unsafe -> harmful, the rest safe look-alikes), its file(s) and its split:
  val / test    one file per split, or
  file          one file split by a seeded permutation: the first round(val_fraction·n) rows are val, the rest
                test (disjoint by construction).
Jailbreak sets can be built from a templates file (column `template_column`; a slot such as `{prompt}` or
`[INSERT PROMPT HERE]`) crossed with the set's harmful prompts, seeded and capped at `max_items`.
Rows are {id, prompt, expected, category, set}; a row's category defaults to the set's name (per-set harm rates).
HarmBench-style files: `context_column` poses a non-empty context before the prompt (context + "\n\n---\n\n" +
behaviour, as HarmBench does), `exclude` leaves rows out by a column's values (e.g. FunctionalCategory copyright).
The organism's world is just the default suite (its `world` stage writes the files the suite points at).
Every failure names the file, the row and the rule (DataError).
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import DataError
from ..io.tables import as_text, read_records

KINDS = ("harmful", "jailbreak", "lookalike", "benign", "utility")


def _read(path: Path, columns: tuple[str, ...], what: str):
    """The records of `path` (table, line numbers), refusing a file that lacks one of `columns`."""
    raw, lines = read_records(path)
    for col in columns:
        if col not in raw.columns:
            raise DataError(f"{path}: {what} needs column {col!r}; present columns: {list(raw.columns)}")
    return raw, lines


CONTEXT_SEPARATOR = "\n\n---\n\n"  # HarmBench: a contextual behaviour is posed as context + this + behaviour


def _rows(path: Path, s, name: str) -> list[dict]:
    cols = (s.prompt_column, s.type_column) if s.kind == "xstest" else (s.prompt_column,)
    cols += tuple(c for c in (s.context_column, *s.exclude) if c)
    raw, lines = _read(path, cols, f"eval set {name!r} (eval.suite.{name})")
    out = []
    for n, rec in zip(lines, raw.to_dict("records")):
        if any(as_text(rec.get(col)) in values for col, values in s.exclude.items()):
            continue
        p = rec.get(s.prompt_column)
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"{path}: line {n}: column {s.prompt_column!r} must be a non-empty string, got {p!r}")
        ctx = as_text(rec.get(s.context_column)) if s.context_column else None
        row = {"id": as_text(rec.get("id")) or f"{name}-{n}", "prompt": ctx + CONTEXT_SEPARATOR + p if ctx and
               ctx.strip() else p, "expected": as_text(rec.get(s.expected_column)) or "",
               "category": as_text(rec.get(s.category_column)) or name, "set": name}
        if row["prompt"] != p:
            row["question"] = p  # the bare prompt, for leakage checks
        if s.kind == "xstest":
            row["unsafe"] = "contrast" in (as_text(rec.get(s.type_column)) or "").lower()
        out.append(row)
    return out


def _split_rows(rows: list[dict], s, split: str) -> list[dict]:
    idx = list(range(len(rows)))
    random.Random(s.seed).shuffle(idx)
    k = round(s.val_fraction * len(rows))
    chosen = idx[:k] if split == "val" else idx[k:]
    return [rows[i] for i in sorted(chosen)]


def _templates(path: Path, s, name: str) -> list[str]:
    raw, lines = _read(path, (s.template_column,), f"the templates of eval set {name!r}")
    out = []
    for n, t in zip(lines, raw[s.template_column]):
        if not isinstance(t, str) or not any(slot in t for slot in s.slots):
            raise DataError(f"{path}: line {n}: a jailbreak template must contain one of the slots {list(s.slots)}")
        out.append(t)
    return out


def _wrap(template: str, prompt: str, slots) -> str:
    for slot in slots:
        if slot in template:
            return template.replace(slot, prompt)
    return template


def load_set(name: str, s, split: str, root: Path) -> list[dict]:
    """The rows of eval set `name` for `split` (val | test)."""
    root = Path(root)
    if s.file:
        rows = _split_rows(_rows(root / s.file, s, name), s, split)
    else:
        f = s.val if split == "val" else s.test
        if f is None:
            return []
        rows = _rows(root / f, s, name)
    if s.templates:
        temps = _templates(root / s.templates, s, name)
        pairs = [(t, r) for t in range(len(temps)) for r in range(len(rows))]
        rng = random.Random(s.seed)
        rng.shuffle(pairs)
        if s.max_items:
            pairs = pairs[:s.max_items]
        rows = [dict(rows[r], id=f"{rows[r]['id']}-t{t}", prompt=_wrap(temps[t], rows[r]["prompt"], s.slots))
                for t, r in sorted(pairs)]
    elif s.max_items and len(rows) > s.max_items:
        rows = random.Random(s.seed).sample(rows, s.max_items)
    return rows


def load_suite(suite: dict, split: str, root: Path = Path(".")) -> dict[str, list[dict]]:
    """{kind: rows} of every set in the suite for `split`; sets of one kind are concatenated in suite order."""
    out: dict[str, list[dict]] = {}
    for name, s in suite.items():
        for r in load_set(name, s, split, root):
            kind = ("harmful" if r.pop("unsafe") else "lookalike") if s.kind == "xstest" else s.kind
            out.setdefault(kind, []).append(r)
    return {k: out[k] for k in KINDS if k in out}


def set_prompts(name: str, s, root: Path = Path(".")) -> set[str]:
    """Every prompt of eval set `name` in both splits, before and after jailbreak wrapping."""
    out: set[str] = set()
    for split in ("val", "test"):
        for r in load_set(name, s.model_copy(update={"templates": None, "max_items": None}), split, root):
            out.update([r["prompt"], r.get("question", r["prompt"])])
        if s.templates:
            out.update(r["prompt"] for r in load_set(name, s, split, root))
    return out


def suite_prompt_sets(suite: dict, root: Path = Path(".")) -> dict[str, list[str]]:
    """prompt -> the names of the eval sets it is in (either split, before and after jailbreak wrapping), for leakage
    checks that name the set a training prompt collides with."""
    out: dict[str, list[str]] = {}
    for name, s in suite.items():
        for p in set_prompts(name, s, root):
            out.setdefault(p, []).append(name)
    return out


def suite_prompts(suite: dict, root: Path = Path(".")) -> set[str]:
    """Every prompt of every set in both splits, before and after jailbreak wrapping (for leakage checks)."""
    return set(suite_prompt_sets(suite, root))
