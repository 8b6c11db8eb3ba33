"""Intake through its real code path (`safepatching.ops.intake.intake`) on a small project: a hostile corpus of
incoming files, the upload protocol, the transaction journal and start-up reconciliation.

DVC is faked (`FakeDVC` writes `<file>.dvc` with the file's md5, as `dvc add` does); the slow crash tests in
tests/e2e/test_intake_crash.py run the same steps with the real `dvc add` and real kills.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

import safepatching.ops.intake.run as intake_mod
from safepatching.batches.expectations import gx_context
from safepatching.config import load_params
from safepatching.ops.intake import intake
from safepatching.ops.intake.paramsfile import append_round
from safepatching.layout import Project
from ..workspace import with_plain_rounds

ROOT = Path(__file__).resolve().parents[2]
EVAL_ROWS = 20  # a small eval split: the first rows of each organism eval file


@pytest.fixture(scope="module")
def template(world_dir, tmp_path_factory) -> Path:
    """A small project: params.yaml (the shipped file, rounds r1 weapons / r2 hacking, no stability wait), a small
    eval split, the organism's batches."""
    root = tmp_path_factory.mktemp("intake_template")
    for split in ("val", "test"):
        for f in sorted((world_dir / "eval" / split).glob("*.jsonl")):
            dest = root / "data/world/eval" / split / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text("".join(f.read_text().splitlines(keepends=True)[:EVAL_ROWS]))
    shutil.copytree(world_dir / "batches", root / "data/world/batches")
    text = (ROOT / "params.yaml").read_text()
    text = with_plain_rounds(text)
    assert "  stability_seconds: 0 " in text  # the shipped hand-over: marker or atomic rename, no wait
    (root / "params.yaml").write_text(text)
    assert list(load_params(root / "params.yaml").rounds) == ["r1", "r2"]
    (root / "data/incoming").mkdir(parents=True)
    gx_context()
    return root


@pytest.fixture
def proj(template, tmp_path) -> Project:
    root = tmp_path / "proj"
    shutil.copytree(template, root, symlinks=True)
    return Project(root)


class FakeDVC:
    """`dvc add` / `dvc checkout` stand-ins: a .dvc file with the md5 of what was added; a cache to restore from."""

    def __init__(self, project: Project):
        self.project, self.added, self.cache = project, [], {}

    def track(self, path: Path) -> None:
        data = path.read_bytes()
        md5 = hashlib.md5(data).hexdigest()
        self.cache[md5] = data
        path.with_name(path.name + ".dvc").write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": path.name}]}))
        self.added.append(os.path.relpath(path, self.project.root))

    def restore(self, path: Path) -> None:
        md5 = yaml.safe_load(path.with_name(path.name + ".dvc").read_text())["outs"][0]["md5"]
        path.write_bytes(self.cache[md5])


def run(proj: Project, dvc: FakeDVC | None = None, **kw):
    dvc = dvc or FakeDVC(proj)
    logs: list[str] = []
    kw.setdefault("restore", dvc.restore)
    res = intake(proj, proj.params, track=dvc.track, log=logs.append, **kw)
    return res, "\n".join(logs), dvc


