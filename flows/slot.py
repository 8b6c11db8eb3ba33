"""Rounds one at a time across machines: a global concurrency limit on the Prefect server the flow reports to.

The workspace lock (flows/continual.py, a flock) keeps two runs out of one folder; two machines (two checkouts, one
Prefect server, one MLflow registry, one DVC remote) need a lock they share. `rounds_slot()` holds the one slot of
the server-side global concurrency limit `safepatching-rounds` (created with limit 1 if absent, so an ephemeral
server of `make run` has it too) around a run's round work, and records who holds it in the Prefect variable
`safepatching_rounds_holder` (flow run, host, checkout, since). A run that finds the slot taken logs, at once and
then every `check_every` seconds, what holds it, and waits; with `max_wait` set it gives up with RoundsBusy naming
the holder. The slot is a lease the holder renews: if its process dies the server frees it within `lease_seconds`
(60 s, the server's minimum, plus its repossessor loop).

On Prefect's ephemeral server (no PREFECT_API_URL: `make run`) no slot is taken: that server lives and dies with this
process, so no other machine can share it and the workspace flock already keeps runs apart; the server's leases are
in memory while its slot counts are in the workspace's database, so a slot held by a killed run would never be
freed there (the next `make run` would wait forever).

`prefect gcl inspect safepatching-rounds` shows the slot; `prefect variable get safepatching_rounds_holder` its holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from typing import Callable

from safepatching.errors import SafePatchingError

SLOT = "safepatching-rounds"
HOLDER = "safepatching_rounds_holder"


class RoundsBusy(SafePatchingError):
    """Another run on the same Prefect server holds the rounds slot and `max_wait` passed; names the holder."""


def ensure_limit(name: str = SLOT) -> None:
    """Create the global concurrency limit `name` with one slot if the server does not have it (idempotent; a limit
    someone changed is left as it is)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another machine created it meanwhile
                pass


def holder_line() -> str:
    """Who holds the slot, from the holder record: flow run, host, checkout, since when."""
    from prefect.variables import Variable

    h = Variable.get(HOLDER, default=None)
    if isinstance(h, str):
        try:
            h = json.loads(h)
        except json.JSONDecodeError:
            h = None
    if not isinstance(h, dict) or h.get("state") != "holding":
        return "holder not recorded (a run that has not written its record yet)"
    return (f"flow run {h.get('flow_run_name')!r} ({h.get('flow_run_id')}) on host {h.get('host')}, checkout "
            f"{h.get('checkout')}, pid {h.get('pid')}, since {h.get('since')}")


def _record(state: str, me: dict) -> None:
    from prefect.variables import Variable

    Variable.set(HOLDER, json.dumps({**me, "state": state, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
                 overwrite=True)


@contextmanager
def rounds_slot(checkout: str, log: Callable[[str], None] = print, check_every: float = 30.0,
                max_wait: float | None = None, lease_seconds: float = 60.0, name: str = SLOT):
    """Hold the server's `name` slot for the block (see the module doc). `checkout` is recorded for the message."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # the ephemeral server: nobody else can reach it (module doc)
        yield
        return
    ensure_limit(name)
    run_id = flow_run.id
    me = {"flow_run_id": str(run_id) if run_id else None, "flow_run_name": flow_run.name if run_id else None,
          "host": socket.gethostname(), "checkout": checkout, "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None
    server = PREFECT_API_URL.value()
    t0 = time.time()
    timeout = 2.0  # the first try: a busy slot is reported at once
    stack = ExitStack()
    waited = False
    while True:
        try:
            stack.enter_context(concurrency(name, occupy=1, timeout_seconds=timeout, holder=holder, strict=True,
                                            lease_duration=lease_seconds, raise_on_lease_renewal_failure=False))
            break
        except TimeoutError:
            waited, seconds = True, time.time() - t0
            line = (f"the rounds slot {name!r} on {server} is held by {holder_line()}; rounds run one at a time "
                    "across machines")
            if max_wait is not None and seconds >= max_wait:
                raise RoundsBusy(f"{line}: gave up after {seconds:.0f}s") from None
            log(f"WAITING ({seconds:.0f}s): {line}; this run starts when it is released")
            timeout = check_every if max_wait is None else max(1.0, min(check_every, max_wait - seconds))
    with stack:
        if waited:
            log(f"the rounds slot {name!r} is free: this run holds it now (waited {time.time() - t0:.0f}s)")
        _record("holding", me)
        try:
            yield
        finally:
            _record("released", me)
