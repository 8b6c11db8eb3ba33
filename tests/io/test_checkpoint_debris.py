"""Debris of killed writers: `atomic_dir` removes `<out>.tmp-<pid>` folders whose process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from safepatching.io.atomic import atomic_dir, clean_stale, pid_alive


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)
    return p.pid


def test_stale_tmp_of_a_dead_writer_is_removed_live_ones_kept(tmp_path):
    out = tmp_path / "models" / "r1"
    dead, live = _dead_pid(), os.getppid()
    for pid in (dead, live):
        (out.parent / f"r1.tmp-{pid}").mkdir(parents=True)
        (out.parent / f"r1.tmp-{pid}" / "model.safetensors").write_bytes(b"half")
    (out.parent / "r10.tmp-1").mkdir()  # another output's debris is not r1's business
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert out.is_dir() and not (out.parent / f"r1.tmp-{dead}").exists()
    assert (out.parent / f"r1.tmp-{live}").exists() and (out.parent / "r10.tmp-1").exists()


def test_old_copy_of_a_writer_killed_between_renames_is_put_back(tmp_path):
    out = tmp_path / "r1"
    old = tmp_path / f"r1.old-{_dead_pid()}"
    old.mkdir()
    (old / "config.json").write_text("{}")
    assert clean_stale(out) == [old]
    assert (out / "config.json").exists() and not old.exists()


def test_a_zombie_is_dead_a_running_child_alive():
    """A killed writer its parent has not reaped yet holds nothing: its debris is stale, its slot free."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
    deadline = time.time() + 10
    while time.time() < deadline and open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)
    assert not pid_alive(child.pid)  # killed, not yet reaped: a zombie
    child.wait()
    assert not pid_alive(child.pid)
