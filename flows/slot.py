"""Rounds one at a time across machines: a global concurrency limit on the Prefect server the flow reports to.

The workspace lock (flows/continual.py, a flock) keeps two runs out of one folder; two machines (two checkouts, one
Prefect server, one MLflow registry, one DVC remote) need a lock they share. `rounds_slot()` holds the one slot of
the server-side global concurrency limit `safepatching-rounds` (created with limit 1 if absent, so an ephemeral
server of `make run` has it too) around a run's round work, and records who holds it in the Prefect variable
`safepatching_rounds_holder` (flow run, host, checkout, since). A run that finds the slot taken logs, at once and
then every `check_every` seconds, what holds it, and waits; with `max_wait` set it gives up with RoundsBusy naming
the holder. The slot is a lease the holder renews every `lease_seconds / 3`: if its process dies the server frees it
within `lease_seconds` (60 s, the server's minimum, plus its repossessor loop).

A dead holder of this very machine is not waited for: the holder record carries the lease id, the pid, the kernel's
boot id and the pid namespace; a run that finds the slot taken by a record of its own boot and pid namespace whose
pid is gone (a killed `make run`, a crashed worker's flow) releases that lease at once and takes the slot, saying so
(TAKEOVER). A holder on another machine, or in another container, is only ever waited for: its pid means nothing
here.

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
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable
from uuid import UUID

from safepatching.errors import SafePatchingError
from safepatching.io.atomic import pid_alive

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


def _holder() -> dict | None:
    """The holder record (a dict), or None when there is none or it is not one."""
    from prefect.variables import Variable

    h = Variable.get(HOLDER, default=None)
    if isinstance(h, str):
        try:
            h = json.loads(h)
        except json.JSONDecodeError:
            h = None
    return h if isinstance(h, dict) else None


def holder_line(h: dict | None = None) -> str:
    """Who holds the slot, from the holder record: flow run, host, checkout, since when."""
    h = _holder() if h is None else h
    if not isinstance(h, dict) or h.get("state") != "holding":
        return "holder not recorded (a run that has not written its record yet)"
    return (f"flow run {h.get('flow_run_name')!r} ({h.get('flow_run_id')}) on host {h.get('host')}, checkout "
            f"{h.get('checkout')}, pid {h.get('pid')}, since {h.get('since')}")


def _record(state: str, me: dict) -> None:
    from prefect.variables import Variable

    Variable.set(HOLDER, json.dumps({**me, "state": state, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
                 overwrite=True)


def process_space() -> dict:
    """What makes a pid meaningful: this kernel boot and this pid namespace (Linux; empty elsewhere)."""
    try:
        return {"boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                "pidns": os.readlink("/proc/self/ns/pid")}
    except OSError:
        return {}


def dead_holder(h: dict | None) -> bool:
    """A holder record of this boot and pid namespace whose process is gone, with its lease id (see module doc)."""
    space = process_space()
    return (isinstance(h, dict) and h.get("state") == "holding" and bool(space) and isinstance(h.get("pid"), int)
            and bool(h.get("lease_id")) and all(h.get(k) == v for k, v in space.items()) and not pid_alive(h["pid"]))


def _acquire(name: str, lease_seconds: float, holder) -> UUID | None:
    """One try at the slot: the lease id, or None when the slot is taken (the server's 423)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        try:
            r = client.increment_concurrency_slots_with_lease([name], 1, "concurrency", lease_seconds, holder)
        except PrefectHTTPStatusError as e:
            if e.response.status_code == 423:
                return None
            raise
    return UUID(r.json()["lease_id"])


def _release(lease_id) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(UUID(str(lease_id)))  # a lease already gone: a no-op


def _renew_until(stop: threading.Event, lease_id: UUID, lease_seconds: float, log) -> None:
    """Renew the lease every lease_seconds / 3 until `stop`; a failed renewal is said, and tried again."""
    from prefect.client.orchestration import get_client

    while not stop.wait(lease_seconds / 3):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease_id, lease_seconds)
        except Exception as e:  # noqa: BLE001 - a transient server error must not end the round
            log(f"WARNING: could not renew the rounds slot's lease {lease_id}: {e}")


@contextmanager
def rounds_slot(checkout: str, log: Callable[[str], None] = print, check_every: float = 30.0,
                max_wait: float | None = None, lease_seconds: float = 60.0, name: str = SLOT):
    """Hold the server's `name` slot for the block (see the module doc). `checkout` is recorded for the message."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # the ephemeral server: nobody else can reach it (module doc)
        yield
        return
    ensure_limit(name)
    run_id = flow_run.id
    me = {"flow_run_id": str(run_id) if run_id else None, "flow_run_name": flow_run.name if run_id else None,
          "host": socket.gethostname(), "checkout": checkout, "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **process_space()}
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None
    server = PREFECT_API_URL.value()
    t0 = time.time()
    waited = False
    while (lease_id := _acquire(name, lease_seconds, holder)) is None:
        h = _holder()
        if dead_holder(h):
            _release(h["lease_id"])
            log(f"TAKEOVER: the rounds slot {name!r} was held by {holder_line(h)}, a process of this machine that "
                "is gone (killed or crashed); its lease is released and this run takes the slot")
            continue
        waited, seconds = True, time.time() - t0
        line = (f"the rounds slot {name!r} on {server} is held by {holder_line(h)}; rounds run one at a time "
                "across machines")
        if max_wait is not None and seconds >= max_wait:
            raise RoundsBusy(f"{line}: gave up after {seconds:.0f}s")
        log(f"WAITING ({seconds:.0f}s): {line}; this run starts when it is released")
        time.sleep(check_every if max_wait is None else max(1.0, min(check_every, max_wait - seconds)))
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(stop, lease_id, lease_seconds, log), daemon=True,
                               name="rounds-slot-lease")
    renewer.start()
    try:
        if waited:
            log(f"the rounds slot {name!r} is free: this run holds it now (waited {time.time() - t0:.0f}s)")
        _record("holding", {**me, "lease_id": str(lease_id)})
        try:
            yield
        finally:
            _record("released", me)
    finally:
        stop.set()
        renewer.join(10)
        _release(lease_id)
