"""Judge calibration: score a configured judge against a human-labelled file, read as published.

    python -m safepatching.evaluation.calibrate --judge keyword --file judge_comparison.csv   # JailbreakBench
    python -m safepatching.evaluation.calibrate --judge keyword --file refusal.csv            # PyRIT (auto-detected)
    python -m safepatching.evaluation.calibrate --judge keyword --file mine.csv \\
        --columns prompt=question,response=answer,label=is_refusal --positive refusal

Presets (`--preset`, or detected from the header when neither --preset nor a full --columns is given):
  jailbreakbench  JailbreakBench's `judge_comparison.csv` (a leading unnamed index column, goal, prompt,
                  target_response, human1..3, human_majority, judge columns): the judge sees (goal, target_response)
                  as a harmful prompt; human_majority 1 = jailbroken; positive = the judge says `harmful`.
  pyrit           PyRIT's refusal-scorer dataset (`# dataset_version=...` comment line, then objective,
                  assistant_response, human_score, data_type): human_score 1 = a refusal *relative to the objective*
                  (an off-topic answer counts as a refusal); positive = the judge says `refusal`.
  refusal         prompt, response, label (1 = refusal); positive = the judge says `refusal`.
`--columns prompt=...,response=...,label=...` maps (or re-maps) the three columns; lines starting with `#` before the
header are skipped. Prints what the label means, then n, agreement, precision, recall, false-positive rate and the
confusion counts. A judge that reports unparsed verdicts (`guard`) has them counted; more than --max-unparsed of
them is an error. The judge's settings come from `eval.judges` of the params file (or its defaults).
Exit codes: 0 done, 2 an error (one line: file, row/column, rule, fix).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, SafePatchingError
from ..io.tables import read_records

ROLES = ("prompt", "response", "label")


@dataclass(frozen=True)
class Preset:
    prompt: str
    response: str
    label: str
    positive: str        # the judge label that counts as positive ("harmful" or "refusal")
    harmful_prompt: bool  # what the judge is told about the prompt
    meaning: str          # what label 1 means, printed with the numbers


PRESETS = {
    "jailbreakbench": Preset("goal", "target_response", "human_majority", "harmful", True,
                             "human_majority 1 = the response is jailbroken (harmful compliance, majority of three "
                             "annotators); positive = the judge says harmful"),
    "pyrit": Preset("objective", "assistant_response", "human_score", "refusal", False,
                    "human_score 1 = a refusal RELATIVE TO THE OBJECTIVE: an off-topic or evasive answer counts as a "
                    "refusal too, which a keyword judge cannot see (its misses there lower recall); positive = the "
                    "judge says refusal"),
    "refusal": Preset("prompt", "response", "label", "refusal", False,
                      "label 1 = the response is a refusal; positive = the judge says refusal"),
}
PRESETS["jbb"] = PRESETS["jailbreakbench"]  # the CLI's earlier --format name


@dataclass(frozen=True)
class Calibration:
    judge: str
    format: str
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    unparsed: int | None = field(default=None)  # judge replies that were no verdict (None: the judge cannot tell)

    @property
    def agreement(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "agreement": round(self.agreement, 4), "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "fpr": round(self.fpr, 4)}


def read_table(path: Path) -> tuple[list[str], list[dict], list[int]]:
    """(header, records, 1-based first line of each record) of a CSV as published: a UTF-8 BOM, leading `#` comment
    and blank lines, an unnamed (empty) index column and multi-line quoted fields are accepted. Other suffixes are
    read by io.tables (JSONL / JSON)."""
    if path.suffix.lower() != ".csv":
        raw, lines = read_records(path)
        return list(raw.columns), raw.to_dict("records"), lines
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix: pass --file an existing file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: byte {e.start}: not UTF-8; fix: save the file as UTF-8") from None
    lines_all = text.splitlines(keepends=True)
    skip = 0
    while skip < len(lines_all) and (not lines_all[skip].strip() or lines_all[skip].lstrip().startswith("#")):
        skip += 1
    reader = csv.reader(io.StringIO("".join(lines_all[skip:])))
    header: list[str] | None = None
    records, starts, prev = [], [], 0
    try:
        for row in reader:
            start, prev = skip + prev + 1, reader.line_num
            if header is None:
                header = [c.strip() for c in row]
                named = [c for c in header if c]
                dup = sorted({c for c in named if named.count(c) > 1})
                if dup or header.count("") > 1:
                    raise DataError(f"{path}: line {start}: header has duplicate column names {dup or ['', '']}; "
                                    "fix: name every column once")
                continue
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: line {start}: {len(row)} fields, but the header has {len(header)}; fix: "
                                "quote fields that contain commas or line breaks")
            records.append({k: (v if v != "" else None) for k, v in zip(header, row)})
            starts.append(start)
    except csv.Error as e:
        raise DataError(f"{path}: line {skip + reader.line_num}: malformed CSV ({e}); fix: quote fields with "
                        "\"...\" and double inner quotes") from None
    if header is None or not records:
        raise DataError(f"{path}: no header or no data rows")
    return header, records, starts


def parse_columns(spec: str | None) -> dict[str, str]:
    """`prompt=goal,response=target_response,label=human_majority` -> {role: column}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        role, sep, col = part.partition("=")
        if not sep or role.strip() not in ROLES or not col.strip():
            raise ConfigError(f"--columns {spec!r}: {part!r} is not ROLE=COLUMN with ROLE one of {list(ROLES)}; "
                              "fix: e.g. --columns prompt=goal,response=target_response,label=human_majority")
        out[role.strip()] = col.strip()
    return out


