"""Prefect flows of continual SafePatching: thin wrappers that pass paths and names, never tensors.

  continual_psa   take new batches from data/incoming/ (GX validation, quarantine on failure, `dvc add`,
                  a new round in params.yaml), then run every round in order, one at a time, under a
                  workspace lock: `dvc repro` of the round, then MLflow registration + promotion gate.
  psa_round       one round: repro -> register.

Run: `python -m flows.continual` (ephemeral Prefect server; no server needed).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from safepatching import envdefaults

envdefaults.apply()

from prefect import flow, get_run_logger, task  # noqa: E402

from safepatching.config import load_params  # noqa: E402
from safepatching.errors import ConfigError, SafePatchingError  # noqa: E402
from safepatching.paths import ARTIFACTS, BATCHES, EVAL, INCOMING, QUARANTINE, model_dir, round_dir  # noqa: E402



def root() -> Path:
    """The project (dvc.yaml + params.yaml) the flows work on: $SAFEPATCHING_ROOT, else this checkout."""
    return Path(os.environ.get("SAFEPATCHING_ROOT") or Path(__file__).resolve().parent.parent).resolve()


class WorkspaceBusy(SafePatchingError):
    """Another continual run holds the workspace lock (never two `dvc repro` in one workspace)."""


@contextmanager
def workspace_lock(path: Path | None = None):
    path = path or root() / ".dvc" / "tmp" / "continual-psa.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(f"{path} is held by another run; rounds run one at a time") from None
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
        raise RuntimeError(f"{' '.join(args)} failed (exit {rc}):\n" + "".join(out[-30:]))
    return time.time() - t0, "".join(out)


def stage_seconds(output: str) -> float:
    """Sum of the stages' own run times (process start to end, imports included) printed by stages/_cli.py."""
    return sum(float(x) for x in re.findall(r"\] done in ([0-9.]+)s \(process", output))


@task(name="repro", retries=0)
def repro(targets: list[str]) -> dict:
    log = get_run_logger()
    wall, out = sh(["dvc", "repro", *targets], log)
    return {"wall": wall, "stages": stage_seconds(out)}


@task(name="intake", retries=0)
def intake(params_path: str) -> list[str]:
    """Validate each new file in data/incoming (sorted), add it with DVC and append a round to params.yaml."""
    from safepatching.batches.expectations import load_eval_prompts, validate_batch

    log = get_run_logger()
    incoming = root() / INCOMING
    files = sorted(p for p in incoming.glob("*") if p.suffix in {".jsonl", ".json", ".csv"}) if incoming.exists() else []
    if not files:
        return []
    params = load_params(root() / params_path)
    evals = load_eval_prompts(root() / EVAL / "val") | load_eval_prompts(root() / EVAL / "test")
    earlier = [root() / r.batch for r in params.rounds.values()]
    added = []
    for f in files:
        rep = validate_batch(f, params.data, evals, earlier, root() / QUARANTINE, root() / "reports" / "intake")
        taken = set(params.rounds) | set(added)
        name = next(f"r{n}" for n in range(1, len(taken) + 2) if f"r{n}" not in taken)
        dest = root() / BATCHES / f"{name}_{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), dest)
        sh(["dvc", "add", str(dest.relative_to(root()))], log)
        parent = added[-1] if added else (list(params.rounds)[-1] if params.rounds else "backbone")
        append_round(root() / params_path, name, str(dest.relative_to(root())), parent)
        earlier.append(dest)
        added.append(name)
        log.info(f"intake: {f.name} ({rep['rows']} rows) -> round {name} (parent {parent})")
    return added


def append_round(params_path: Path, name: str, batch: str, parent: str) -> None:
    """Append `name: {batch, parent}` under `rounds:` (keeps comments; the last top-level key is rounds)."""
    text = params_path.read_text()
    if not re.search(r"^rounds:", text, re.M):
        text += "\nrounds:\n"
    text = text.rstrip("\n") + f"\n  {name}: {{batch: {batch}, parent: {parent}}}\n"
    import yaml

    from safepatching.config import parse_params

    if name in (yaml.safe_load(params_path.read_text()).get("rounds") or {}):
        raise ConfigError(f"{params_path}: round {name!r} already exists")
    parse_params(yaml.safe_load(text), str(params_path))  # a broken params.yaml is never written
    tmp = params_path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(params_path)


def read_headline(path: Path) -> dict:
    return json.loads(path.read_text())["headline"]


@task(name="register", retries=2, retry_delay_seconds=5)
def register(params_path: str, name: str) -> dict:
    """Register the round in MLflow (idempotent) and apply the promotion gate against the champion."""
    from safepatching.ops.gate import gate
    from safepatching.ops.tracking import Registry

    log = get_run_logger()
    params = load_params(root() / params_path)
    r = params.round(name)
    reg = Registry.from_params(params, root())
    cand = read_headline(root() / round_dir(name) / "metrics_test.json")
    champ = reg.champion()
    reference = champ[2] if champ else read_headline(root() / ARTIFACTS / "backbone" / "metrics_test.json")
    decision = gate(cand, reference, params.gate)
    art = root() / round_dir(name)
    tags = {"round": name, "parent_round": r.parent,
            "batch_sha256": json.loads((art / "validation.json").read_text())["sha256"],
            "dvc_stage_hash": dvc_stage_hash(f"merge@{name}"), "git_commit": git_commit(),
            "patch_se": (art / "se" / "manifest.json").read_text(), "patch_om": (art / "om" / "manifest.json").read_text(),
            "selected": (art / "select" / "selected.json").read_text()}
    parent_version = None
    if r.parent != "backbone":
        pv = reg.latest_version(r.parent)
        parent_version = pv.version if pv else None
    tags["parent_version"] = str(parent_version or "")
    report = write_round_report(params, name)
    chosen = json.loads(tags["selected"]).get("merge") or {}
    run_params = {"round": name, "parent": r.parent, **{f"merge.{k}": v for k, v in chosen.items()}}
    full = json.loads((art / "metrics_test.json").read_text())
    metrics = {**cand, **forgetting(full, seen_categories(params, name)),
               **{f"{j}.{k}": v for j in ("exact", "keyword") for k, v in full.get(j, {}).items()}}
    version, created = reg.register_round(name, root() / model_dir(name), run_params, metrics, decision, tags,
                                          [f for f in (report, art / "select" / "pareto.png") if f.exists()])
    log.info(f"{name}: MLflow version {version} ({'new' if created else 'already registered'}); "
             f"gate {'PASSED' if decision.passed else 'FAILED: ' + '; '.join(decision.reasons)}")
    return {"version": version, "created": created, "passed": decision.passed, "reasons": decision.reasons}


