"""Intake of new harmful-data batches: data/incoming/ -> checked, validated, moved to data/batches/, tracked with DVC
and appended as the next round (its parent: the last round) to params.yaml -- one batch at a time, as a transaction.

Hand-over protocol (README, "How to hand a batch to the pipeline"):
  * a batch is a regular file named ``[A-Za-z0-9][A-Za-z0-9._-]*.(jsonl|json|csv)`` (at most 128 characters);
  * it is taken once it is complete: ``<name>.done`` exists beside it, or its size and mtime stay unchanged across
    two looks ``data.stability_seconds`` apart (else it waits for the next run);
  * dotfiles, ``*.tmp`` and ``*.part`` are uploads in progress (skipped); other suffixes are left in place with a
    log line;
  * a link, directory, FIFO ... named like a batch, a bad name, a file over the size caps or one failing its
    expectations is quarantined (data/quarantine/<name> + report + HTML, see batches.expectations); one file's
    failure never stops the others or the run.

Transaction: every batch's step is recorded in a journal (``.dvc/tmp/intake-journal.json``, written atomically)
    validated -> moved (to data/batches/<round>_<name>) -> tracked (`dvc add`) -> appended (params.yaml) -> closed
so a kill at any point is finished (or rolled back) by the next run's reconciliation, which also repairs what has no
journal entry: a batch file in data/batches/ without a round goes back to data/incoming/ to be taken in again, a round
whose batch is missing is restored from DVC (`restore`) or reported as broken, an untracked one is `dvc add`ed. The
sha256 of the file DVC tracks must equal the validated one (re-hashed after the move and after `dvc add`; the md5 in
its .dvc file is checked too).

`track(path)` puts a file under DVC (`dvc add`), `restore(path)` checks a tracked file out again; intake runs no
commands itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .. import crash
from ..batches.expectations import SAFE_NAME, quarantine_file, validate_batch
from ..batches.loading import load_pairs
from ..config import Params, load_params, load_yaml_text, parse_params
from ..errors import ConfigError, DataError, SafePatchingError, ValidationFailed
from ..layout import BACKBONE, Project

SUFFIXES = (".jsonl", ".json", ".csv")
IN_PROGRESS = (".tmp", ".part")
MARKER = ".done"
NAME_RULE = "[A-Za-z0-9][A-Za-z0-9._-]*.(jsonl|json|csv), at most 128 characters"
STEPS = ("validated", "moved", "tracked")
_ROUND_PREFIX = re.compile(r"r\d+_(.+)")


def _step(name: str) -> None:
    """Called at each step boundary of a batch's transaction (before_move, after_move, before_track, after_track,
    after_append): the crash point `intake.<name>` (safepatching.crash; crash tests also replace it)."""
    crash.point(f"intake.{name}")


def show(name: str) -> str:
    """A file name fit for one log line: as is when it is a plain name, else its Python repr (newlines, tabs ...)."""
    return name if SAFE_NAME.fullmatch(name) else ascii(name)


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


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a dot-named temporary file, fsynced, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        out = [f"intake: new rounds {self.added}" if self.added else "intake: no new rounds"]
        out += [f"intake: QUARANTINED {q['file']} ({q['rule']}); report {q['report']}" for q in self.quarantined]
        out += [f"intake: PROBLEM {p}" for p in self.problems]
        out += [f"intake: reconciled: {r}" for r in self.reconciled]
        if self.waiting:
            out.append(f"intake: waiting for {', '.join(map(show, self.waiting))} (still being written)")
        if self.ignored:
            out.append(f"intake: ignored (not .jsonl/.json/.csv): {', '.join(map(show, self.ignored))}")
        return out


class _Stop(Exception):
    """Stop taking in further files (e.g. `dvc add` itself fails); the journal keeps the batch for the next run."""


class Journal:
    """The intake's transaction journal: one entry per batch between validation and its round."""

    def __init__(self, path: Path, warn: Callable[[str], Any]):
        self.path = path
        self.entries: list[dict] = []
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                entries = [e for e in data.get("entries", []) if isinstance(e, dict)]
            except (json.JSONDecodeError, OSError, AttributeError) as e:
                aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
                os.replace(path, aside)
                warn(f"intake: journal {path} unreadable ({e}); moved to {aside.name}, reconciling from the files")
                entries = []
            for e in entries:
                if self.well_formed(e):
                    self.entries.append(e)
                else:
                    warn(f"intake: journal entry ignored (not one intake writes): {ascii(e)[:300]}")

    @staticmethod
    def well_formed(e: dict) -> bool:
        """Only entries intake itself writes: a plain source name, a dest data/batches/<round>_<that name>."""
        src, dest, name = e.get("source"), e.get("dest"), e.get("round")
        return (e.get("step") in STEPS and isinstance(src, str) and SAFE_NAME.fullmatch(src) is not None
                and isinstance(name, str) and re.fullmatch(r"r\d+", name) is not None
                and dest == f"data/batches/{name}_{src}" and isinstance(e.get("sha256"), str))

    def save(self) -> None:
        if not self.entries:
            if self.path.exists():
                self.path.unlink()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, json.dumps({"version": 1, "entries": self.entries}, indent=2))

    def add(self, entry: dict) -> None:
        self.entries.append(entry)
        self.save()

    def step(self, entry: dict, step: str) -> None:
        entry.update(step=step, at=_now())
        self.save()

    def close(self, entry: dict) -> None:
        self.entries = [e for e in self.entries if e is not entry]
        self.save()


