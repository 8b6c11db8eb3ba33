"""One intake run: reconcile the journal, scan data/incoming/, and take each complete batch in as a transaction
(check -> journal -> move -> hash -> `dvc add` -> hash + .dvc md5 -> append the round -> close).

A failing file is quarantined (batches.quarantine); one file's failure never stops the others or the run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ... import crash
from ...batches.expectations import check_batch
from ...batches.loading import load_pairs
from ...batches.quarantine import quarantine, quarantine_file, save_report
from ...config import Params, load_params
from ...errors import ConfigError, DataError
from ...layout import BACKBONE, Project
from .journal import Journal, now, reconcile, sha256_of
from .paramsfile import append_round
from .scan import MARKER, Candidate, scan, show, unchanged


def _step(name: str) -> None:
    """Called at each step boundary of a batch's transaction (before_move, after_move, before_track, after_track,
    after_append): the crash point `intake.<name>` (safepatching.crash; crash tests also replace it)."""
    crash.point(f"intake.{name}")


def next_round_name(taken: set[str]) -> str:
    return next(f"r{n}" for n in range(1, len(taken) + 2) if f"r{n}" not in taken)


def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file (md5: what DVC records in the .dvc file)."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _dvc_md5(path: Path) -> str | None:
    """The md5 that `<path>.dvc` records for `path` (None without a .dvc file or an md5 in it)."""
    dvc = path.with_name(path.name + ".dvc")
    if not dvc.is_file():
        return None
    try:
        outs = (yaml.safe_load(dvc.read_text(encoding="utf-8")) or {}).get("outs") or []
        return next((o.get("md5") for o in outs if isinstance(o, dict) and o.get("md5")), None)
    except (yaml.YAMLError, OSError, AttributeError):
        return None


@dataclass
class IntakeResult:
    """What one intake did. `ok` is False when anything needs a person: a quarantined file, a problem, a broken round."""

    added: list[str] = field(default_factory=list)            # rounds appended to params.yaml
    quarantined: list[dict] = field(default_factory=list)     # {"file", "rule", "report"}
    waiting: list[str] = field(default_factory=list)          # left in incoming (still being written)
    ignored: list[str] = field(default_factory=list)          # not batch files, left in incoming
    reconciled: list[str] = field(default_factory=list)       # what start-up reconciliation did
    problems: list[str] = field(default_factory=list)         # what intake could not do
    broken_rounds: list[str] = field(default_factory=list)    # rounds whose batch is missing: cannot run

    @property
    def ok(self) -> bool:
        return not (self.quarantined or self.problems or self.broken_rounds)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> list[str]:
        """One log line each; every file name shown with `show` (a newline in a name never splits a line)."""
        out = [f"intake: new rounds {self.added}" if self.added else "intake: no new rounds"]
        out += [f"intake: QUARANTINED {show(q['file'])} ({q['rule']}); report {q['report']}" for q in self.quarantined]
        out += [f"intake: PROBLEM {p}" for p in self.problems]
        out += [f"intake: reconciled: {r}" for r in self.reconciled]
        if self.waiting:
            out.append(f"intake: waiting for {', '.join(map(show, self.waiting))} (still being written)")
        if self.ignored:
            out.append(f"intake: ignored (not .jsonl/.json/.csv): {', '.join(map(show, self.ignored))}")
        return out


class _Stop(Exception):
    """Stop taking in further files (e.g. `dvc add` itself fails); the journal keeps the batch for the next run."""


class Intake:
    """The state of one run (project, params, journal, result) and the steps of one batch's transaction."""

    def __init__(self, project: Project, params_path: Path, track, restore, log, warn):
        self.project, self.params_path = project, Path(params_path)
        self.track, self.restore, self.log, self.warn = track, restore, log, warn
        self.res = IntakeResult()
        self.params: Params = load_params(self.params_path)
        self.report_dir = project.reports / "intake"
        self.journal = Journal(project.intake_journal, self.report_dir, warn)
        self._evals: dict[str, list[str]] | None = None
        self._earlier: list[Path] | None = None

    # ---- helpers -------------------------------------------------------------------------------------------
    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p, self.project.root)).as_posix()

    def round_of(self) -> dict[str, str]:
        """Normalised batch path -> round name, over params.yaml's rounds."""
        return {os.path.normpath(r.batch): n for n, r in self.params.rounds.items()}

    def evals(self) -> dict[str, list[str]]:
        if self._evals is None:
            from ...evaluation.suite import suite_prompt_sets

            self._evals = suite_prompt_sets(self.params.eval.suite, self.project.root)
        return self._evals

    def earlier(self) -> list[Path]:
        """The rounds' batches that can be read (a missing one is reported by reconciliation, an unreadable one by
        its round's validate stage): a new batch is compared with these."""
        if self._earlier is None:
            self._earlier = []
            for r in self.params.rounds.values():
                p = self.project.root / r.batch
                try:
                    load_pairs(p, self.params.data)
                except DataError:
                    continue
                self._earlier.append(p)
        return self._earlier

    def quarantine(self, path: Path, rule: str, detail: str, sha: str | None = None) -> None:
        e = quarantine_file(path, rule, detail, self.project.quarantine, sha256=sha)
        self.res.quarantined.append({"file": path.name, "rule": rule, "report": e.report_path})
        self.warn(f"intake: {show(path.name)}: QUARANTINED ({rule}): {detail}; report {e.report_path}")
        self.drop_marker(path.name)

    def drop_marker(self, name: str) -> None:
        marker = self.project.incoming / (name + MARKER)
        if marker.is_file() and not marker.is_symlink():
            marker.unlink()

    def untrack(self, dest: Path) -> None:
        dvc = dest.with_name(dest.name + ".dvc")
        if dvc.exists():
            dvc.unlink()

    def note(self, msg: str) -> None:
        self.res.reconciled.append(msg)
        self.warn(f"intake: reconciled: {msg}")

    def problem(self, msg: str) -> None:
        self.res.problems.append(msg)
        self.warn(f"intake: PROBLEM: {msg}")

    # ---- one batch -----------------------------------------------------------------------------------------
    def take(self, c: Candidate) -> None:
        """Check one file, then move -> track -> append it, journaled."""
        f = c.path
        try:
            rep = check_batch(f, self.params.data, self.evals(), self.earlier())
        except Exception as e:  # noqa: BLE001 -- one file's failure is that file's quarantine, never the run's
            if not os.path.lexists(f):
                self.log(f"intake: {show(f.name)} disappeared while being validated; skipped")
                return
            self.quarantine(f, "unreadable", f"{type(e).__name__}: {str(e)[:500]}")
            return
        if not unchanged(f, c.stat):  # written to while it was checked: not handed over yet
            self.res.waiting.append(f.name)
            self.log(f"intake: {f.name}: changed while it was being validated (size, mtime or inode); left for the "
                     f"next run (hand it over complete: rename it into data/incoming, or write {f.name}{MARKER})")
            return
        if not rep.success:
            err = quarantine(f, rep, self.project.quarantine)
            self.res.quarantined.append({"file": f.name, "rule": ",".join(sorted({x["rule"] for x in rep.failures})),
                                         "report": err.report_path})
            self.warn(f"intake: QUARANTINED: {err}")
            self.drop_marker(f.name)
            return
        saved = Path(save_report(rep, self.report_dir)["report_path"])  # == report_path(report_dir, f.name)
        taken = set(self.params.rounds) | {e["round"] for e in self.journal.entries}
        while True:
            name = next_round_name(taken)
            dest = self.project.batches / f"{name}_{f.name}"
            if not os.path.lexists(dest):
                break
            taken.add(name)
        entry = {"source": f.name, "dest": self.rel(dest), "round": name, "sha256": rep.sha256, "rows": rep.rows,
                 "report_sha256": sha256_of(saved), "step": "validated", "at": now()}
        self.journal.add(entry)
        _step("before_move")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(f, dest)
        except OSError:  # another file system: copy under a dot name, then rename (never a half file at dest)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copy2(f, tmp)
            os.replace(tmp, dest)
            f.unlink()
        _step("after_move")
        self.journal.step(entry, "moved")
        self.finish(entry, "moved")

    def finish(self, e: dict, step: str) -> None:
        """From `step` on: check the hash, track, check again, append the round, close the journal entry."""
        dest = self.project.root / e["dest"]
        if not stat.S_ISREG(os.lstat(dest).st_mode):  # swapped for a link or folder under our feet
            self.journal.close(e)
            self.quarantine(dest, "not_regular_file", f"{e['dest']} is no longer a regular file")
            self.drop_marker(e["source"])
            return
        if step == "moved" or _dvc_md5(dest) is None:
            sha, _ = file_hashes(dest)
            if sha != e["sha256"]:
                self.bad_hash(e, dest, sha, "after its move")
                return
            _step("before_track")
            try:
                self.track(dest)
            except Exception as err:  # noqa: BLE001
                self.problem(f"{show(e['source'])}: `dvc add {e['dest']}` failed ({str(err).strip()[-500:]}); the "
                             "batch stays in data/batches and in the journal: the next run resumes it")
                raise _Stop from None
            _step("after_track")
        sha, md5 = file_hashes(dest)
        recorded = _dvc_md5(dest)
        if sha != e["sha256"] or (recorded is not None and recorded != md5):
            self.untrack(dest)
            self.bad_hash(e, dest, sha, "when DVC tracked it" + (f" (.dvc md5 {recorded} != file md5 {md5})"
                                                                  if recorded not in (None, md5) else ""))
            return
        if e["step"] != "tracked":
            self.journal.step(e, "tracked")
        name = e["round"]
        if name in self.params.rounds:
            name = next_round_name(set(self.params.rounds) | {x["round"] for x in self.journal.entries if x is not e})
        parent = list(self.params.rounds)[-1] if self.params.rounds else BACKBONE
        try:
            append_round(self.params_path, name, e["dest"], parent)
        except ConfigError as err:
            self.problem(f"{show(e['source'])}: appending round {name} to params.yaml failed ({err}); the batch "
                         f"stays in {e['dest']} and in the journal: fix params.yaml and rerun")
            raise _Stop from None
        _step("after_append")
        self.params = load_params(self.params_path)
        self._earlier = None
        self.journal.close(e)
        self.drop_marker(e["source"])
        self.res.added.append(name)
        self.log(f"intake: {e['source']} ({e['rows']} rows, sha256 {e['sha256'][:12]}) -> round {name} "
                 f"(parent {parent}), {e['dest']}")

    def bad_hash(self, e: dict, dest: Path, sha: str, when: str) -> None:
        self.journal.close(e)
        self.quarantine(dest, "changed_during_intake",
                        f"{e['source']} changed after it was validated ({when}: sha256 {sha[:12]}, validated "
                        f"{e['sha256'][:12]}): it was still being written. Hand it over complete (see README)", sha)
        self.drop_marker(e["source"])


def intake(project: Project, params_path: Path, track: Callable[[Path], Any], log: Callable[[str], Any] = print,
           *, restore: Callable[[Path], Any] | None = None, warn: Callable[[str], Any] | None = None,
           sleep: Callable[[float], Any] = time.sleep) -> IntakeResult:
    """Reconcile anything half-done, then take in every complete new file of data/incoming (sorted by name).

    Never raises for one file's problem (it is quarantined, deferred or reported in the result); raises ConfigError
    only when params.yaml itself cannot be read."""
    run = Intake(project, Path(params_path), track, restore, log, warn or log)
    try:
        reconcile(run)
        found = scan(project.incoming, run.params.data.stability_seconds, sleep, log, run.warn)
        run.res.waiting += found.waiting
        run.res.ignored += found.ignored
        for path, rule, detail in found.refused:
            run.quarantine(path, rule, detail)
        for c in found.ready:
            run.take(c)
    except _Stop:
        pass
    return run.res