def seen_categories(params, name: str) -> list[str]:
    """Harmful categories of every batch in the round's lineage (for forgetting)."""
    from safepatching.batches.loading import load_pairs

    cats: list[str] = []
    for n in params.lineage(name):
        for c in load_pairs(root() / params.round(n).batch, params.data)["category"].unique():
            if c and c not in cats:
                cats.append(str(c))
    return cats


def forgetting(full_metrics: dict, categories: list[str]) -> dict:
    """Jailbreak harmful rate on the categories seen so far (the first ones = earlier rounds' safety)."""
    ex = full_metrics.get("exact", {})
    vals = [ex[f"harmful_jailbreak/{c}"] for c in categories if f"harmful_jailbreak/{c}" in ex]
    out = {f"seen.harmful_jailbreak.{c}": ex[f"harmful_jailbreak/{c}"] for c in categories if f"harmful_jailbreak/{c}" in ex}
    if vals:
        out["harmful_jailbreak_seen"] = round(sum(vals) / len(vals), 2)
    return out


def dvc_stage_hash(stage: str) -> str:
    import yaml

    lock = root() / "dvc.lock"
    if not lock.exists():
        return ""
    st = yaml.safe_load(lock.read_text()).get("stages", {}).get(stage, {})
    return ",".join(o.get("md5", "") for o in st.get("outs", []))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root(), capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def write_round_report(params, upto: str) -> Path:
    """Plots of harmful / over-refusal / utility over rounds (test split), backbone first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["backbone"] + params.lineage(upto)
    rows = [read_headline(root() / round_dir(n) / "metrics_test.json") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, keys, title in zip(axes, [("harmful_jailbreak", "harmful_plain"), ("over_refusal",), ("utility", "other")],
                               ["harmful (%)", "over-refusal (%)", "utility / other (%)"]):
        for k in keys:
            ax.plot(names, [r.get(k, 0) for r in rows], marker="o", label=k)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = root() / round_dir(upto) / "report.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def table(params) -> str:
    names = ["backbone"] + list(params.rounds)
    lines = [f"{'model':10s} {'harm-plain':>10s} {'harm-jb':>8s} {'over-ref':>8s} {'utility':>8s} {'other':>6s}"]
    for n in names:
        f = root() / round_dir(n) / "metrics_test.json"
        if f.exists():
            h = read_headline(f)
            lines.append(f"{n:10s} {h.get('harmful_plain', 0):10.1f} {h.get('harmful_jailbreak', 0):8.1f} "
                         f"{h.get('over_refusal', 0):8.1f} {h.get('utility', 0):8.1f} {h.get('other', 0):6.1f}")
    return "\n".join(lines)


@flow(name="psa-round")
def psa_round(name: str, params_path: str = "params.yaml") -> dict:
    t = repro([f"evaluate@{name}"])
    t0 = time.time()
    reg = register(params_path, name)
    return {"round": name, **reg, "repro_wall": t["wall"], "stage_seconds": t["stages"],
            "register_seconds": time.time() - t0}


@flow(name="continual-psa", log_prints=True)
def continual_psa(params_path: str = "params.yaml") -> list[dict]:
    log = get_run_logger()
    t_start = time.time()
    with workspace_lock():
        base = repro(["evaluate_backbone"])
        new = intake(params_path)
        if new:
            log.info(f"new rounds from data/incoming: {new}")
        params = load_params(root() / params_path)
        results = []
        for name in params.rounds:
            res = psa_round(name, params_path)
            results.append(res)
    total = time.time() - t_start
    compute = base["stages"] + sum(r["stage_seconds"] for r in results)
    overhead = total - compute
    timings = root() / "reports" / "timings.jsonl"
    timings.parent.mkdir(parents=True, exist_ok=True)
    summary = {"total_seconds": round(total, 1), "stage_compute_seconds": round(compute, 1),
               "orchestration_overhead_seconds": round(overhead, 1),
               "overhead_share": round(overhead / max(compute, 1e-9), 3), "rounds": results}
    with timings.open("a") as f:
        f.write(json.dumps(summary) + "\n")
    log.info("\n" + table(load_params(root() / params_path)))
    log.info(f"total {total:.0f}s; stage compute {compute:.0f}s; Prefect+DVC+MLflow overhead {overhead:.0f}s "
             f"({100 * overhead / max(compute, 1e-9):.1f}% of compute)")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    os.chdir(root())
    try:
        results = continual_psa(args.params)
    except SafePatchingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = load_params(root() / args.params)
    print("\n" + table(params))
    for r in results:
        print(f"  {r['round']}: MLflow version {r['version']} gate {'passed' if r['passed'] else 'failed'}")
    print("\nNext: `mlflow ui --backend-store-uri sqlite:///mlflow.db` and `dvc dag`; champion: "
          "`python -m safepatching.ops.cli status`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
