"""Running patch training and SNIP on several processes through `accelerate` (DDP by default; FSDP / DeepSpeed /
mixed precision through an `accelerate config` file).

- `launch_command`: the `accelerate launch` command a stage re-executes itself under when `compute.num_processes > 1`
  (or an accelerate config is given). Without a config it is `--multi_gpu` (torchrun, one process per device) also
  on CPU: accelerate's `--cpu` flag selects its single-process launcher (several CPU processes would need mpirun);
  the processes themselves pick the CPU (`Accelerator(cpu=True)`, gloo) from `compute.device`.
- `micro_slices`: how one global batch is cut into `grad_accumulation` micro-batches per process, contiguous and in
  order. Every piece's loss is weighted by its share of the batch, so the gradient of one optimizer step is the
  gradient of the whole batch's mean loss whatever the split (the data are sharded here, not by a prepared
  DataLoader: its even-batches padding would repeat samples and change the math).
- `Dist`: rank, world size, device and a sum all-reduce for SNIP, which needs no model wrapper (each process scores
  whole batches; the scores are summed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch

from ..io.models import resolve_device

LAUNCHED_ENV = "SAFEPATCHING_LAUNCHED"


def is_launched() -> bool:
    """True inside a process started by `relaunch` (so a stage never launches itself twice)."""
    return os.environ.get(LAUNCHED_ENV) == "1"


def needs_launch(compute) -> bool:
    return (compute.num_processes > 1 or bool(compute.accelerate_config)) and not is_launched()


def free_port() -> int:
    """A free TCP port on loopback for the process group's rendezvous (several runs may share a machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(compute, module: str, args: list[str], port: int | None = None,
                   python: str | None = None) -> list[str]:
    """`python -m accelerate.commands.launch ... --module <module> <args>` for `compute` (see the module doc)."""
    if compute.num_processes < 2 and not compute.accelerate_config:
        raise ValueError("one process and no accelerate config: nothing to launch")
    cmd = [python or sys.executable, "-m", "accelerate.commands.launch"]
    if compute.accelerate_config:
        cmd += ["--config_file", str(compute.accelerate_config)]
    else:
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(compute.num_processes), "--main_process_port", str(port or free_port()),
            "--module", module, *args]
    return cmd


def launch_env(compute, base: dict | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[LAUNCHED_ENV] = "1"
    if compute.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def relaunch(compute, module: str, args: list[str], log=print) -> int:
    """Run `module args` under `accelerate launch`; returns its exit code (the first failing rank's)."""
    cmd = launch_command(compute, module, args)
    log(f"[{module}] {compute.num_processes} processes: {' '.join(cmd[1:])}")
    return subprocess.run(cmd, env=launch_env(compute)).returncode


def maybe_relaunch(compute, module: str, args: list[str], log=print) -> int | None:
    """A stage's self-launch: its exit code under `accelerate launch` when `compute` asks for several processes (or
    an accelerate config) and this is not already a launched process; None: run here."""
    return relaunch(compute, module, args, log) if needs_launch(compute) else None


def _on_cpu(compute) -> bool:
    if compute.device == "cuda":
        resolve_device("cuda")  # no visible GPU: a clear error
    return compute.device == "cpu" or (compute.device == "auto" and not torch.cuda.is_available())


def make_accelerator(compute):
    """The Accelerator of one training run. Outside a launch its process-wide state is reset first, so runs with
    different settings can follow each other in one process (tests, benches)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    cpu = _on_cpu(compute)
    if not is_launched():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(cpu=cpu, gradient_accumulation_steps=compute.grad_accumulation)


def micro_slices(n: int, k: int, world: int) -> list[list[slice]]:
    """[micro j][rank r] -> the slice of a global batch of n items that rank r handles in micro-step j: the batch in
    k near-equal contiguous chunks, each in `world` near-equal contiguous parts (some may be empty). Reading them
    j-major, r-minor gives back the batch in order."""
    def cuts(a: int, b: int, parts: int) -> list[slice]:
        size, rem = divmod(b - a, parts)
        out, s = [], a
        for i in range(parts):
            e = s + size + (i < rem)
            out.append(slice(s, e))
            s = e
        return out

    return [cuts(c.start, c.stop, world) for c in cuts(0, n, k)]


@dataclass
class Dist:
    """One process of a data-parallel SNIP run (rank 0 of 1 outside a launch)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In place: t summed over the processes (via the process device: NCCL reduces only GPU tensors)."""
        if self.world == 1:
            return t
        x = t.to(self.device)
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM)
        if x is not t:
            t.copy_(x)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast_object(self, obj):
        """The main process's `obj` on every process (a picklable value; outside a launch: obj itself)."""
        if self.world == 1:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def dist_context(compute) -> Dist:
    """This process's place in a launched run (initialising the process group), or the single process."""
    if not is_launched():
        return Dist(torch.device("cpu") if _on_cpu(compute) else resolve_device("cuda"))
    from accelerate import PartialState

    st = PartialState(cpu=_on_cpu(compute))
    return Dist(st.device, st.process_index, st.num_processes)
