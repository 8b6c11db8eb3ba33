"""The rounds slot (flows/slot.py) on a real (test-harness) Prefect server: created on first use, held by one run at
a time, a waiting run names the holder, `max_wait` gives up with RoundsBusy (slow: the harness starts a server)."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_rounds_slot_is_exclusive_and_names_its_holder(server):
    from prefect.client.orchestration import get_client

    from flows.slot import SLOT, RoundsBusy, ensure_limit, rounds_slot

    held, release = threading.Event(), threading.Event()
    spans: dict[str, tuple[float, float]] = {}

    from prefect import flow

    @flow(name="hold-the-slot")
    def holder():  # inside a flow run: the slot's lease names the flow run as its holder
        with rounds_slot("/srv/machine-a/safepatching", log=lambda s: None):
            t0 = time.time()
            held.set()
            release.wait(60)
            spans["a"] = (t0, time.time())

    th = threading.Thread(target=holder)
    th.start()
    assert held.wait(60)
    with get_client(sync_client=True) as c:
        limit = c.read_global_concurrency_limit_by_name(SLOT)
        assert (limit.limit, limit.active_slots) == (1, 1)
    ensure_limit()  # idempotent: the existing limit is kept
    lines: list[str] = []
    with pytest.raises(RoundsBusy, match=r"held by flow run '.+' \(.{36}\) on host .*checkout "
                                          r"/srv/machine-a/safepatching.*gave up after"):
        with rounds_slot("/srv/machine-b/safepatching", log=lines.append, max_wait=3, check_every=1):
            pytest.fail("entered a held slot")
    assert lines and all(line.startswith("WAITING") and "/srv/machine-a/safepatching" in line for line in lines)

    threading.Timer(3, release.set).start()
    lines.clear()
    with rounds_slot("/srv/machine-b/safepatching", log=lines.append, check_every=1):
        spans["b"] = (time.time(), time.time())
    th.join(10)
    assert spans["a"][1] <= spans["b"][0]  # one after the other, never together
    assert lines[0].startswith("WAITING") and "is free: this run holds it now" in lines[-1]
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name(SLOT).active_slots == 0


HOLD = """
import sys, time
from flows.slot import rounds_slot
with rounds_slot(sys.argv[1], log=print, lease_seconds=60):
    print("HOLDING", flush=True)
    time.sleep(600)
"""


def _holding_process(api: str, checkout: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'src'}"}
    p = subprocess.Popen([sys.executable, "-c", HOLD, checkout], cwd=repo, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if line.startswith("HOLDING"):
            return p
    p.wait()
    pytest.fail(f"the holder never held the slot (exit {p.returncode})")


def test_a_killed_holder_of_this_machine_is_taken_over_at_once(server):
    """A run killed while holding the slot (SIGKILL: no release) does not make the next run of this machine wait
    for its 60 s lease: the next one releases the dead lease and holds the slot; a live holder in another process
    is waited for (no takeover)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.slot import SLOT, RoundsBusy, rounds_slot

    live = _holding_process(PREFECT_API_URL.value(), "/srv/live")
    lines: list[str] = []
    try:
        with pytest.raises(RoundsBusy, match=r"checkout /srv/live, pid \d+"):
            with rounds_slot("/srv/other", log=lines.append, max_wait=3, check_every=1):
                pytest.fail("entered a slot a live process holds")
        assert lines and not any("TAKEOVER" in line for line in lines)
    finally:
        live.kill()
        live.wait()
    lines.clear()
    t0 = time.time()
    with rounds_slot("/srv/next", log=lines.append, check_every=1, max_wait=30):
        took = time.time() - t0
        with get_client(sync_client=True) as c:
            assert c.read_global_concurrency_limit_by_name(SLOT).active_slots == 1  # one lease: the dead one is gone
    assert took < 20, lines  # the dead lease would have held the slot for 60 s
    (line,) = lines
    assert line.startswith(f"TAKEOVER: the rounds slot {SLOT!r} was held by") and f"pid {live.pid}" in line
    assert "checkout /srv/live" in line
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name(SLOT).active_slots == 0
