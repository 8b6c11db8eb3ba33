"""The hostile corpus through the whole flow (slow: `pytest -m slow`).

Every kind of hostile entry of tests/ops/test_intake.py (bad and YAML-hostile names, links, a directory and a FIFO named
*.jsonl, JSON nested too deep, huge integers, whitespace-only text, refusal responses, eval leakage, size caps, uploads
in progress, other suffixes), a replay of an earlier batch, markup in ids and categories, a file still being copied
without a `.done` marker, links to a file, a FIFO and a directory outside the workspace, and one good batch are
dropped into data/incoming/ of a small workspace; the real entry point (`python -m flows.continual`) runs once.
Asserted: exit 3 (ATTENTION), each hostile file quarantined with its rule in the output and in its report (or left
where it is with its log line), params.yaml loads and `dvc status` works, the good batch became round r2 and is
registered, and nothing outside the workspace was read or copied.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
import yaml

from ..ops.test_intake import HOSTILE, good_rows, write_rows
from .flowspace import FLOW, copy_workspace, registry, run_flow, sh

pytestmark = pytest.mark.slow

MARKER = "OUTSIDE-SECRET-7f3a9c"
XSS_ID, XSS_CATEGORY = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"


def _outside(tmp_path: Path) -> dict[str, Path]:
    """A file (with a marker no workspace file may ever hold), a FIFO (reading it would block the run) and a
    directory, all outside the workspace."""
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    rows = [{"id": f"s{i}", "prompt": f"How do I {MARKER} thing {i}?", "response": "Step 1: obtain [restricted item].",
             "category": "weapons"} for i in range(30)]
    write_rows(out / "secret.jsonl", rows)
    write_rows(out / "dir" / "inner.jsonl", rows)
    os.mkfifo(out / "pipe.jsonl")
    return {"out_file.jsonl": out / "secret.jsonl", "out_fifo.jsonl": out / "pipe.jsonl", "out_dir.jsonl": out / "dir"}


def _attention(err: str) -> dict[str, tuple[set[str], Path]]:
    """ATTENTION lines `QUARANTINED <ascii name> (<rules>): see <report>` -> {ascii name: (rules, report)}."""
    found = {}
    for m in re.finditer(r"^  QUARANTINED (.+) \(([^()]*)\): see (.+)$", err, re.M):
        found[m.group(1)] = (set(m.group(2).split(",")), Path(m.group(3)))
    return found


def _holds_marker(root: Path) -> list[str]:
    hits = []
    for d, dirs, names in os.walk(root, followlinks=False):
        for n in names:
            p = Path(d) / n
            if p.is_symlink() or not p.is_file():
                continue
            if MARKER.encode() in p.read_bytes():
                hits.append(str(p.relative_to(root)))
    return hits


def test_hostile_corpus_through_the_flow(flow_template, prefect_api, tmp_path):
    from safepatching.config import load_params
    from safepatching.layout import Project

    root = copy_workspace(flow_template, tmp_path / "ws")
    proj = Project(root)
    max_bytes, max_rows = FLOW["data"]["max_bytes"], FLOW["data"]["max_rows"]
    expected: dict[str, tuple[str, str]] = {}  # name -> (outcome, rule or log needle)
    for case, (name, build, outcome, needle, data) in HOSTILE.items():
        if case == "too_many_bytes":  # the caps are this workspace's, not the unit test's
            violence = (proj.world / "batches/violence.jsonl").read_bytes()
            (proj.incoming / name).write_bytes(violence * (max_bytes // len(violence) + 1))
        elif case == "too_many_rows":
            rows = good_rows(proj, "violence")
            many = [dict(r, id=f"{r.get('id', i)}-{k}", prompt=f"{r['prompt']} ({k})")
                    for k in range(max_rows // len(rows) + 1) for i, r in enumerate(rows)]
            assert len(many) > max_rows
            write_rows(proj.incoming / name, many)
            assert (proj.incoming / name).stat().st_size < max_bytes
        else:
            assert not data, case
            build(proj, name)
        expected[name] = (outcome, needle)
    # beyond the unit corpus: a replay of r1's batch, markup in ids and categories, an upload still being written
    write_rows(proj.incoming / "replay.jsonl", good_rows(proj, "weapons"))
    expected["replay.jsonl"] = ("quarantined", "earlier_duplicate")
    rows = good_rows(proj, "violence")
    rows[2].update(id=XSS_ID, category=XSS_CATEGORY)
    write_rows(proj.incoming / "markup.jsonl", rows)
    expected["markup.jsonl"] = ("quarantined", "allowed_category")
    growing = write_rows(proj.incoming / "growing.jsonl", good_rows(proj, "fraud")[:10])
    expected["growing.jsonl"] = ("waiting", "still being written")
    stop = threading.Event()

    def keep_writing() -> None:  # a plain `cp` that is still copying: no .done marker, the size keeps changing
        extra = good_rows(proj, "fraud")[10:]
        while not stop.wait(0.2):
            with growing.open("a") as f:
                f.write(json.dumps(extra[0]) + "\n")
    writer = threading.Thread(target=keep_writing, daemon=True)

    targets = _outside(tmp_path)
    for name, target in targets.items():
        os.symlink(target, proj.incoming / name)
        expected[name] = ("quarantined", "not_regular_file")
    good = (proj.world / "batches/drugs.jsonl").read_bytes()
    (proj.incoming / "good.jsonl").write_bytes(good)
    (proj.incoming / "good.jsonl.done").touch()
    n_quarantined = sum(o == "quarantined" for o, _ in expected.values())
    assert n_quarantined >= 25

    writer.start()
    try:
        res = run_flow(root, prefect_api, timeout=900)  # a followed FIFO link would block here until the timeout
    finally:
        stop.set()
        writer.join()
    out = res.stdout + res.stderr
    assert res.returncode == 3, f"exit {res.returncode}\n{out[-5000:]}"
    assert "ATTENTION (exit 3)" in res.stderr
    attention, reports = _attention(res.stderr), {}
    for name, (outcome, needle) in expected.items():
        if outcome == "quarantined":
            assert ascii(name) in attention, f"{name!r} not in the ATTENTION lines:\n{res.stderr[-5000:]}"
            rules, report = attention[ascii(name)]
            assert needle in rules, (name, rules)
            assert not os.path.lexists(proj.incoming / name)
            rep = json.loads(report.read_text())
            assert report.parent == proj.quarantine and needle in {f["rule"] for f in rep["failures"]}, rep
            reports[name] = rep
        else:
            assert os.path.lexists(proj.incoming / name), name  # ignored / waiting / a dotfile: left alone
            if needle:
                assert needle in out, (name, needle)
    assert len(attention) == n_quarantined
    docs = Path(reports["markup.jsonl"]["docs"])  # the HTML report page: the batch's values only ever escaped
    pages = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in docs.parent.rglob("*.html"))
    assert XSS_ID not in pages and XSS_CATEGORY not in pages and "&lt;script&gt;" in pages.replace("&amp;", "&")

    # the good batch is round r2, tracked and registered; params.yaml and DVC are intact
    params = load_params(root / "params.yaml")
    assert list(params.rounds) == ["r1", "r2"] and params.round("r2").batch == "data/batches/r2_good.jsonl"
    assert (root / "data/batches/r2_good.jsonl").read_bytes() == good
    assert sorted(p.name for p in proj.batches.iterdir()) == [".gitignore", "r2_good.jsonl", "r2_good.jsonl.dvc"] \
        or sorted(p.name for p in proj.batches.iterdir()) == ["r2_good.jsonl", "r2_good.jsonl.dvc"]
    assert yaml.safe_load((root / "params.yaml").read_text())["rounds"]["r2"]["parent"] == "r1"
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], root).stdout
    versions = [v for v in registry(root).versions() if v.round == "r2"]
    assert len(versions) == 1 and "r2: MLflow version 2 (new" in out

    # nothing outside the workspace was read or copied: the links were moved as links, their targets untouched
    assert _holds_marker(root) == []
    for name, target in targets.items():
        moved = Path(reports[name]["quarantined_to"])
        assert moved.is_symlink() and os.readlink(moved) == str(target) and moved.parent == proj.quarantine
    assert (tmp_path / "outside/secret.jsonl").read_text().count(MARKER) == 30
    assert (tmp_path / "outside/pipe.jsonl").is_fifo()
