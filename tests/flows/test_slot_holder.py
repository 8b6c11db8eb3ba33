"""Which holder records of the rounds slot may be taken over at once (flows/slot.py `dead_holder`): only one of this
kernel boot and pid namespace whose process is gone (io.atomic.pid_alive), with its lease id. A live process, a holder
on another machine or in another container is waited for."""

from __future__ import annotations

import os
import subprocess

from flows.slot import dead_holder, process_space


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def record(**over) -> dict:
    return {"state": "holding", "pid": _dead_pid(), "lease_id": "8d3f6d0e-0000-4000-8000-000000000001",
            "host": "here", **process_space(), **over}


def test_a_dead_process_of_this_machine_is_taken_over():
    assert process_space()["boot_id"] and process_space()["pidns"].startswith("pid:")
    assert dead_holder(record())


def test_anything_else_is_waited_for():
    assert not dead_holder(record(pid=os.getpid()))          # alive
    assert not dead_holder(record(boot_id="another-machine"))  # its pid means nothing here
    assert not dead_holder(record(pidns="pid:[4026532999]"))  # another container on this kernel
    assert not dead_holder(record(lease_id=None))             # nothing to release: wait for the server
    assert not dead_holder(record(state="released"))
    assert not dead_holder(record(pid="123"))
    assert not dead_holder({k: v for k, v in record().items() if k != "boot_id"})  # an older record
    assert not dead_holder(None)