def detect_preset(header: list[str]) -> str | None:
    """The preset whose three columns the header has (None if none does)."""
    return next((n for n, p in PRESETS.items() if n != "jbb" and {p.prompt, p.response, p.label} <= set(header)),
                None)


def resolve(path: Path, header: list[str], preset: str | None, columns: dict[str, str],
            positive: str | None) -> tuple[str, Preset]:
    """The preset name and the effective column mapping / positive class for this file."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    name = preset or (detect_preset(header) if set(columns) != set(ROLES) else None)
    if name is None and set(columns) != set(ROLES):
        raise DataError(f"{path}: header {header} matches no preset ({', '.join(k for k in PRESETS if k != 'jbb')}); "
                        "fix: --preset NAME, or --columns prompt=...,response=...,label=... (and --positive)")
    base = PRESETS[name] if name else Preset("", "", "", "refusal", False, "")
    label, pos = columns.get("label", base.label), positive or base.positive
    meaning = (base.meaning if name and not columns and not positive else
               f"{label} 1 = the judge should say {pos}" + (f" (preset {name}: {base.meaning})" if name else ""))
    p = Preset(columns.get("prompt", base.prompt), columns.get("response", base.response), label, pos,
               base.harmful_prompt, meaning)
    missing = [c for c in (p.prompt, p.response, p.label) if c not in header]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; header: {header}; fix: --columns "
                        "prompt=...,response=...,label=... naming the file's columns")
    return name or "columns", p


def _truth(v, path: Path, line: int, col: str) -> bool:
    s = str(v).strip().lower() if v is not None else ""
    if s in ("1", "1.0", "true", "yes"):
        return True
    if s in ("0", "0.0", "false", "no"):
        return False
    raise DataError(f"{path}: line {line}: column {col!r} must be 0/1 (or true/false), got {v!r}; fix: correct the "
                    "label or --columns label=<the 0/1 column>")


def calibrate(judge, name: str, path: Path, preset: str | None = None, columns: dict[str, str] | None = None,
              positive: str | None = None, max_unparsed: float = 0.10) -> tuple[Calibration, Preset]:
    """Run `judge` (an object with .judge(...)) on a labelled file and count agreement with the human labels.
    A judge exposing `last_unparsed` (the indexes of replies that were no verdict) has them counted; a share above
    `max_unparsed` raises DataError."""
    path = Path(path)
    if positive is not None and positive not in ("harmful", "refusal"):
        raise ConfigError(f"--positive {positive!r}: use harmful or refusal")
    header, records, lines = read_table(path)
    fmt, p = resolve(path, header, preset, columns or {}, positive)
    prompts = ["" if r[p.prompt] is None else str(r[p.prompt]) for r in records]
    outputs = ["" if r[p.response] is None else str(r[p.response]) for r in records]
    truth = [_truth(r[p.label], path, n, p.label) for r, n in zip(records, lines)]
    labels = judge.judge(prompts, outputs, [""] * len(prompts), [p.harmful_prompt] * len(prompts))
    unparsed = getattr(judge, "last_unparsed", None)
    unparsed = None if unparsed is None else len(unparsed)
    if unparsed and unparsed > max_unparsed * len(truth):
        raise DataError(f"{path}: judge {name!r}: {unparsed} of {len(truth)} replies ({unparsed / len(truth):.0%}) are "
                        f"no verdict it can parse (over --max-unparsed {max_unparsed:.0%}); fix: check "
                        f"eval.judges.{name}.verdicts / template / max_new_tokens against the model's replies")
    pred = [lab == p.positive for lab in labels]
    tp = sum(a and t for a, t in zip(pred, truth))
    fp = sum(a and not t for a, t in zip(pred, truth))
    fn = sum(t and not a for a, t in zip(pred, truth))
    return Calibration(name, fmt, len(truth), tp, fp, len(truth) - tp - fp - fn, fn, unparsed), p


def _build_judge(name: str, params: str):
    """The judge `name` with its settings from the params file; a one-line error when they are incomplete."""
    from pydantic import ValidationError

    from ..config import load_params
    from .judge import get_judge

    judges = load_params(params).eval.judges if Path(params).exists() else {}
    try:
        return get_judge(name, judges.get(name))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        where = f"eval.judges.{name} in {params}" if Path(params).exists() else f"eval.judges.{name} (no {params})"
        raise ConfigError(f"judge {name!r}: settings incomplete ({errs}); fix: set them under {where}, or pass "
                          "--params a file that does") from None
    except (OSError, ValueError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"judge {name!r}: cannot be built ({first}); fix: check eval.judges.{name} "
                          "(model path or hub id, device)") from None


def main(argv: list[str] | None = None) -> int:
    from .. import envdefaults

    envdefaults.apply()
    ap = argparse.ArgumentParser(prog="python -m safepatching.evaluation.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--judge", required=True)
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--preset", "--format", dest="preset", choices=sorted(PRESETS),
                    help="the file's layout (default: detected from its header)")
    ap.add_argument("--columns", help="ROLE=COLUMN,... for the roles prompt, response, label")
    ap.add_argument("--positive", choices=("harmful", "refusal"), help="the judge label a label 1 stands for")
    ap.add_argument("--max-unparsed", type=float, default=0.10, help="largest share of unparsable judge replies")
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    a = ap.parse_args(argv)
    try:
        columns = parse_columns(a.columns)
        judge = _build_judge(a.judge, a.params)
        c, p = calibrate(judge, a.judge, a.file, a.preset, columns, a.positive, a.max_unparsed)
    except SafePatchingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"labels ({c.format}): {p.meaning}")
    print(f"judge {a.judge} on {a.file} ({c.format}, n={c.n}): agreement {c.agreement:.3f}  precision "
          f"{c.precision:.3f}  recall {c.recall:.3f}  FPR {c.fpr:.3f}  (tp {c.tp} fp {c.fp} tn {c.tn} fn {c.fn})"
          + ("" if c.unparsed is None else f"  unparsed {c.unparsed} (counted as not {p.positive})"))
    if a.out:
        a.out.write_text(json.dumps(c.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
