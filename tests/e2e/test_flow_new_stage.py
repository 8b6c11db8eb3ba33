"""A new in-round stage is its step + stage file + dvc.yaml entry, and the flow runs it (slow: `pytest -m slow`).

A copy of the small flow workspace (r1 built and registered) gets a stage `tally` that no other stage depends on:
a round step (round/steps/tally.py), its stage file (stages/tally.py) and a `foreach: ${rounds}` entry in dvc.yaml,
nothing else (no flow edit). The real entry point (`python -m flows.continual`) must run `tally@r1`, and only it:
r1's other stages are up to date.
"""

from __future__ import annotations

import json

import pytest
import yaml

from .flowspace import copy_workspace, run_flow

pytestmark = pytest.mark.slow

STEP = '''"""Round step: count the round's batch pairs (a stage the flow must find by itself)."""

import json

from ._pairs import pairs


def tally(params, layout, log=print) -> dict:
    out = {"round": layout.name, "pairs": len(pairs(params, layout))}
    (layout.dir / "tally.json").write_text(json.dumps(out))
    log(f"{layout.name}: tally {out}")
    return out
'''

STAGE = '''"""DVC stage `tally`: count one round's batch pairs."""

from stages._cli import end_process, log, parser, round_run

from safepatching.round.steps.tally import tally


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: tally(params, layout, log=log), parser(__doc__, round=True), argv)


if __name__ == "__main__":
    end_process(main())
'''


def test_a_new_in_round_stage_runs_under_the_flow_with_no_flow_edit(flow_template, prefect_api, tmp_path):
    root = copy_workspace(flow_template, tmp_path / "ws")
    (root / "src/safepatching/round/steps/tally.py").write_text(STEP)
    (root / "stages/tally.py").write_text(STAGE)
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc["stages"]["tally"] = {"foreach": "${rounds}", "do": {
        "cmd": "python -m stages.tally --round ${key}",
        "deps": ["stages/tally.py", "stages/_cli.py", "src/safepatching/round/steps", "${item.batch}"],
        "outs": [{"artifacts/${key}/tally.json": {"cache": False}}]}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))

    res = run_flow(root, prefect_api)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Running stage 'tally@r1'" in out, out[-4000:]
    rows = sum(1 for line in (root / "data/world/batches/weapons.jsonl").read_text().splitlines() if line.strip())
    assert json.loads((root / "artifacts/r1/tally.json").read_text()) == {"round": "r1", "pairs": rows}
    for done in ("validate@r1", "train_se@r1", "train_om@r1", "importance@r1", "select@r1", "merge@r1", "evaluate@r1"):
        assert f"Running stage '{done}'" not in out, f"{done} re-ran: only the new stage was out of date"
    assert "tally@r1" in yaml.safe_load((root / "dvc.lock").read_text())["stages"]
