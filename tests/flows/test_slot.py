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
