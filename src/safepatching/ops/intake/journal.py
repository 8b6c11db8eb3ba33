"""Intake's transaction journal (``.dvc/tmp/intake-journal.json``, written atomically) and start-up reconciliation.

Every batch's step is recorded in the journal
    validated -> moved (to data/batches/<round>_<name>) -> tracked (`dvc add`) -> appended (params.yaml) -> closed
so a kill at any point is finished (or rolled back) by the next run's reconciliation, which also repairs what has no
journal entry: a batch file in data/batches/ without a round goes back to data/incoming/ to be taken in again, a round
whose batch is missing is restored from DVC (`restore`) or reported as broken, an untracked one is `dvc add`ed.

An entry is resumed only when intake wrote it: a plain source name, a dest data/batches/<round>_<that name>, and
bound to its validation report -- the entry holds the sha256 of the report file intake wrote
(``reports/intake/<name>.report.json``), and that report must say the batch passed, with the entry's batch sha256.
A hand-written or stale entry is ignored (its file, if any, is then an orphan: re-validated from data/incoming/).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...batches.quarantine import SAFE_NAME
from ...io.atomic import write_atomic
from ...io.tables import SUFFIXES
from .scan import MARKER, show

if TYPE_CHECKING:
    from .run import Intake

STEPS = ("validated", "moved", "tracked")
_ROUND_PREFIX = re.compile(r"r\d+_(.+)")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def report_path(report_dir: Path, source: str) -> Path:
    """Where intake saves the validation report of data/incoming/<source> (a plain name)."""
    return report_dir / f"{source}.report.json"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Journal:
    """One entry per batch between validation and its round; `report_dir` holds the validation reports the
    entries are bound to."""

    def __init__(self, path: Path, report_dir: Path, warn: Callable[[str], Any]):
        self.path, self.report_dir = path, report_dir
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
            ignored = 0
            for e in entries:
                why = self.refusal(e)
                if why is None:
                    self.entries.append(e)
                else:
                    ignored += 1
                    warn(f"intake: journal entry ignored ({why}): {ascii(e)[:300]}")
            if ignored:  # kept aside for a person, out of the next runs' way
                aside = path.with_name(f"{path.name}.ignored-{int(time.time())}")
                os.replace(path, aside)
                self.save()
                warn(f"intake: journal {path.name}: {ignored} entr{'y' if ignored == 1 else 'ies'} ignored; the "
                     f"original is kept as {aside.name}")

    @staticmethod
    def well_formed(e: dict) -> bool:
        """Shaped like an entry intake writes: a plain source name, a dest data/batches/<round>_<that name>."""
        src, dest, name = e.get("source"), e.get("dest"), e.get("round")
        return (e.get("step") in STEPS and isinstance(src, str) and SAFE_NAME.fullmatch(src) is not None
                and isinstance(name, str) and re.fullmatch(r"r\d+", name) is not None
                and dest == f"data/batches/{name}_{src}" and isinstance(e.get("sha256"), str)
                and isinstance(e.get("report_sha256"), str))

    def refusal(self, e: dict) -> str | None:
        """Why entry `e` is not one intake wrote (None: it is): its shape, or its binding to the validation report."""
        if not self.well_formed(e):
            return "not one intake writes"
        report = report_path(self.report_dir, e["source"])
        try:
            if sha256_of(report) != e["report_sha256"]:
                return f"its validation report {report.name} is not the one it was written with"
            rep = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return f"no readable validation report {report.name}"
        if not (isinstance(rep, dict) and rep.get("success") is True and rep.get("sha256") == e["sha256"]
                and Path(str(rep.get("file", ""))).name == e["source"]):
            return f"its validation report {report.name} does not pass this batch"
        return None

    def save(self) -> None:
        if not self.entries:
            if self.path.exists():
                self.path.unlink()
            return
        write_atomic(self.path, json.dumps({"version": 2, "entries": self.entries}, indent=2))

    def add(self, entry: dict) -> None:
        self.entries.append(entry)
        self.save()

    def step(self, entry: dict, step: str) -> None:
        entry.update(step=step, at=now())
        self.save()

    def close(self, entry: dict) -> None:
        self.entries = [e for e in self.entries if e is not entry]
        self.save()


# ---- start-up reconciliation --------------------------------------------------------------------------------

def reconcile(run: Intake) -> None:
    """Finish or roll back every journaled batch, then repair rounds and orphans that have no entry."""
    for entry in list(run.journal.entries):
        _resume(run, entry)
    _check_rounds(run)
    _return_orphans(run)


def _resume(run: Intake, e: dict) -> None:
    src, dest = run.project.incoming / e["source"], run.project.root / e["dest"]
    done = run.round_of().get(os.path.normpath(e["dest"]))
    if done is not None:
        run.journal.close(e)
        run.drop_marker(e["source"])
        run.note(f"{show(e['source'])}: round {done} had been appended before the interruption; journal closed")
        return
    step = e["step"]
    if step == "validated":
        if os.path.lexists(src):
            if dest.is_file() and not dest.is_symlink():  # a partial cross-device copy
                dest.unlink()
            run.journal.close(e)
            run.note(f"{show(e['source'])}: interrupted before its move; it stays in data/incoming and is taken in "
                     "again")
            return
        step = "moved"  # the rename happened, its journal step did not
    if not dest.is_file():
        run.journal.close(e)
        run.problem(f"{show(e['source'])}: the journal says '{e['step']}' but {e['dest']} is missing and "
                    f"data/incoming has no {show(e['source'])}; look in data/quarantine/ or restore the file")
        return
    run.note(f"{show(e['source'])}: resuming its intake interrupted after '{step}' ({e['dest']})")
    run.finish(e, step)


def _check_rounds(run: Intake) -> None:
    """Rounds whose batch intake owns (under data/batches/): a missing file is restored or reported (the round and
    its descendants cannot run), an untracked one is tracked. Other batches are DVC's business."""
    for name, r in run.params.rounds.items():
        p = run.project.root / r.batch
        if not Path(os.path.abspath(p)).is_relative_to(os.path.abspath(run.project.batches)):
            continue
        dvc = p.with_name(p.name + ".dvc")
        if not os.path.lexists(p):
            if dvc.is_file() and run.restore is not None:
                try:
                    run.restore(p)
                except Exception as e:  # noqa: BLE001 -- reported below
                    why = f"restoring it from DVC failed ({str(e).strip().splitlines()[-1] if str(e).strip() else e!r})"
                else:
                    if p.is_file():
                        run.note(f"round {name}: its batch {r.batch} was missing; restored from DVC")
                        continue
                    why = "restoring it from DVC did not bring it back"
            elif dvc.is_file():
                why = f"it has a DVC record: `dvc checkout {run.rel(dvc)}`"
            else:
                why = "it has no DVC record either: put the file back, or remove the round from params.yaml"
            run.res.broken_rounds.append(name)
            run.problem(f"round {name}: its batch {r.batch} is missing ({why}); this round and its descendants "
                        "cannot run")
        elif not dvc.exists():
            try:
                run.track(p)
            except Exception as e:  # noqa: BLE001
                run.problem(f"round {name}: its batch {r.batch} is not tracked by DVC and `dvc add` failed: {e}")
            else:
                run.note(f"round {name}: its batch {r.batch} was not tracked by DVC; `dvc add`ed it")


