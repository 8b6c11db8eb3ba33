"""The flow's ATTENTION list (exit 3): uploads left waiting and a champion out of the lineage need a person too."""

from __future__ import annotations

from safepatching.ops.lineage import champion_warning
from safepatching.ops.registry.rows import VersionRow

STALE = VersionRow(version="1", round="r1", parent_version="none", gate="passed", aliases=("champion",),
                   batch_sha256="b", run_id=None, metrics={}, model_sha256="0123456789abcdef")


def test_attention_lists_uploads_left_waiting_and_a_stale_champion():
    import flows.continual as fc

    quiet = fc.ContinualResult([{"round": "r1"}], intake={"ok": True, "waiting": []})
    assert quiet.ok and quiet.attention() == []
    waiting = fc.ContinualResult([], intake={"ok": True, "waiting": ["big.jsonl", "up\nload.part"]})
    assert not waiting.ok and waiting.attention() == [
        "WAITING 'big.jsonl': an upload not complete yet (still being written); left in the incoming folder for the "
        "next run",
        "WAITING 'up\\nload.part': an upload not complete yet (still being written); left in the incoming folder for "
        "the next run"]
    warning = champion_warning([STALE], {"r1": "fedcba"})
    stale = fc.ContinualResult([], intake={"ok": True}, champion=warning)
    assert not stale.ok and stale.attention() == [f"STALE CHAMPION: {warning}"]
    assert "reference: champion v1" in warning
    copy = stale.__reduce__()
    assert copy[0](*copy[1]).attention() == stale.attention()  # survives pickling (Prefect results)


def test_main_exits_3_for_a_champion_out_of_the_lineage(tmp_path, monkeypatch, capsys):
    """The probe: a champion out of the lineage (after a parameter change) was only a warning with exit 0, while it
    stays every new round's gate reference."""
    import flows.continual as fc
    import safepatching.ops.record as record

    monkeypatch.setenv("SAFEPATCHING_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fc, "continual_psa", lambda *a, **k: fc.ContinualResult([], intake={"ok": True}))
    monkeypatch.setattr(record, "check_champion", lambda params, root: champion_warning([STALE], {}))
    assert fc.main([]) == 3
    captured = capsys.readouterr()
    assert "WARNING: champion v1 (r1, model 0123456789ab) is not in the lineage" in captured.out
    assert "ATTENTION (exit 3):\n  STALE CHAMPION: champion v1 (r1" in captured.err
    assert "the gate of every new round compares against it (reference: champion v1)" in captured.err

    monkeypatch.setattr(record, "check_champion", lambda params, root: None)
    assert fc.main([]) == 0 and "ATTENTION" not in capsys.readouterr().err


def test_main_exits_3_for_an_upload_left_waiting(tmp_path, monkeypatch, capsys):
    import flows.continual as fc

    monkeypatch.setenv("SAFEPATCHING_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fc, "continual_psa",
                        lambda *a, **k: fc.ContinualResult([], intake={"ok": True, "waiting": ["r3.jsonl"]}))
    assert fc.main([]) == 3
    assert "  WAITING 'r3.jsonl': an upload not complete yet" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # the champion check only reads: no store made