class _Intake:
    def __init__(self, project: Project, params_path: Path, track, restore, log, warn):
        self.project, self.params_path = project, Path(params_path)
        self.track, self.restore, self.log, self.warn = track, restore, log, warn
        self.res = IntakeResult()
        self.params: Params = load_params(self.params_path)
        self.journal = Journal(project.intake_journal, warn)
        self._evals: set[str] | None = None
        self._earlier: list[Path] | None = None

    # ---- helpers -------------------------------------------------------------------------------------------
    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p, self.project.root)).as_posix()

    def round_of(self) -> dict[str, str]:
        """Normalised batch path -> round name, over params.yaml's rounds."""
        return {os.path.normpath(r.batch): n for n, r in self.params.rounds.items()}

    def evals(self) -> set[str]:
        if self._evals is None:
            from ..evaluation.suite import suite_prompts

            self._evals = suite_prompts(self.params.eval.suite, self.project.root)
        return self._evals

    def earlier(self) -> list[Path]:
        """The rounds' batches that can be read (a missing one is reported by check_rounds, an unreadable one by its
        round's validate stage): a new batch is compared with these."""
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

    # ---- start-up reconciliation ---------------------------------------------------------------------------
    def reconcile(self) -> None:
        for entry in list(self.journal.entries):
            self.resume(entry)
        self.check_rounds()
        self.return_orphans()

    def resume(self, e: dict) -> None:
        src, dest = self.project.incoming / e["source"], self.project.root / e["dest"]
        done = self.round_of().get(os.path.normpath(e["dest"]))
        if done is not None:
            self.journal.close(e)
            self.drop_marker(e["source"])
            self.note(f"{show(e['source'])}: round {done} had been appended before the interruption; journal closed")
            return
        step = e["step"]
        if step == "validated":
            if os.path.lexists(src):
                if dest.is_file() and not dest.is_symlink():  # a partial cross-device copy
                    dest.unlink()
                self.journal.close(e)
                self.note(f"{show(e['source'])}: interrupted before its move; it stays in data/incoming and is "
                          "taken in again")
                return
            step = "moved"  # the rename happened, its journal step did not
        if not dest.is_file():
            self.journal.close(e)
            self.problem(f"{show(e['source'])}: the journal says '{e['step']}' but {e['dest']} is missing and "
                         f"data/incoming has no {show(e['source'])}; look in data/quarantine/ or restore the file")
            return
        self.note(f"{show(e['source'])}: resuming its intake interrupted after '{step}' ({e['dest']})")
        self.finish(e, step)

    def check_rounds(self) -> None:
        """Rounds whose batch intake owns (under data/batches/): a missing file is restored or reported (the round
        and its descendants cannot run), an untracked one is tracked. Other batches are DVC's business."""
        for name, r in self.params.rounds.items():
            p = self.project.root / r.batch
            if not Path(os.path.abspath(p)).is_relative_to(os.path.abspath(self.project.batches)):
                continue
            dvc = p.with_name(p.name + ".dvc")
            if not os.path.lexists(p):
                if dvc.is_file() and self.restore is not None:
                    try:
                        self.restore(p)
                    except Exception as e:  # noqa: BLE001 -- reported below
                        why = f"restoring it from DVC failed ({str(e).strip().splitlines()[-1] if str(e).strip() else e!r})"
                    else:
                        if p.is_file():
                            self.note(f"round {name}: its batch {r.batch} was missing; restored from DVC")
                            continue
                        why = "restoring it from DVC did not bring it back"
                elif dvc.is_file():
                    why = f"it has a DVC record: `dvc checkout {self.rel(dvc)}`"
                else:
                    why = "it has no DVC record either: put the file back, or remove the round from params.yaml"
                self.res.broken_rounds.append(name)
                self.problem(f"round {name}: its batch {r.batch} is missing ({why}); this round and its descendants "
                             "cannot run")
            elif not dvc.exists():
                try:
                    self.track(p)
                except Exception as e:  # noqa: BLE001
                    self.problem(f"round {name}: its batch {r.batch} is not tracked by DVC and `dvc add` failed: {e}")
                else:
                    self.note(f"round {name}: its batch {r.batch} was not tracked by DVC; `dvc add`ed it")

    def return_orphans(self) -> None:
        """A batch in data/batches/ that no round and no journal entry names: an intake that died before the journal
        existed (or a round removed by hand without its file). It goes back to data/incoming/ and is taken in again."""
        if not self.project.batches.is_dir():
            return
        known = set(self.round_of()) | {os.path.normpath(e["dest"]) for e in self.journal.entries}
        for f in sorted(self.project.batches.iterdir()):
            n = f.name
            if n.startswith(".") or n.endswith(".dvc") or not n.endswith(SUFFIXES):
                continue
            if os.path.normpath(self.rel(f)) in known:
                continue
            if f.is_symlink() or not f.is_file():
                self.quarantine(f, "not_regular_file", f"{self.rel(f)} is not a regular file and no round names it")
                continue
            m = _ROUND_PREFIX.fullmatch(n)
            target = self.project.incoming / (m.group(1) if m else n)
            if os.path.lexists(target):
                target = self.project.incoming / n
            if os.path.lexists(target):
                self.problem(f"{self.rel(f)} has no round, and data/incoming/{show(target.name)} exists already; "
                             "move one of them by hand")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(f, target)
            self.untrack(f)
            (target.parent / (target.name + MARKER)).touch()  # complete: no need to wait for stability
            self.note(f"{self.rel(f)} had no round (an intake interrupted before its journal?); returned to "
                      f"data/incoming/{show(target.name)} to be taken in again")

    def note(self, msg: str) -> None:
        self.res.reconciled.append(msg)
        self.warn(f"intake: reconciled: {msg}")

    def problem(self, msg: str) -> None:
        self.res.problems.append(msg)
        self.warn(f"intake: PROBLEM: {msg}")

    # ---- new files -----------------------------------------------------------------------------------------
    def scan(self, sleep: Callable[[float], Any]) -> list[Path]:
        """The complete, regular, well-named batch files in data/incoming; quarantines/ignores/defers the rest."""
        incoming = self.project.incoming
        if not incoming.is_dir():
            return []
        names = sorted(os.listdir(incoming))
        present = set(names)
        candidates: list[tuple[Path, os.stat_result, bool]] = []
        for n in names:
            p = incoming / n
            if n.startswith("."):  # dotfiles: uploads in progress (rsync, scp -> rename), the journal
                continue
            if n.endswith(MARKER):
                if n[: -len(MARKER)] not in present:
                    self.log(f"intake: marker {show(n)} has no file {show(n[: -len(MARKER)])} beside it; ignored")
                continue
            if n.endswith(IN_PROGRESS):
                self.res.waiting.append(n)
                self.log(f"intake: {show(n)}: an upload in progress (*.tmp / *.part); skipped")
                continue
            if not n.endswith(SUFFIXES):
                hint = (f"; suffixes are case-sensitive: rename it to {show(n[: n.rfind('.')] + n[n.rfind('.'):].lower())}"
                        if n.lower().endswith(SUFFIXES) else "")
                self.res.ignored.append(n)
                self.warn(f"intake: {show(n)}: not a batch file (a batch ends in .jsonl, .json or .csv){hint}; "
                          "left in data/incoming")
                continue
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.quarantine(p, "not_regular_file", f"a symbolic link (to {os.readlink(p)!r}); links are never "
                                "followed: copy the file itself into data/incoming")
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
                self.quarantine(p, "not_regular_file", f"{kind}; a batch must be a regular file")
                continue
            if not SAFE_NAME.fullmatch(n):
                self.quarantine(p, "file_name", f"file name {n!r} is not allowed: a batch is named {NAME_RULE}; "
                                "rename it and hand it over again")
                continue
            candidates.append((p, st, n + MARKER in present))
        wait = self.params.data.stability_seconds
        if wait > 0 and any(not marked for _, _, marked in candidates):
            sleep(wait)
        ready = []
        for p, st, marked in candidates:
            if not marked and wait > 0:
                try:
                    now = os.lstat(p)
                except FileNotFoundError:
                    continue
                if (now.st_size, now.st_mtime_ns, now.st_ino, now.st_mode) != \
                        (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode):
                    self.res.waiting.append(p.name)
                    self.log(f"intake: {p.name}: still being written (size or mtime changed within {wait:g}s); left "
                             f"for the next run (write {p.name}{MARKER} when it is complete to skip this wait)")
                    continue
            ready.append(p)
        return ready

    def take(self, f: Path) -> None:
        """Validate one file, then move -> track -> append it, journaled."""
        try:
            rep = validate_batch(f, self.params.data, self.evals(), self.earlier(), self.project.quarantine,
                                 self.project.reports / "intake")
        except ValidationFailed as e:
            self.res.quarantined.append({"file": f.name, "rule": ",".join(sorted(self._rules(e))),
                                         "report": e.report_path})
            self.warn(f"intake: QUARANTINED: {e}")
            self.drop_marker(f.name)
            return
        except Exception as e:  # noqa: BLE001 -- one file's failure is that file's quarantine, never the run's
            if not os.path.lexists(f):
                self.log(f"intake: {show(f.name)} disappeared while being validated; skipped")
                return
            self.quarantine(f, "unreadable", f"{type(e).__name__}: {str(e)[:500]}")
            return
        taken = set(self.params.rounds) | {e["round"] for e in self.journal.entries}
        while True:
            name = next_round_name(taken)
            dest = self.project.batches / f"{name}_{f.name}"
            if not os.path.lexists(dest):
                break
            taken.add(name)
        entry = {"source": f.name, "dest": self.rel(dest), "round": name, "sha256": rep["sha256"],
                 "rows": rep["rows"], "step": "validated", "at": _now()}
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

    @staticmethod
    def _rules(e: ValidationFailed) -> set[str]:
        try:
            return {x["rule"] for x in json.loads(Path(e.report_path).read_text())["failures"]}
        except Exception:  # noqa: BLE001
            return {"validation"}

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
    run = _Intake(project, Path(params_path), track, restore, log, warn or log)
    try:
        run.reconcile()
        for f in run.scan(sleep):
            run.take(f)
    except _Stop:
        pass
    return run.res


