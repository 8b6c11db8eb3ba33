"""Judge calibration: score a configured judge against a human-labelled file.

    python -m safepatching.evaluation.calibrate --judge keyword --file judge_comparison.csv            # JailbreakBench
    python -m safepatching.evaluation.calibrate --judge keyword --file refusals.csv --format refusal

Formats:
  jbb      JailbreakBench's judge-comparison CSV: goal, prompt, target_response, human_majority (1 = jailbroken);
           the judge sees (goal, target_response) as a harmful prompt; positive = it says `harmful`.
  refusal  prompt, response, label (1 = refusal); positive = the judge says `refusal`.
Prints n, agreement, precision, recall and false-positive rate (positive class as above) and the confusion counts.
The judge's settings come from `eval.judges` of the params file (or its defaults when it is not configured there).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DataError, SafePatchingError
from ..io.tables import read_records

FORMATS = {"jbb": ("goal", "target_response", "human_majority", "harmful", True),
           "refusal": ("prompt", "response", "label", "refusal", False)}


@dataclass(frozen=True)
class Calibration:
    judge: str
    format: str
    n: int
    tp: int
    fp: int
    tn: int
    fn: int

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


def _truth(v, path: Path, line: int, col: str) -> bool:
    s = str(v).strip().lower() if v is not None else ""
    if s in ("1", "1.0", "true", "yes"):
        return True
    if s in ("0", "0.0", "false", "no"):
        return False
    raise DataError(f"{path}: line {line}: column {col!r} must be 0/1 (or true/false), got {v!r}")


def calibrate(judge, name: str, path: Path, fmt: str = "jbb") -> Calibration:
    """Run `judge` (an object with .judge(...)) on a labelled file and count agreement with the human labels."""
    if fmt not in FORMATS:
        raise DataError(f"unknown calibration format {fmt!r}; known: {sorted(FORMATS)}")
    pcol, ocol, lcol, positive, harmful = FORMATS[fmt]
    raw, lines = read_records(path)
    missing = [c for c in (pcol, ocol, lcol) if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: a {fmt} calibration file needs columns {[pcol, ocol, lcol]}; missing {missing}")
    prompts = ["" if v is None else str(v) for v in raw[pcol]]
    outputs = ["" if v is None else str(v) for v in raw[ocol]]
    truth = [_truth(v, path, n, lcol) for v, n in zip(raw[lcol], lines)]
    labels = judge.judge(prompts, outputs, [""] * len(prompts), [harmful] * len(prompts))
    pred = [lab == positive for lab in labels]
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    return Calibration(name, fmt, len(truth), tp, fp, len(truth) - tp - fp - fn, fn)


def main(argv: list[str] | None = None) -> int:
    from .. import envdefaults

    envdefaults.apply()
    ap = argparse.ArgumentParser(prog="python -m safepatching.evaluation.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--judge", required=True)
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--format", default="jbb", choices=sorted(FORMATS))
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    a = ap.parse_args(argv)
    try:
        from ..config import load_params
        from .judge import get_judge

        judges = load_params(a.params).eval.judges if Path(a.params).exists() else {}
        judge = get_judge(a.judge, judges.get(a.judge))
        c = calibrate(judge, a.judge, a.file, a.format)
    except SafePatchingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = c.as_dict()
    print(f"judge {a.judge} on {a.file} ({a.format}, n={c.n}): agreement {c.agreement:.3f}  precision "
          f"{c.precision:.3f}  recall {c.recall:.3f}  FPR {c.fpr:.3f}  (tp {c.tp} fp {c.fp} tn {c.tn} fn {c.fn})")
    if a.out:
        a.out.write_text(json.dumps(d, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