def _return_orphans(run: Intake) -> None:
    """A batch in data/batches/ that no round and no journal entry names: an intake that died before the journal
    existed, a journal entry that was not intake's own, or a round removed by hand without its file. It goes back
    to data/incoming/ and is validated and taken in again."""
    batches = run.project.batches
    if not batches.is_dir():
        return
    known = set(run.round_of()) | {os.path.normpath(e["dest"]) for e in run.journal.entries}
    for f in sorted(batches.iterdir()):
        n = f.name
        if n.startswith(".") or n.endswith(".dvc") or not n.endswith(SUFFIXES):
            continue
        if os.path.normpath(run.rel(f)) in known:
            continue
        if f.is_symlink() or not f.is_file():
            run.quarantine(f, "not_regular_file", f"{run.rel(f)} is not a regular file and no round names it")
            continue
        m = _ROUND_PREFIX.fullmatch(n)
        target = run.project.incoming / (m.group(1) if m else n)
        if os.path.lexists(target):
            target = run.project.incoming / n
        if os.path.lexists(target):
            run.problem(f"{run.rel(f)} has no round, and data/incoming/{show(target.name)} exists already; "
                        "move one of them by hand")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(f, target)
        run.untrack(f)
        (target.parent / (target.name + MARKER)).touch()  # complete: no need to wait for stability
        run.note(f"{run.rel(f)} had no round (an intake interrupted before its journal?); returned to "
                 f"data/incoming/{show(target.name)} to be taken in again")
