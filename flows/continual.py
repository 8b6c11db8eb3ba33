"""Prefect flows of continual SafePatching: thin wrappers that pass paths and names, never tensors.

  continual_psa   (with a DVC remote configured, params `storage:`: first pull the recorded outputs this checkout
                  lacks) take new batches from data/incoming/ (GX validation, quarantine on failure, `dvc add`,
                  a new round in params.yaml), then run every round in order, one at a time, under a
                  workspace lock: `dvc repro` of the round, then MLflow registration + promotion gate
                  (a retrained round becomes a new version; an existing one keeps its recorded decision),
                  and finally a check that the registry's champion is still in the lineage. Besides the local
                  lock it holds the Prefect server's `safepatching-rounds` slot (flows/slot.py): rounds run one at a
                  time across every machine reporting to that server.
  psa_round       one round: repro of every stage of the round (`round_stages`) -> register -> (with a remote)
                  `dvc push` of the round's outputs and everything upstream (safepatching.ops.remote).

Run: `python -m flows.continual` (ephemeral Prefect server; no server needed). Exit codes: 0 every round ran and
nothing needs a person; 2 an error, one `error: ...` message on stderr (the workspace lock is held, params or a
batch are invalid, `dvc repro` failed: its last lines); 3 the run finished but something needs a person (the
`ATTENTION` list: a quarantined batch, a skipped round, an upload left waiting, a champion out of the lineage).
`make run` exits 2 whenever this exits non-zero (make's own code; its last line says `Error 2` or `Error 3`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from safepatching import envdefaults

envdefaults.apply()

import yaml  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402

from safepatching.ops.record import summary_line  # noqa: E402
from safepatching.ops.report import table  # noqa: E402

from safepatching.config import load_params  # noqa: E402
from safepatching.errors import ConfigError, SafePatchingError  # noqa: E402
from safepatching.layout import Project, RoundLayout  # noqa: E402

from flows.slot import rounds_slot  # noqa: E402


def root() -> Path:
    """The project (dvc.yaml + params.yaml) the flows work on: $SAFEPATCHING_ROOT, else this checkout."""
    return Path(os.environ.get("SAFEPATCHING_ROOT") or Path(__file__).resolve().parent.parent).resolve()


class WorkspaceBusy(SafePatchingError):
    """Another continual run holds the workspace lock (never two `dvc repro` in one workspace)."""


class StageFailed(SafePatchingError):
    """A command the flow runs (`dvc repro`) failed; the message holds its exit code and the last lines it printed."""


_HELD: dict[str, int] = {}  # lock path -> pid of this process while it holds it (re-entrant: main() and the flow)


@contextmanager
def workspace_lock(path: Path | None = None, log=None):
    """Exclusive lock of the workspace (flock on `path`, released when the process dies). The holder writes its pid,
    host, start time and command into the file (`state: running`, then `ended` when it lets go); a refused run names
    that holder and leaves the file untouched. A record still `running` when the lock is free means the previous run
    was killed: `log` (default: stderr) gets a line saying so and what this run will finish. Re-entrant within one
    process (main() takes it before the Prefect server starts, the flow again inside)."""
    path = Path(path or Project(root()).lock).absolute()
    key = str(path)
    if _HELD.get(key) == os.getpid():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never O_TRUNC: the holder's record stays readable
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(f"{path} is held by another run ({_holder(path)}); rounds run one at a time: wait for "
                                "it, or stop it") from None
        killed = _interrupted(path)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "cmd": " ".join(sys.argv)[:300], "state": "running"}
        _write_holder(fd, holder)
        _HELD[key] = os.getpid()
        if killed:
            (log or (lambda line: print(line, file=sys.stderr, flush=True)))(killed)
        try:
            yield
        finally:
            _HELD.pop(key, None)
            _write_holder(fd, {**holder, "state": "ended", "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_holder(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _interrupted(path: Path) -> str | None:
    """A line for a person when the lock file's last holder never let go (it was killed), else None."""
    try:
        h = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(h, dict) or h.get("state") != "running":
        return None
    return (f"RESUMING: the previous run (pid {h.get('pid')} on {h.get('host')}, started {h.get('started')}) was "
            "interrupted before it finished. This run completes its work: intake reconciles its journal, `dvc repro` "
            "reruns every stage it did not finish (half-written .tmp-* folders of dead writers are removed), "
            "registration finishes an interrupted version or ends its MLflow runs as KILLED.")


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "holder unknown"
    try:
        h = json.loads(text)
        return f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')}: {h.get('cmd')}"
    except (json.JSONDecodeError, AttributeError):
        return f"pid {text[:40]}" if text else "holder unknown"


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def sh(args: list[str], log=None) -> tuple[float, str]:
    """Run a command at the project root, stream its output to the log; raise on failure."""
    t0 = time.time()
    proc = subprocess.Popen(args, cwd=root(), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if log and line.strip() and not re.search(r"Loading weights|Writing model|it/s\]", line):
            log.info(line.rstrip())
    rc = proc.wait()
    if rc != 0:
        raise StageFailed(f"{' '.join(args)} failed (exit {rc}); its last lines:\n" + "".join(out[-30:]))
    return time.time() - t0, "".join(out)


def stage_seconds(output: str) -> float:
    """Sum of the stages' own run times (process start to end, imports included) printed by stages/_cli.py."""
    return sum(float(x) for x in re.findall(r"\] done in ([0-9.]+)s \(process", output))


def round_stages(name: str, project: Path | None = None) -> list[str]:
    """Every DVC stage of round `name`, in dvc.yaml's order: `<stage>@<name>` for each stage whose `foreach` is a
    mapping keyed by round name that holds `name` (`${rounds}`, `${redteam}`, or any such section of params.yaml, the
    file DVC interpolates). A new in-round stage is found here with no edit; a list `foreach` (`[val, test]`) is not
    a round's. No stage at all is a ConfigError (an empty target list would make `dvc repro` rebuild everything)."""
    project = Path(project or root())
    stages = (yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages") or {}
    params = yaml.safe_load(Project(project).params.read_text(encoding="utf-8")) or {}
    out = []
    for stage, spec in stages.items():
        items = spec.get("foreach") if isinstance(spec, dict) else None
        ref = re.fullmatch(r"\$\{\s*([\w.]+)\s*\}", items) if isinstance(items, str) else None
        if ref:
            items = params
            for key in ref.group(1).split("."):
                items = items.get(key) if isinstance(items, dict) else None
        if isinstance(items, dict) and name in items:
            out.append(f"{stage}@{name}")
    if not out:
        raise ConfigError(f"{project / 'dvc.yaml'} has no stage of round {name!r} (no `foreach` over a params section "
                          f"keyed by round name holds it; is it in {Project(project).params}?)")
    return out


@task(name="repro", retries=0)
def repro(targets: list[str]) -> dict:
    log = get_run_logger()
    wall, out = sh(["dvc", "repro", *targets], log)
    return {"wall": wall, "stages": stage_seconds(out)}


@task(name="intake", retries=0)
def intake(params_path: str) -> dict:
    """Reconcile half-done intakes, then new files in data/incoming -> validated, `dvc add`ed, appended as rounds
    (safepatching.ops.intake). A failing file is quarantined and reported in the result; it never fails the run."""
    from safepatching.ops.intake import intake as take_in

    log = get_run_logger()
    project = Project(root())

    def rel(path: Path) -> str:
        return os.path.relpath(path, project.root)

    res = take_in(project, project.root / params_path, log=log.info, warn=log.warning,
                  track=lambda path: sh(["dvc", "add", rel(path)], log),
                  restore=lambda path: sh(["dvc", "checkout", rel(path) + ".dvc"], log))
    for line in res.summary():
        (log.info if res.ok else log.warning)(line)
    return res.as_dict()


class ContinualResult(list):
    """The rounds' results (a list, one dict per round) plus what intake did (`intake`), rounds that could not run
    (`skipped`) and the champion check's line (`champion`: the champion is not in the lineage); `ok` is False when
    anything needs a person (`attention()` lists it)."""

    def __init__(self, rounds=(), intake: dict | None = None, skipped: list[str] | None = None,
                 champion: str | None = None):
        super().__init__(rounds)
        self.intake = intake or {}
        self.skipped = skipped or []
        self.champion = champion

    @property
    def ok(self) -> bool:
        return bool(self.intake.get("ok", True)) and not self.attention()

    def attention(self) -> list[str]:
        """Lines for a person: quarantined files, problems, skipped rounds, uploads left waiting, a champion out of
        the lineage (it stays every new round's gate reference until a current version is promoted)."""
        out = [f"QUARANTINED {q['file']!a} ({q['rule']}): see {q['report']}" for q in self.intake.get("quarantined", [])]
        out += [f"PROBLEM {p}" for p in self.intake.get("problems", [])]
        out += [f"SKIPPED round {r}: its batch (or an ancestor's) is missing" for r in self.skipped]
        out += [f"WAITING {n!a}: an upload not complete yet (still being written); left in the incoming folder for the "
                "next run" for n in self.intake.get("waiting", [])]
        if self.champion:
            out.append(f"STALE CHAMPION: {self.champion}")
        return out

    def __reduce__(self):
        return (ContinualResult, (list(self), self.intake, self.skipped, self.champion))


@task(name="register", retries=2, retry_delay_seconds=5)
def register(params_path: str, name: str) -> dict:
    """Register the round in MLflow (idempotent) and apply the promotion gate (safepatching.ops.record)."""
    from safepatching.ops.record import record_round

    params = load_params(root() / params_path)
    return record_round(params, RoundLayout.of(params, name, root()), log=get_run_logger().info).as_dict()


@task(name="pull", retries=0)
def pull(params_path: str) -> list[str]:
    """`dvc pull` of the recorded outputs this checkout lacks from the configured remote (safepatching.ops.remote)."""
    from safepatching.ops.remote import pull_missing

    return pull_missing(load_params(root() / params_path).storage, root(), log=get_run_logger().info, env=_env())


@task(name="push", retries=0)
def push(params_path: str, targets: list[str]) -> None:
    """`dvc push --with-deps` of a round's stages to the configured remote (safepatching.ops.remote)."""
    from safepatching.ops.remote import push as push_outputs

    push_outputs(load_params(root() / params_path).storage, root(), targets, log=get_run_logger().info, env=_env())


def _remote(params_path: str) -> bool:
    return load_params(root() / params_path).storage.enabled


@task(name="check-champion", retries=0)
def check_champion(params_path: str) -> str | None:
    """A line when the champion's model is no round's current model, naming the gate reference it stays
    (safepatching.ops.record; reads the registry only)."""
    from safepatching.ops.record import check_champion as check

    return check(load_params(root() / params_path), root())


@flow(name="psa-round")
def psa_round(name: str, params_path: str = "params.yaml") -> dict:
    stages = round_stages(name)
    t = repro(stages)
    t0 = time.time()
    reg = register(params_path, name)
    registered = time.time() - t0
    if _remote(params_path):
        push(params_path, stages)
    return {"round": name, **reg, "repro_wall": t["wall"], "stage_seconds": t["stages"],
            "register_seconds": registered}


@flow(name="continual-psa", log_prints=True)
def continual_psa(params_path: str = "params.yaml") -> list[dict]:
    log = get_run_logger()
    t_start = time.time()
    with workspace_lock(log=log.warning), rounds_slot(str(root()), log=log.warning):
        if _remote(params_path):
            pull(params_path)
        base = repro(["evaluate_backbone"])
        taken = intake(params_path)
        if taken["added"]:
            log.info(f"new rounds from data/incoming: {taken['added']}")
        params = load_params(root() / params_path)
        broken = set(taken["broken_rounds"])
        skipped = [n for n in params.rounds if broken & set(params.lineage(n))]
        results = ContinualResult(intake=taken, skipped=skipped)
        for name in params.rounds:
            if name in skipped:
                log.error(f"round {name}: skipped, its batch (or an ancestor's) is missing; see the intake problems")
                continue
            res = psa_round(name, params_path)
            results.append(res)
        warning = check_champion(params_path)
        results.champion = warning
    total = time.time() - t_start
    compute = base["stages"] + sum(r["stage_seconds"] for r in results)
    overhead = total - compute
    timings = Project(root()).reports / "timings.jsonl"
    timings.parent.mkdir(parents=True, exist_ok=True)
    summary = {"total_seconds": round(total, 1), "stage_compute_seconds": round(compute, 1),
               "orchestration_overhead_seconds": round(overhead, 1),
               "overhead_share": round(overhead / max(compute, 1e-9), 3), "rounds": list(results),
               "champion_warning": warning, "ok": results.ok}
    with timings.open("a") as f:
        f.write(json.dumps(summary) + "\n")
    log.info("\n" + table(load_params(root() / params_path), Project(root())))
    for r in results:
        log.info(summary_line(r))
    if warning:
        log.warning(warning)
    log.info(f"total {total:.0f}s; stage compute {compute:.0f}s; Prefect+DVC+MLflow overhead {overhead:.0f}s "
             f"({100 * overhead / max(compute, 1e-9):.1f}% of compute)")
    for line in results.attention():
        log.error(line)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    os.chdir(root())
    try:
        with workspace_lock():  # before the flow starts its Prefect server: a refused run starts nothing
            results = continual_psa(args.params)
    except SafePatchingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = load_params(root() / args.params)
    print("\n" + table(params, Project(root())))
    for r in results:
        print("  " + summary_line(r))
    warning = check_champion.fn(args.params)  # the registry as the run left it
    if warning:
        print(f"WARNING: {warning}")
    if isinstance(results, ContinualResult):
        results.champion = warning
    print("\nNext: `mlflow ui --backend-store-uri sqlite:///mlflow.db` and `dvc dag`; champion: "
          "`python -m safepatching.ops.cli status`")
    attention = getattr(results, "attention", lambda: [])()
    if attention:
        print("\nATTENTION (exit 3):\n" + "\n".join(f"  {line}" for line in attention), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