def good_rows(proj: Project, cat: str = "drugs") -> list[dict]:
    return [json.loads(l) for l in (proj.world / "batches" / f"{cat}.jsonl").read_text().splitlines()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def set_data(proj: Project, **kw) -> None:
    text = proj.params.read_text()
    for k, v in kw.items():
        text, n = re.subn(rf"^(  {k}: )\S+", rf"\g<1>{v}", text, flags=re.M)
        assert n == 1, k
    proj.params.write_text(text)


def rounds(proj: Project) -> dict[str, str]:
    return {n: r.batch for n, r in load_params(proj.params).rounds.items()}


def assert_round(proj: Project, name: str, source: bytes) -> None:
    """Round `name` exists once, its batch holds exactly `source`, is tracked with the right md5, and the journal
    is closed."""
    batch = rounds(proj)[name]
    assert list(rounds(proj).values()).count(batch) == 1
    data = (proj.root / batch).read_bytes()
    assert data == source
    dvc = yaml.safe_load((proj.root / (batch + ".dvc")).read_text())
    assert dvc["outs"][0]["md5"] == hashlib.md5(source).hexdigest()
    assert not proj.intake_journal.exists()


def quarantined(proj: Project) -> list[str]:
    q = proj.quarantine
    return sorted(p.name for p in q.iterdir() if not p.name.endswith((".report.json", ".docs"))) if q.exists() else []


def report_of(res, name: str) -> dict:
    (q,) = [q for q in res.quarantined if q["file"] == name]
    return json.loads(Path(q["report"]).read_text())


# ---- the hostile corpus -------------------------------------------------------------------------------------

def _deep_line(depth: int) -> str:
    return '{"prompt": "How do I a b?", "response": ' + "[" * depth + "]" * depth + "}\n"


def _make(kind):
    """Builders: (proj, name) -> None, writing the hostile entry at data/incoming/<name>."""
    def good(proj, name):
        write_rows(proj.incoming / name, good_rows(proj, "violence"))

    def text(content: str | bytes):
        def f(proj, name):
            p = proj.incoming / name
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return f

    def mutate(fn):
        def f(proj, name):
            rows = good_rows(proj, "violence")
            fn(rows, proj)
            write_rows(proj.incoming / name, rows)
        return f

    def eval_prompt(proj):
        return json.loads((proj.eval_split("test") / "harmful.jsonl").read_text().splitlines()[0])["prompt"]

    def leak(rows, proj):
        rows[4]["prompt"] = eval_prompt(proj).rstrip("?.!").upper()  # final punctuation dropped, case changed

    def refusal(rows, proj):
        for r in rows[:3]:
            r["response"] = "I'm sorry, but I cannot help with that."

    def whitespace(rows, proj):
        rows[5]["prompt"] = " \t \n  "

    def symlink(proj, name):
        outside = proj.root / "outside-secret.jsonl"
        write_rows(outside, good_rows(proj, "violence"))
        os.symlink(outside, proj.incoming / name)

    def dirlink(proj, name):
        os.symlink(proj.world, proj.incoming / name)

    def fifo(proj, name):
        os.mkfifo(proj.incoming / name)

    def directory(proj, name):
        (proj.incoming / name).mkdir()
        write_rows(proj.incoming / name / "inner.jsonl", good_rows(proj, "violence"))

    return {"good": good, "text": text, "mutate": mutate, "leak": mutate(leak), "refusal": mutate(refusal),
            "whitespace": mutate(whitespace), "symlink": symlink, "dirlink": dirlink, "fifo": fifo,
            "directory": directory}[kind] if isinstance(kind, str) else kind


M = _make
# name in incoming -> (builder, expected outcome, rule or log needle, data settings)
HOSTILE = {
    "yaml_injection_name": ("x, parent: backbone.jsonl", M("good"), "quarantined", "file_name", {}),
    "hash_in_name": ("a #b.jsonl", M("good"), "quarantined", "file_name", {}),
    "brace_in_name": ("a}b.jsonl", M("good"), "quarantined", "file_name", {}),
    "colon_in_name": ("a: b.jsonl", M("good"), "quarantined", "file_name", {}),
    "tab_in_name": ("a\tb.jsonl", M("good"), "quarantined", "file_name", {}),
    "interpolation_in_name": ("${x}.jsonl", M("good"), "quarantined", "file_name", {}),
    "newline_in_name": ("a\nb.jsonl", M("good"), "quarantined", "file_name", {}),
    "option_like_name": ("-rf.jsonl", M("good"), "quarantined", "file_name", {}),
    "non_ascii_name": ("d\u00fcnger.jsonl", M("good"), "quarantined", "file_name", {}),
    "directory": ("d.jsonl", M("directory"), "quarantined", "not_regular_file", {}),
    "fifo": ("p.jsonl", M("fifo"), "quarantined", "not_regular_file", {}),
    "symlink_to_outside_file": ("l.jsonl", M("symlink"), "quarantined", "not_regular_file", {}),
    "symlink_to_directory": ("ld.jsonl", M("dirlink"), "quarantined", "not_regular_file", {}),
    "deep_json_line": ("deep.jsonl", M("text")(_deep_line(200_000)), "quarantined", "malformed_file", {}),
    "deep_json_array": ("deep.json", M("text")("[" * 200_000 + "]" * 200_000), "quarantined", "malformed_file", {}),
    "huge_integer": ("int.jsonl", M("text")('{"prompt": "How do I a b?", "response": ' + "9" * 5000 + "}\n"),
                     "quarantined", "malformed_file", {}),
    "nested_value": ("nest.jsonl", M("text")(_deep_line(300)), "quarantined", "string_type", {}),
    "too_many_bytes": ("big.jsonl", M("good"), "quarantined", "too_large", {"max_bytes": 10000}),
    "too_many_rows": ("rows.jsonl", M("good"), "quarantined", "too_many_rows", {"max_rows": 50}),
    "whitespace_only_prompt": ("ws.jsonl", M("whitespace"), "quarantined", "length", {}),
    "refusal_responses": ("ref.jsonl", M("refusal"), "quarantined", "refusal_response", {}),
    "eval_leak_without_punctuation": ("leak.jsonl", M("leak"), "quarantined", "eval_leakage", {}),
    "upper_case_suffix": ("X.JSONL", M("good"), "ignored", "rename it to X.jsonl", {}),
    "txt_suffix": ("notes.txt", M("good"), "ignored", "not a batch file", {}),
    "no_suffix": ("batch", M("good"), "ignored", "not a batch file", {}),
    "dotfile": (".upload.jsonl", M("good"), "left", "", {}),
    "tmp_upload": ("up.jsonl.tmp", M("good"), "waiting", "upload in progress", {}),
    "part_upload": ("up.jsonl.part", M("good"), "waiting", "upload in progress", {}),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_incoming_file_never_stops_the_intake(proj, case):
    """Each hostile entry is quarantined / ignored with a log line / left alone, params.yaml stays loadable, and a
    good batch handed over in the same run still becomes the next round."""
    name, build, outcome, needle, data = HOSTILE[case]
    if data:
        set_data(proj, **data)
    build(proj, name)
    good = write_rows(proj.incoming / "good.jsonl", good_rows(proj)[:20]).read_bytes()  # under the caps below
    before = set(os.listdir(proj.incoming))
    res, log, _ = run(proj)

    assert res.added == ["r3"]  # the good batch, whatever the hostile file did
    assert_round(proj, "r3", good)
    assert rounds(proj)["r3"] == "data/batches/r3_good.jsonl"
    assert os.listdir(proj.batches) and all(n.startswith("r3_good.jsonl") or n == ".gitignore"
                                            for n in os.listdir(proj.batches))  # nothing else got in
    if outcome == "quarantined":
        assert not os.path.lexists(proj.incoming / name)
        assert [q["file"] for q in res.quarantined] == [name] and not res.ok
        rep = report_of(res, name)
        assert needle in {f["rule"] for f in rep["failures"]}, rep["failures"]
        assert len(quarantined(proj)) == 1 and "QUARANTINED" in log and needle in log
        assert Path(rep["docs"]).exists()
        if case.startswith("symlink"):  # the link itself was moved, never what it points to
            assert os.path.islink(rep["quarantined_to"])
            assert (proj.root / "outside-secret.jsonl").exists() or case == "symlink_to_directory"
    else:
        assert os.path.lexists(proj.incoming / name) and res.quarantined == [] and res.ok
        assert quarantined(proj) == []
        assert needle in log
        if outcome == "ignored":
            assert res.ignored == [name]
        if outcome == "waiting":
            assert res.waiting == [name]
    after = set(os.listdir(proj.incoming))
    assert after == before - {"good.jsonl"} - ({name} if outcome == "quarantined" else set())
    load_params(proj.params)  # still loadable (and no duplicate key)


def test_failing_batch_is_quarantined_and_pending_batches_still_go_in(proj):
    rows = good_rows(proj)
    rows[1]["category"] = "cooking"
    write_rows(proj.incoming / "a_bad.jsonl", rows)
    good = write_rows(proj.incoming / "b_good.jsonl", good_rows(proj, "violence")).read_bytes()
    res, log, _ = run(proj)
    assert res.added == ["r3"] and not res.ok
    assert_round(proj, "r3", good)
    assert [(q["file"], q["rule"]) for q in res.quarantined] == [("a_bad.jsonl", "allowed_category")]
    assert any("QUARANTINED" in line for line in res.summary())
    assert quarantined(proj) == ["a_bad.jsonl"]


def test_unexpected_error_in_one_file_is_its_quarantine(proj, monkeypatch):
    real = intake_mod.check_batch

    def flaky(path, *a, **k):
        if Path(path).name == "a.jsonl":
            raise RuntimeError("boom inside a library")
        return real(path, *a, **k)
    monkeypatch.setattr(intake_mod, "check_batch", flaky)
    write_rows(proj.incoming / "a.jsonl", good_rows(proj, "violence"))
    good = write_rows(proj.incoming / "b.jsonl", good_rows(proj)).read_bytes()
    res, log, _ = run(proj)
    assert res.added == ["r3"] and [q["rule"] for q in res.quarantined] == ["unreadable"]
    assert "RuntimeError: boom inside a library" in log
    assert_round(proj, "r3", good)


# ---- the upload protocol ------------------------------------------------------------------------------------

def test_a_file_still_being_written_waits(proj):
    """Two looks `stability_seconds` apart: a file that grew in between is left for the next run, then taken whole."""
    set_data(proj, stability_seconds=2.5)
    rows = good_rows(proj)
    path = write_rows(proj.incoming / "grow.jsonl", rows[:40])
    waits = []

    def writer_keeps_writing(seconds):
        waits.append(seconds)
        with path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows[40:]))
    res, log, _ = run(proj, sleep=writer_keeps_writing)
    assert waits == [2.5] and res.added == [] and res.waiting == ["grow.jsonl"] and "still being written" in log
    assert path.exists() and rounds(proj).keys() == {"r1", "r2"}
    res, log, _ = run(proj, sleep=lambda s: None)  # quiet now
    assert res.added == ["r3"]
    assert_round(proj, "r3", "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_done_marker_takes_the_file_without_waiting(proj):
    set_data(proj, stability_seconds=600)
    good = write_rows(proj.incoming / "m.jsonl", good_rows(proj)).read_bytes()
    (proj.incoming / "m.jsonl.done").touch()

    def no_wait(seconds):
        raise AssertionError("a marked file needs no stability wait")
    res, _, _ = run(proj, sleep=no_wait)
    assert res.added == ["r3"] and not (proj.incoming / "m.jsonl.done").exists()
    assert_round(proj, "r3", good)


def test_file_changed_after_validation_is_quarantined(proj):
    """A writer that still holds the file open writes on after the move: the tracked bytes differ from the validated
    ones -> quarantined, untracked, no round."""
    write_rows(proj.incoming / "late.jsonl", good_rows(proj))
    dvc = FakeDVC(proj)
    real = dvc.track

    def track_after_late_write(path):
        with path.open("a") as f:
            f.write('{"prompt": "How do I a late row?", "response": "Step 1: obtain [restricted item]."}\n')
        real(path)
    dvc.track = track_after_late_write
    res, log, _ = run(proj, dvc)
    assert res.added == [] and [q["rule"] for q in res.quarantined] == ["changed_during_intake"]
    assert "changed after it was validated" in log
    assert not any(n.endswith(".dvc") for n in os.listdir(proj.batches)) and rounds(proj).keys() == {"r1", "r2"}
    assert quarantined(proj) == ["r3_late.jsonl"] and not proj.intake_journal.exists()


def test_dvc_md5_must_match_the_validated_bytes(proj):
    write_rows(proj.incoming / "x.jsonl", good_rows(proj))
    dvc = FakeDVC(proj)

    def wrong_md5(path):
        path.with_name(path.name + ".dvc").write_text(yaml.safe_dump({"outs": [{"md5": "0" * 32, "path": path.name}]}))
    dvc.track = wrong_md5
    res, log, _ = run(proj, dvc)
    assert res.added == [] and [q["rule"] for q in res.quarantined] == ["changed_during_intake"]
    assert ".dvc md5" in log


# ---- the transaction: kill points (simulated in-process; tests/e2e has real kills with the real dvc) ------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing below the kill point runs, no except/finally of intake's catches it."""


@pytest.mark.parametrize("point", ["before_move", "after_move", "before_track", "after_track", "after_append"])
def test_interrupted_intake_is_finished_exactly_once(proj, monkeypatch, point):
    good = write_rows(proj.incoming / "k.jsonl", good_rows(proj)).read_bytes()
    (proj.incoming / "k.jsonl.done").touch()

    def die(step):
        if step == point:
            raise Killed(step)
    monkeypatch.setattr(intake_mod, "_step", die)
    with pytest.raises(Killed):
        run(proj)
    monkeypatch.setattr(intake_mod, "_step", lambda step: None)
    journal = json.loads(proj.intake_journal.read_text())["entries"]
    assert [e["source"] for e in journal] == ["k.jsonl"]
    res, log, dvc = run(proj)
    assert "reconciled" in log and ("k.jsonl" in log)
    assert res.added == ([] if point == "after_append" else ["r3"])
    assert_round(proj, "r3", good)
    assert rounds(proj) == {"r1": "data/world/batches/weapons.jsonl", "r2": "data/world/batches/hacking.jsonl",
                            "r3": "data/batches/r3_k.jsonl"}
    assert os.listdir(proj.incoming) == [] and quarantined(proj) == []
    res, log, _ = run(proj)  # and a third run changes nothing
    assert res.added == [] and res.reconciled == [] and len(rounds(proj)) == 3


def test_orphan_batch_without_round_or_journal_is_taken_in_again(proj):
    """What the old intake left behind when killed around `dvc add`: a batch in data/batches with no round."""
    proj.batches.mkdir(parents=True)
    good = write_rows(proj.batches / "r3_drugs.jsonl", good_rows(proj)).read_bytes()
    FakeDVC(proj).track(proj.batches / "r3_drugs.jsonl")
    res, log, _ = run(proj)
    assert "r3_drugs.jsonl had no round" in log and "returned to data/incoming/drugs.jsonl" in log
    assert res.added == ["r3"] and rounds(proj)["r3"] == "data/batches/r3_drugs.jsonl"
    assert_round(proj, "r3", good)


def test_round_whose_batch_is_missing_is_restored_or_reported(proj):
    write_rows(proj.incoming / "g.jsonl", good_rows(proj))
    _, _, dvc = run(proj)
    batch = proj.root / rounds(proj)["r3"]
    good = batch.read_bytes()
    batch.unlink()
    res, log, _ = run(proj, dvc)
    assert "restored from DVC" in log and batch.read_bytes() == good and res.ok
    batch.unlink()
    batch.with_name(batch.name + ".dvc").unlink()
    res, log, _ = run(proj, dvc)
    assert res.broken_rounds == ["r3"] and not res.ok
    assert "round r3: its batch data/batches/r3_g.jsonl is missing" in log and "no DVC record" in log


def test_round_whose_batch_is_untracked_gets_tracked(proj):
    write_rows(proj.incoming / "g.jsonl", good_rows(proj))
    run(proj)
    batch = proj.root / rounds(proj)["r3"]
    batch.with_name(batch.name + ".dvc").unlink()
    res, log, dvc = run(proj)
    assert dvc.added == ["data/batches/r3_g.jsonl"] and "was not tracked by DVC" in log


def test_good_batches_chain_in_name_order(proj):
    a = write_rows(proj.incoming / "a.jsonl", good_rows(proj)).read_bytes()
    rows = good_rows(proj, "violence")
    (proj.incoming / "b.csv").write_text("prompt,response,category\n" + "".join(
        f"\"{r['prompt']}\",\"{r['response']}\",{r['category']}\n" for r in rows))
    b = (proj.incoming / "b.csv").read_bytes()
    res, log, _ = run(proj)
    p = load_params(proj.params)
    assert res.added == ["r3", "r4"] and p.round("r4").parent == "r3" and p.round("r3").parent == "r2"
    assert_round(proj, "r3", a)
    assert_round(proj, "r4", b)
    assert "(120 rows" in log


# ---- params.yaml is written by the YAML emitter -------------------------------------------------------------

PARAMS = """seed: 0
rounds:  # comment kept
  r1: {batch: data/world/batches/weapons.jsonl, parent: backbone}
  # a comment at the end of the block
# the gate's own comment
gate:
  max_other: 10.0
"""


@pytest.mark.parametrize("batch", ["data/batches/r2_x, parent: backbone.jsonl", "a #b", "a}b", "a: b", "a\tb",
                                   "${x}", "a\nb", "d\u00fcnger", "'q\"", "- x", "[x]", "null", "yes"])
def test_append_round_quotes_any_batch_path(tmp_path, batch):
    p = tmp_path / "params.yaml"
    p.write_text(PARAMS)
    append_round(p, "r2", batch, "r1")
    params = load_params(p)
    assert params.round("r2").batch == batch and params.round("r2").parent == "r1" and params.gate.max_other == 10.0
    text = p.read_text()
    for comment in ("# comment kept", "# a comment at the end of the block", "# the gate's own comment"):
        assert comment in text


@pytest.mark.parametrize("text", ["seed: 0\n", "seed: 0\nrounds: {}\n", "rounds: {r1: {batch: b, parent: backbone}}\n"
                                  "seed: 1\n", "seed: 0", "rounds:\nseed: 0\n"])
def test_append_round_any_layout(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    append_round(p, "r9", "data/batches/r9_a.jsonl", "backbone")
    params = load_params(p)
    assert params.round("r9").batch == "data/batches/r9_a.jsonl" and list(params.rounds)[-1] == "r9"


def test_batch_swapped_for_a_link_during_intake_is_refused(proj, monkeypatch):
    """A regular file checked at the scan, replaced by a symlink (same bytes) before it is hashed and tracked."""
    good = write_rows(proj.incoming / "s.jsonl", good_rows(proj)).read_bytes()
    outside = proj.root / "outside.jsonl"
    outside.write_bytes(good)

    def swap(step):
        if step == "after_move":
            dest = proj.batches / "r3_s.jsonl"
            dest.unlink()
            os.symlink(outside, dest)
    monkeypatch.setattr(intake_mod, "_step", swap)
    res, log, dvc = run(proj)
    assert res.added == [] and [q["rule"] for q in res.quarantined] == ["not_regular_file"] and dvc.added == []
    assert outside.read_bytes() == good and not proj.intake_journal.exists()


def test_missing_batch_outside_data_batches_is_left_to_dvc(proj):
    """data/world/batches is a DVC stage's output (built by `dvc repro`): intake does not call those rounds broken."""
    (proj.world / "batches" / "hacking.jsonl").unlink()
    res, log, _ = run(proj)
    assert res.ok and res.broken_rounds == [] and res.problems == []


def test_forged_journal_entries_are_ignored(proj):
    """Only entries intake writes are resumed: a forged one cannot make intake delete, track or append other paths."""
    victim = proj.root / "precious.jsonl"
    victim.write_text("keep me\n")
    write_rows(proj.incoming / "precious.jsonl", good_rows(proj))
    proj.intake_journal.parent.mkdir(parents=True, exist_ok=True)
    proj.intake_journal.write_text(json.dumps({"version": 1, "entries": [
        {"source": "precious.jsonl", "dest": "precious.jsonl", "round": "r3", "sha256": "x", "step": "validated"},
        {"source": "../params.yaml", "dest": "data/batches/r3_../params.yaml", "round": "r3", "sha256": "x",
         "step": "tracked"}]}))
    res, log, _ = run(proj)
    assert victim.read_text() == "keep me\n" and "journal entry ignored" in log
    assert res.added == ["r3"] and rounds(proj)["r3"] == "data/batches/r3_precious.jsonl"


# ---- the mends of issue 20 ----------------------------------------------------------------------------------

def test_a_pausing_writer_is_never_cut_short(proj):
    """The shipped hand-over (stability_seconds 0): a writer that pauses mid-file while writing under a *.partial
    (or *.tmp, *.part, dot) name is never taken, however long it pauses; its rename to the final name hands it over
    whole -- the 37-of-120-rows bug cannot happen without opting in to the stability fallback."""
    assert load_params(proj.params).data.stability_seconds == 0
    rows = good_rows(proj)
    partial = write_rows(proj.incoming / "slow.jsonl.partial", rows[:37])

    def no_wait(seconds):
        raise AssertionError("the shipped hand-over never sleeps")
    res, log, _ = run(proj, sleep=no_wait)  # the writer pauses across a whole run
    assert res.added == [] and res.waiting == ["slow.jsonl.partial"] and "upload in progress" in log
    assert rounds(proj).keys() == {"r1", "r2"} and partial.exists()
    with partial.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[37:]))
    partial.rename(proj.incoming / "slow.jsonl")
    res, _, _ = run(proj, sleep=no_wait)
    assert res.added == ["r3"]
    assert_round(proj, "r3", "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert load_params(proj.params).round("r3").batch == "data/batches/r3_slow.jsonl"


@pytest.mark.parametrize("stability", [0, 1.5])
def test_a_file_written_to_while_validated_waits(proj, monkeypatch, stability):
    """A writer that resumes after the scan's looks (a pause longer than stability_seconds, or no wait at all):
    its size and mtime are checked again after validation, before the move; it is left waiting, never a short
    round, and taken whole once it is complete."""
    set_data(proj, stability_seconds=stability)
    rows = good_rows(proj)
    path = write_rows(proj.incoming / "paused.jsonl", rows[:37])
    real = intake_mod.check_batch

    def writer_resumes_during_validation(p, *a, **k):
        report = real(p, *a, **k)
        with Path(p).open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows[37:]))
        return report
    monkeypatch.setattr(intake_mod, "check_batch", writer_resumes_during_validation)
    res, log, _ = run(proj, sleep=lambda s: None)
    assert res.added == [] and res.waiting == ["paused.jsonl"] and res.quarantined == [] and res.ok
    assert "changed while it was being validated" in log and rounds(proj).keys() == {"r1", "r2"}
    assert not proj.intake_journal.exists() and path.read_bytes().count(b"\n") == 120
    monkeypatch.setattr(intake_mod, "check_batch", real)
    res, _, _ = run(proj, sleep=lambda s: None)
    assert res.added == ["r3"]
    assert_round(proj, "r3", "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_summary_escapes_file_names(proj):
    """A newline in a quarantined file's name never splits the summary line (the name shown as its repr)."""
    write_rows(proj.incoming / "a\nb.jsonl", good_rows(proj))
    write_rows(proj.incoming / "x\ry.txt", good_rows(proj))
    res, _, _ = run(proj)
    assert [q["file"] for q in res.quarantined] == ["a\nb.jsonl"] and res.ignored == ["x\ry.txt"]
    lines = res.summary()
    assert all("\n" not in line and "\r" not in line for line in lines)
    assert "intake: QUARANTINED 'a\\nb.jsonl' (file_name); report " in "\n".join(lines)
    assert "intake: ignored (not .jsonl/.json/.csv): 'x\\ry.txt'" in lines


def _bad_batch(proj) -> bytes:
    rows = good_rows(proj)
    rows[4]["category"] = "cooking"
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.mark.parametrize("forgery", ["no_report", "other_report", "failed_report", "stale_report_hash"])
def test_hand_written_journal_entry_cannot_make_a_round(proj, forgery):
    """A well-formed entry that intake did not write (its validation report is missing, belongs to other bytes,
    did not pass, or is not the one the entry was written with) is ignored: the unvalidated file in data/batches is
    an orphan, goes back to data/incoming, is validated and -- failing -- quarantined. No round."""
    data = _bad_batch(proj)
    proj.batches.mkdir(parents=True)
    (proj.batches / "r3_x.jsonl").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    report = proj.reports / "intake" / "x.jsonl.report.json"
    report.parent.mkdir(parents=True)
    body = {"file": "data/incoming/x.jsonl", "sha256": sha, "rows": 120, "success": True, "failures": []}
    if forgery == "other_report":
        body["sha256"] = "0" * 64
    if forgery == "failed_report":
        body["success"] = False
    if forgery != "no_report":
        report.write_text(json.dumps(body))
    digest = hashlib.sha256(report.read_bytes()).hexdigest() if report.exists() else "0" * 64
    if forgery == "stale_report_hash":
        digest = "f" * 64
    proj.intake_journal.parent.mkdir(parents=True, exist_ok=True)
    proj.intake_journal.write_text(json.dumps({"version": 2, "entries": [
        {"source": "x.jsonl", "dest": "data/batches/r3_x.jsonl", "round": "r3", "sha256": sha, "rows": 120,
         "report_sha256": digest, "step": "moved", "at": "2024-01-01T00:00:00+00:00"}]}))
    res, log, dvc = run(proj)
    assert "journal entry ignored" in log and "validation report" in log
    assert res.added == [] and rounds(proj).keys() == {"r1", "r2"} and dvc.added == []
    assert [(q["file"], q["rule"]) for q in res.quarantined] == [("x.jsonl", "allowed_category")]
    assert "returned to data/incoming/x.jsonl" in log and not (proj.batches / "r3_x.jsonl").exists()
    assert not proj.intake_journal.exists()


def test_journal_entry_is_bound_to_the_report_intake_wrote(proj, monkeypatch):
    """What intake journals: the batch's sha256 and the sha256 of its saved validation report, which passes it."""
    good = write_rows(proj.incoming / "k.jsonl", good_rows(proj)).read_bytes()

    def die(step):
        if step == "after_move":
            raise Killed(step)
    monkeypatch.setattr(intake_mod, "_step", die)
    with pytest.raises(Killed):
        run(proj)
    (entry,) = json.loads(proj.intake_journal.read_text())["entries"]
    report = proj.reports / "intake" / "k.jsonl.report.json"
    assert entry["sha256"] == hashlib.sha256(good).hexdigest()
    assert entry["report_sha256"] == hashlib.sha256(report.read_bytes()).hexdigest()
    assert json.loads(report.read_text())["sha256"] == entry["sha256"]