# ---- params.yaml --------------------------------------------------------------------------------------------

def _entry_text(name: str, batch: str, parent: str) -> str:
    """`name: {batch: ..., parent: ...}` emitted by the YAML emitter (quoted as needed), one flow mapping."""
    return yaml.safe_dump({name: {"batch": batch, "parent": parent}}, default_flow_style=None, sort_keys=False,
                          width=1 << 30, allow_unicode=False)


def _append_text(text: str, name: str, batch: str, parent: str, want: dict) -> str | None:
    """Insert the entry at the end of the block-style `rounds:` mapping, keeping every other byte (comments)."""
    lines = text.splitlines(keepends=True)
    head = next((i for i, line in enumerate(lines) if re.match(r"rounds:[ \t]*(#.*)?$", line.rstrip("\r\n"))), None)
    if head is None:
        if re.search(r"^rounds[ \t]*:", text, re.M):
            return None  # e.g. `rounds: {}`: leave it to the round-trip writer
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + "rounds:\n" + "".join("  " + l for l in _entry_text(name, batch, parent).splitlines(True))
    last, indent = head, None
    for i in range(head + 1, len(lines)):
        line = lines[i]
        if line.strip() and line[0] not in " \t#":
            break  # the next top-level key
        if line.strip() and not line.lstrip().startswith("#") and line[0] in " \t":
            last = i
            if indent is None:
                indent = line[: len(line) - len(line.lstrip())]
    indent = indent or "  "
    entry = "".join(indent + l for l in _entry_text(name, batch, parent).splitlines(True))
    before = lines[: last + 1]
    if before and not before[-1].endswith("\n"):
        before[-1] += "\n"
    return "".join(before) + entry + "".join(lines[last + 1:])


