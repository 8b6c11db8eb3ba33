"""Actions on a checked batch (batches.expectations.check_batch): quarantine a failed one, save a passed one's report.

Quarantine moves the batch (or copies it, for files DVC owns) into the quarantine folder, never overwriting (a name
outside [A-Za-z0-9._-] is sanitised), and writes beside it ``<name>.report.json`` and an HTML report
``<name>.docs/index.html``. The page is rendered here from the report alone: one self-contained file with no script,
style sheet, font or image from anywhere (it opens offline), every value from the batch HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ValidationFailed
from ..io.atomic import write_atomic
from .expectations import MAX_IDS_IN_MESSAGE, BatchReport

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
          "td,th{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}"
          "h1{color:#a00}code{white-space:pre-wrap}")


def safe_name(name: str) -> str:
    """`name` if it is a plain file name (letters, digits, . _ -; at most 128 characters; not starting with a dot or
    dash), else a sanitised version of it (every other character replaced by '_', cut to 128 characters)."""
    if SAFE_NAME.fullmatch(name):
        return name
    out = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    out = ("_" + out[1:] if out[:1] in (".", "-") else out) or "_"
    return out[-128:] if len(out) > 128 else out


def _json(obj: Any) -> str:
    def default(o: Any) -> Any:
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        return str(o)
    return json.dumps(obj, indent=2, default=default)


def save_report(report: BatchReport, report_dir: str | Path) -> dict:
    """Write a checked batch's report to ``report_dir/<name>.report.json`` (atomically); return it as a dict with
    its `report_path`."""
    out = report.as_dict()
    path = Path(report_dir) / f"{safe_name(Path(report.file).name)}.report.json"
    out["report_path"] = str(path)
    write_atomic(path, _json(out))
    return out


def render_html(report: dict) -> str:
    """The quarantine page: every failed rule with its detail and its rows (id, line, value), self-contained."""
    esc = html.escape
    parts = ["<!DOCTYPE html>",
             f"<html><head><meta charset='utf-8'><title>Validation report: {esc(report['file'])}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Validation FAILED: {esc(report['file'])}</h1>",
             f"<p>sha256 {esc(str(report['sha256']))} &middot; {int(report['rows'])} rows &middot; "
             f"{len(report['failures'])} rule(s) failed</p>"]
    for f in report["failures"]:
        column = f" (column {esc(f['column'])})" if f["column"] else ""
        parts.append(f"<h2>{esc(f['rule'])}{column}</h2><p>{esc(f.get('detail', ''))}</p>")
        if f["rows"]:
            values = f.get("values") or [""] * len(f["rows"])
            parts.append("<table><tr><th>id</th><th>line</th><th>value</th></tr>" + "".join(
                f"<tr><td>{esc(str(i))}</td><td>{int(n)}</td><td><code>{esc(str(v))}</code></td></tr>"
                for i, n, v in zip(f["rows"], f["row_numbers"], values)) + "</table>")
    return "\n".join(parts + ["</body></html>"])


def _free_dest(quarantine_dir: Path, name: str) -> Path:
    """A quarantine path for `name` (sanitised) that holds nothing yet: quarantine never overwrites."""
    base = safe_name(name)
    dest = quarantine_dir / base
    while os.path.lexists(dest) or (quarantine_dir / f"{dest.name}.report.json").exists():
        ts = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        root, ext = os.path.splitext(base)
        dest = quarantine_dir / f"{root}.{ts}{ext}"
    return dest


def _same_fs(path: Path, folder: Path) -> bool:
    try:
        return os.lstat(path).st_dev == os.stat(folder).st_dev
    except OSError:
        return False


def _message(path: Path, dest: Path, report_path: Path, report: dict) -> str:
    """The failure for a person: the file, then one line per rule with its rows (ids, lines) and detail."""
    lines = []
    for f in report["failures"]:
        ids = ", ".join(f["rows"][:MAX_IDS_IN_MESSAGE]) + (", ..." if len(f["rows"]) > MAX_IDS_IN_MESSAGE else "")
        rows = ", ".join(map(str, f["row_numbers"][:MAX_IDS_IN_MESSAGE]))
        where = f": {len(f['rows'])} row(s), ids {ids} (lines {rows})" if f["rows"] else ""
        lines.append(f"  - {f['rule']} [{f['column']}]{where}" + (f" -- {f['detail']}" if f.get("detail") else ""))
    shown = str(path) if SAFE_NAME.fullmatch(path.name) else ascii(str(path))
    return f"{shown}: batch failed validation; quarantined to {dest}; report {report_path}\n" + "\n".join(lines)


def quarantine(path: str | Path, report: BatchReport, quarantine_dir: str | Path, *,
               move: bool = True) -> ValidationFailed:
    """Move (`move=False`: copy, for files DVC owns) the batch into `quarantine_dir` and write its report + HTML
    page. The entry itself is moved, never what a link points to. Returns the ValidationFailed (not raised)."""
    path, quarantine_dir = Path(path), Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    dest = _free_dest(quarantine_dir, path.name)
    if not move:
        shutil.copy2(path, dest)
    elif _same_fs(path, quarantine_dir):
        os.rename(path, dest)
    else:
        shutil.move(str(path), dest)
    out = report.as_dict()
    index = quarantine_dir / f"{dest.name}.docs" / "index.html"
    report_path = quarantine_dir / f"{dest.name}.report.json"
    write_atomic(index, render_html(out), errors="backslashreplace")
    out.update(quarantined_to=str(dest), docs=str(index), report_path=str(report_path))
    write_atomic(report_path, _json(out))
    return ValidationFailed(_message(path, dest, report_path, out), report_path=str(report_path))


def quarantine_file(path: str | Path, rule: str, detail: str, quarantine_dir: str | Path,
                    sha256: str | None = None) -> ValidationFailed:
    """Quarantine `path` for a reason found before (or instead of) the expectations -- a bad file name, not a
    regular file, changed while being taken in -- with the same report + HTML as a failed batch."""
    report = BatchReport(file=str(Path(path)), sha256=sha256, failures=[
        {"rule": rule, "column": "", "rows": [], "row_numbers": [], "values": [], "detail": detail}])
    return quarantine(path, report, quarantine_dir)