def _roundtrip_text(text: str, name: str, batch: str, parent: str, want: dict) -> str | None:
    """ruamel.yaml round trip (keeps comments) for layouts the line insert does not handle."""
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedMap
    except ImportError:  # pragma: no cover -- ruamel comes with DVC
        return None
    y = YAML()
    y.width = 1 << 16
    doc = y.load(text)
    if doc is None:
        doc = CommentedMap()
    if doc.get("rounds") is None:
        doc["rounds"] = CommentedMap()
    entry = CommentedMap([("batch", batch), ("parent", parent)])
    entry.fa.set_flow_style()
    doc["rounds"][name] = entry
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _dump_text(text: str, name: str, batch: str, parent: str, want: dict) -> str:
    return ("# written by safepatching.ops.intake: the comments of this file could not be kept\n"
            + yaml.safe_dump(want, sort_keys=False, allow_unicode=False, width=1 << 30))


def append_round(params_path: Path, name: str, batch: str, parent: str) -> None:
    """Append the round `name: {batch, parent}` to params.yaml's `rounds:`.

    Written by the YAML emitter, never by string formatting: the entry is inserted as one emitted line (every other
    line, comments included, kept), or by a round trip, and the new text is re-parsed and must equal the old
    params plus exactly this round (else the next writer is tried). The result is validated like any params file
    (a broken params.yaml is never written) and replaces the old one atomically."""
    params_path = Path(params_path)
    text = params_path.read_text(encoding="utf-8")
    data = load_yaml_text(text, str(params_path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{params_path}: top level must be a mapping")
    rounds = data.get("rounds") or {}
    if not isinstance(rounds, dict):
        raise ConfigError(f"{params_path}: rounds must be a mapping")
    if name in rounds:
        raise ConfigError(f"{params_path}: round {name!r} already exists")
    want = {**data, "rounds": {**rounds, name: {"batch": batch, "parent": parent}}}
    parse_params(want, str(params_path))  # a broken params.yaml is never written
    for render in (_append_text, _roundtrip_text, _dump_text):
        new = render(text, name, batch, parent, want)
        if new is None:
            continue
        try:
            if load_yaml_text(new) == want:
                break
        except SafePatchingError:
            continue
    else:  # pragma: no cover -- _dump_text always round-trips
        raise ConfigError(f"{params_path}: could not write round {name!r}")
    _write_atomic(params_path, new)
