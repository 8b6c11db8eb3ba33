"""The one MLflow adapter: runs, model registry, aliases (`candidate`, `champion`) and rollback.

Everything MLflow-specific lives in `ModelRegistry`; the rest of the package never imports mlflow.

Identity: a version is what produced it. Its identity is five version tags: `round`, `batch_sha256`,
`parent_version` ("none" for the first round), `model_sha256` (content hash of the merged model folder) and
`dvc_stage_hash` (hash of the DVC lock entry of the stage that wrote the model). `register_round` returns the
live version with that identity instead of creating a duplicate, so a rerun with nothing changed is a no-op.
The same round with a different identity becomes a new version tagged `supersedes=<old versions>`; each old
version gets `superseded_by=<new>` and is never promoted again by the pipeline (by hand: only with `force`,
recorded in the version tag `forced_promotions` with who, why and when). Nothing is ever deleted.

A registered version keeps the gate decision it was registered with (`gate`, `gate_reasons`, `gate_reference`):
an existing version is never re-gated. Tags are attached atomically when the version is created; the tag
`registered=complete` is written after superseding and the aliases, so a registration interrupted in between
is finished (not duplicated) by the next call.

Versions registered before model identity (no `model_sha256` tag) are adopted, not duplicated, when their
recorded `dvc_stage_hash` (then the md5 of the merge stage's output) equals the current `dvc_outs_md5`.

Rollback history: whenever `champion` moves to a version by promotion, that version gets the tag
`previous_champion=<old champion>`; `rollback()` follows it back (repeatable, like a stack).

Artifact root: artifacts live under `<project root>/mlartifacts`, resolved from the root this registry is opened with,
not from where the store was first created. MLflow itself cannot store a relative location: its SQL store makes a
relative `artifact_location` absolute against the working directory when the experiment is created, and every run,
logged model and model version then copies that absolute prefix into its own row; the `mlflow-artifacts:` proxy scheme
only works behind an HTTP tracking server (with a `sqlite:` tracking URI the client refuses it), and MLflow has no API to
give one run its own location or to change an experiment's. So a copied or moved workspace (`cp -r`) would keep writing
into the original's `mlartifacts/`. When the store is the workspace's own SQLite file and its experiment points
elsewhere, `rehome()` (run on opening) moves those absolute prefixes to this root in one transaction, as MLflow's own
`mlflow db move-resources --artifact-policy retarget` does for an experiment's location: the experiment's location
always (new runs land here), and each run's, logged model's and model version's location when its files are here
(a copy made with its artifacts) or are not at the old place either (a move). A row whose artifacts exist only at the
old place (a copy of the database alone) keeps pointing there, so it still loads. Nothing is copied or deleted.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from .. import crash
from ..errors import SafePatchingError, UnknownNameError
from .gate import GateDecision

CANDIDATE = "candidate"
CHAMPION = "champion"
NO_PARENT = "none"
IDENTITY = ("round", "batch_sha256", "parent_version", "model_sha256", "dvc_stage_hash")
_MAX_PARAM = 6000  # MLflow's limit on a param value
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # values used inside search filter strings
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")  # MLflow alias names (no spaces; 'latest' / 'vN' reserved)


class RegistryError(SafePatchingError):
    """An MLflow tracking/registry operation failed or was asked something impossible."""


class UnknownVersionError(RegistryError, UnknownNameError):
    """A model version that does not exist was named; the message lists the known versions."""


@dataclass(frozen=True)
class VersionRow:
    """One line of the status table."""

    version: str
    round: str
    parent_version: str
    gate: str
    aliases: tuple[str, ...]
    batch_sha256: str
    run_id: str | None
    metrics: dict[str, float]
    model_sha256: str = ""
    dvc_stage_hash: str = ""
    gate_reasons: tuple[str, ...] = ()
    gate_reference: str = ""
    supersedes: tuple[str, ...] = ()
    superseded_by: str = ""
    forced: tuple[dict, ...] = ()

    @property
    def superseded(self) -> bool:
        return bool(self.superseded_by)


def resolve_tracking_uri(uri: str, root: str | Path) -> str:
    """Make a relative `sqlite:///x.db` (or bare path) absolute against the project root."""
    root = Path(root).resolve()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{(root / path).as_posix()}"
        return uri
    if "://" not in uri and not uri.startswith("databricks"):
        return str((root / uri).resolve())
    return uri


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; pydantic models are dumped first."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if hasattr(v, "model_dump"):
            v = v.model_dump()
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _metric_key(key: str) -> str:
    """A safe MLflow metric name: '/' becomes '.', any other character outside [A-Za-z0-9_-. ] becomes '_'."""
    key = key.replace("/", ".")
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", key)


def _tag_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _split(v: str | None) -> tuple[str, ...]:
    return tuple(x for x in (v or "").split(",") if x)


def _json_list(v: str | None) -> list:
    try:
        out = json.loads(v or "[]")
    except json.JSONDecodeError:
        return [v]
    return out if isinstance(out, list) else [out]


def short(h: str | None, n: int = 12) -> str:
    """A hash shortened for tables ('-' when unknown)."""
    return h[:n] if h else "-"


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


class ModelRegistry:
    """MLflow runs + model registry for the pipeline's rounds (tracking URI injected)."""

    def __init__(self, tracking_uri: str, model_name: str, experiment: str = "safepatching",
                 root: str | Path = ".", artifact_root: str | Path | None = None,
                 max_new_tokens: int = 48) -> None:
        self.root = Path(root).resolve()
        self.uri = resolve_tracking_uri(tracking_uri, self.root)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        if not model_name or "'" in model_name or '"' in model_name:
            raise RegistryError(f"mlflow.model_name {model_name!r}: must be non-empty and hold no quotes")
        self.model_name = model_name
        self.experiment = experiment
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else self.root / "mlartifacts"
        self.max_new_tokens = max_new_tokens
        try:
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        except MlflowException as e:
            raise RegistryError(f"cannot open MLflow store {self.uri}: {e.message}") from None
        self._experiment_id: str | None = None
        self.rehomed: str | None = None  # what `rehome()` did on opening (a line for the log), else None
        if self._own_store() is not None and self._own_store().exists():
            self.rehome()

    @classmethod
    def from_params(cls, params: Any, root: str | Path = ".") -> "ModelRegistry":
        """Build from a `safepatching.config.Params` (its mlflow: and eval: sections)."""
        m = params.mlflow
        return cls(m.tracking_uri, m.model_name, m.experiment, root=root,
                   max_new_tokens=params.eval.max_new_tokens)

    # ---- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _active(self) -> Iterator[None]:
        """Point MLflow's fluent API (runs, log_model, models:/ URIs) at this store, then restore."""
        prev_t, prev_r = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            yield
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from e
        finally:
            mlflow.set_tracking_uri(prev_t)
            mlflow.set_registry_uri(prev_r)

    def _own_store(self) -> Path | None:
        """The SQLite file of the store when it is this workspace's own (inside the project root), else None."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri[len("sqlite:///"):])
        return db if db.resolve().is_relative_to(self.root) else None

    def rehome(self) -> str | None:
        """Point the experiment's artifact location (and the rows whose artifacts are here) at this root's artifact
        folder when the workspace's store was created at another path (a copied or moved workspace); returns the
        line saying what moved, or None when nothing had to. Only for the workspace's own SQLite store with local
        artifact locations (see the module docstring)."""
        from mlflow.utils.file_utils import local_file_uri_to_path
        from mlflow.utils.uri import is_local_uri

        if self._own_store() is None:
            return None
        try:
            exp = self.client.get_experiment_by_name(self.experiment)
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        old, new = (exp.artifact_location or "") if exp else "", self.artifact_root.as_uri()
        if not old or old == new or not is_local_uri(old):
            return None
        old_dir = Path(local_file_uri_to_path(old))
        if old_dir.exists() and old_dir.resolve() == self.artifact_root.resolve():
            return None

        def moved(value: str | None) -> str | None:
            """The value under the new root, or None when it stays (outside the old root, or its files are only there)."""
            if not value or not (value == old or value.startswith(old.rstrip("/") + "/")):
                return None
            there = new + value[len(old):]
            if Path(local_file_uri_to_path(there)).exists() or not Path(local_file_uri_to_path(value)).exists():
                return there
            return None

        import sqlalchemy as sa
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLoggedModel, SqlRun

        exp_id = int(exp.experiment_id)
        runs, models, versions = SqlRun.__table__, SqlLoggedModel.__table__, SqlModelVersion.__table__
        tables = (("runs", runs, (runs.c.run_uuid,), (runs.c.artifact_uri,), runs.c.experiment_id == exp_id),
                  ("logged models", models, (models.c.model_id,), (models.c.artifact_location,),
                   models.c.experiment_id == exp_id),
                  ("model versions", versions, (versions.c.name, versions.c.version),
                   (versions.c.source, versions.c.storage_location), None))
        counts, kept = {what: 0 for what, *_ in tables}, 0
        engine = sa.create_engine(self.uri)
        try:
            with engine.begin() as conn:  # one transaction: all or nothing
                conn.execute(SqlExperiment.__table__.update().where(SqlExperiment.__table__.c.experiment_id == exp_id)
                             .values(artifact_location=new))
                for what, table, keys, cols, scope in tables:
                    query = sa.select(*keys, *cols)
                    for row in conn.execute(query if scope is None else query.where(scope)).all():
                        ident, values = row[:len(keys)], row[len(keys):]
                        change = {c.name: there for c, v in zip(cols, values) if (there := moved(v)) is not None}
                        kept += sum(1 for c, v in zip(cols, values) if c.name not in change and v
                                    and (v == old or v.startswith(old.rstrip("/") + "/")))
                        if change:
                            conn.execute(table.update().where(sa.and_(*(k == i for k, i in zip(keys, ident))))
                                         .values(change))
                            counts[what] += 1
        except sa.exc.SQLAlchemyError as e:
            raise RegistryError(f"cannot move the artifact location of {self.uri} to {new}: {e}") from None
        finally:
            engine.dispose()
        done = ", ".join(f"{n} {what}" for what, n in counts.items())
        self.rehomed = (f"MLflow: this workspace's store was made at another path (artifacts at {old}); new artifacts "
                        f"now go to {new} ({done} moved with it"
                        + (f"; {kept} locations left at the old path, their files are only there" if kept else "")
                        + ")")
        return self.rehomed

    def experiment_id(self) -> str:
        """The experiment id, creating it with an explicit artifact location under the project root."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_root.as_uri())
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _aliases(self) -> dict[str, str]:
        try:
            return {a: str(v) for a, v in self.client.get_registered_model(self.model_name).aliases.items()}
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None

    def _all_versions(self) -> list[ModelVersion]:
        try:
            mvs = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        return sorted(mvs, key=lambda mv: int(mv.version))

    def _get(self, version: str | int) -> ModelVersion:
        version = str(version)
        known = [str(mv.version) for mv in self._all_versions()]
        if version not in known:
            raise UnknownVersionError(
                f"model {self.model_name!r} has no version {version!r}; known versions: {known or 'none'}")
        return self.client.get_model_version(self.model_name, version)

    def _run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        try:
            return dict(self.client.get_run(run_id).data.metrics)
        except MlflowException:
            return {}

    # ---- queries --------------------------------------------------------------------------------
    def _search(self, **tags: str) -> list[ModelVersion]:
        """Versions of this model whose version tags equal `tags`, oldest first."""
        for k, v in tags.items():
            if not isinstance(v, str) or not _SAFE_VALUE.match(v):
                raise RegistryError(f"{k} {v!r}: must be a string of letters, digits, '_', '-', '.'")
        flt = " and ".join([f"name='{self.model_name}'", *(f"tags.{k}='{v}'" for k, v in tags.items())])
        try:
            hits = self.client.search_model_versions(flt)
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        return sorted(hits, key=lambda mv: int(mv.version))

    def find_version(self, round_name: str, batch_sha256: str, parent_version: str | int | None,
                     model_sha256: str | None = None, dvc_stage_hash: str | None = None,
                     include_superseded: bool = False) -> ModelVersion | None:
        """The live version registered for this identity, or None (used for idempotency).

        `parent_version` None or "" means "first round" (stored as the tag value "none"). `model_sha256` and
        `dvc_stage_hash` narrow the match when given. Superseded versions never match unless asked for.
        """
        parent = NO_PARENT if parent_version in (None, "") else str(parent_version)
        tags = {"round": round_name, "batch_sha256": batch_sha256, "parent_version": parent}
        if model_sha256 is not None:
            tags["model_sha256"] = model_sha256
        if dvc_stage_hash is not None:
            tags["dvc_stage_hash"] = dvc_stage_hash
        hits = [mv for mv in self._search(**tags) if include_superseded or not mv.tags.get("superseded_by")]
        return hits[0] if hits else None

    def latest_version(self, round_name: str) -> ModelVersion | None:
        """The newest version registered for a round (any batch, any parent, superseded too), or None."""
        hits = self._search(round=round_name)
        return hits[-1] if hits else None

    def live_version(self, round_name: str, model_sha256: str | None = None) -> ModelVersion | None:
        """The newest version of a round that is not superseded (with that model hash, when given), or None."""
        tags = {"round": round_name} if model_sha256 is None else {"round": round_name, "model_sha256": model_sha256}
        hits = [mv for mv in self._search(**tags) if not mv.tags.get("superseded_by")]
        return hits[-1] if hits else None

    def champion(self) -> tuple[str, dict[str, str], dict[str, float]] | None:
        """(version, version tags, run metrics) of the champion, or None if there is none yet."""
        v = self._aliases().get(CHAMPION)
        if v is None:
            return None
        mv = self.client.get_model_version(self.model_name, v)
        return str(mv.version), dict(mv.tags), self._run_metrics(mv.run_id)

    def _row(self, mv: ModelVersion, aliases: Mapping[str, str]) -> VersionRow:
        t = mv.tags
        return VersionRow(
            version=str(mv.version), round=t.get("round", ""), parent_version=t.get("parent_version", ""),
            gate=t.get("gate", ""), aliases=tuple(sorted(a for a, v in aliases.items() if str(v) == str(mv.version))),
            batch_sha256=t.get("batch_sha256", ""), run_id=mv.run_id, metrics=self._run_metrics(mv.run_id),
            model_sha256=t.get("model_sha256", ""), dvc_stage_hash=t.get("dvc_stage_hash", ""),
            gate_reasons=tuple(str(r) for r in _json_list(t.get("gate_reasons"))),
            gate_reference=t.get("gate_reference", ""), supersedes=_split(t.get("supersedes")),
            superseded_by=t.get("superseded_by", ""), forced=tuple(_json_list(t.get("forced_promotions"))))

    def version(self, version: str | int) -> VersionRow:
        """One version as recorded: identity, gate decision, supersede links, aliases, metrics."""
        return self._row(self._get(version), self._aliases())

    def versions(self) -> list[VersionRow]:
        """All versions, oldest first, with aliases, gate decision, supersede links and run metrics."""
        aliases = self._aliases()
        return [self._row(mv, aliases) for mv in self._all_versions()]

    # ---- aliases --------------------------------------------------------------------------------
    def _set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at `version`; for `champion`, remember the old one for `rollback()`."""
        old = self._aliases().get(alias)
        if old == version:
            return
        if alias == CHAMPION and old is not None:
            self.client.set_model_version_tag(self.model_name, version, "previous_champion", old)
        self.client.set_registered_model_alias(self.model_name, alias, version)

    def _refusal(self, row: VersionRow, alias: str, lineage: Iterable[str] | None) -> str | None:
        """Why `row` may not get `alias` without force (None: it may)."""
        if row.superseded:
            return f"v{row.version} ({row.round}) is superseded by v{row.superseded_by}"
        if alias == CHAMPION and row.gate != "passed":
            why = f": {row.gate_reasons[0]}" if row.gate_reasons else ""
            ref = f" vs {row.gate_reference}" if row.gate_reference else ""
            return f"v{row.version} ({row.round}) did not pass its gate{ref}{why}"
        if lineage is not None and row.model_sha256 not in set(lineage):
            what = f"model {short(row.model_sha256)}" if row.model_sha256 else "no recorded model hash"
            return (f"v{row.version} ({row.round}) is not in the lineage ({what}; no round in params.yaml has "
                    "that model now)")
        return None

    def _record_force(self, version: str, alias: str, reason: str, by: str | None, replaced: str | None) -> None:
        mv = self.client.get_model_version(self.model_name, version)
        entries = _json_list(mv.tags.get("forced_promotions"))
        entries.append({"alias": alias, "by": by or current_user(), "reason": reason, "replaced": replaced,
                        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        self.client.set_model_version_tag(self.model_name, version, "forced_promotions", json.dumps(entries))

    def promote(self, version: str | int, alias: str = CHAMPION, *, force: bool = False, reason: str = "",
                by: str | None = None, lineage: Iterable[str] | None = None) -> None:
        """Point `alias` at `version` by hand.

        Refused (RegistryError) for a superseded version, for `champion` when the version's recorded gate did
        not pass, and for a version whose model hash is not in `lineage` (when given) -- unless `force`, which
        needs a `reason` and is recorded on the version (tag `forced_promotions`: alias, by, reason, when).
        """
        if not _ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            raise RegistryError(f"alias {alias!r}: must start with a letter and hold only letters, digits, '_' and '-' "
                                "(at most 64), and not be 'latest' or v<N>")
        row = self.version(version)
        old = self._aliases().get(alias)
        if old == row.version:
            return
        refusal = self._refusal(row, alias, lineage)
        if force:
            if not reason.strip():
                raise RegistryError("a forced promotion needs a reason (--reason); it is recorded with who and when")
            self._record_force(row.version, alias, reason.strip(), by, old)
        elif refusal:
            raise RegistryError(f"refusing to point {alias} at {refusal}; use --force --reason '...' to override")
        self._set_alias(alias, row.version)

    def rollback(self, *, force: bool = False, reason: str = "", by: str | None = None) -> str:
        """Move `champion` back to the version it replaced; returns the new champion version.

        A superseded previous champion is refused unless `force` (with a `reason`, recorded as for promote).
        """
        cur = self._aliases().get(CHAMPION)
        if cur is None:
            raise RegistryError(f"model {self.model_name!r} has no champion to roll back")
        prev = self.client.get_model_version(self.model_name, cur).tags.get("previous_champion")
        if not prev:
            raise RegistryError(f"champion v{cur} of {self.model_name!r} has no previous champion to roll back to")
        row = self.version(prev)
        if force:
            if not reason.strip():
                raise RegistryError("a forced rollback needs a reason (--reason); it is recorded with who and when")
            self._record_force(prev, CHAMPION, reason.strip(), by, cur)
        elif row.superseded:
            raise RegistryError(f"refusing to roll champion back to v{prev} ({row.round}): it is superseded by "
                                f"v{row.superseded_by}; use --force --reason '...' to override")
        self.client.set_registered_model_alias(self.model_name, CHAMPION, prev)
        self.client.set_model_version_tag(self.model_name, cur, "rolled_back", "true")
        return prev

    # ---- registration ---------------------------------------------------------------------------
    def _adopt_legacy(self, ident: Mapping[str, str], tags: Mapping[str, Any]) -> ModelVersion | None:
        """A version registered before model identity whose merge output is today's: backfill its identity."""
        outs = tags.get("dvc_outs_md5")
        if not outs:
            return None
        for mv in self._search(round=ident["round"], batch_sha256=ident["batch_sha256"],
                               parent_version=ident["parent_version"]):
            if mv.tags.get("model_sha256") or mv.tags.get("superseded_by") or mv.tags.get("dvc_stage_hash") != outs:
                continue
            for k in ("model_sha256", "dvc_stage_hash"):
                self.client.set_model_version_tag(self.model_name, mv.version, k, ident[k])
            self.client.set_model_version_tag(self.model_name, mv.version, "dvc_outs_md5", str(outs))
            self.client.set_model_version_tag(self.model_name, mv.version, "identity", "adopted")
            return self.client.get_model_version(self.model_name, mv.version)
        return None

    def register_round(self, round_name: str, model_dir: str | Path, params: Mapping[str, Any],
                       metrics: Mapping[str, Any], gate: GateDecision | Callable[[], GateDecision],
                       tags: Mapping[str, Any], artifacts: Sequence[str | Path] = (),
                       log: Callable[[str], Any] = lambda line: None) -> tuple[str, bool]:
        """Log a run for the round, register its merged model and move the aliases (`log`: a line for each repair of
        an interrupted registration).

        `tags` must hold `batch_sha256`, `model_sha256` and `dvc_stage_hash`, and may hold `parent_version`
        (None/absent: first round); every entry becomes a version tag (non-strings as JSON). `gate` is the
        decision or a function making it; it is only used (called) when a new version is created -- an existing
        version keeps the decision it was registered with. Returns (version, created).
        """
        missing = [k for k in ("batch_sha256", "model_sha256", "dvc_stage_hash") if not tags.get(k)]
        if missing:
            raise RegistryError(f"register_round({round_name!r}): tags must include {missing}")
        parent = tags.get("parent_version")
        parent = NO_PARENT if parent in (None, "") else str(parent)
        ident = {"round": round_name, "batch_sha256": str(tags["batch_sha256"]), "parent_version": parent,
                 "model_sha256": str(tags["model_sha256"]), "dvc_stage_hash": str(tags["dvc_stage_hash"])}
        existing = self.find_version(round_name, ident["batch_sha256"], parent, ident["model_sha256"],
                                     ident["dvc_stage_hash"]) or self._adopt_legacy(ident, tags)
        if existing is not None:
            if existing.tags.get("registered") != "complete":
                self._end_dangling(round_name, log)
                self._finish(str(existing.version))
                log(f"{round_name}: finished the interrupted registration of version {existing.version} (supersede "
                    "links, aliases)")
            return str(existing.version), False

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise RegistryError(f"{model_dir}: not a transformers checkpoint (no config.json)")
        missing = [str(a) for a in artifacts if not Path(a).is_file()]
        if missing:
            raise RegistryError(f"register_round({round_name!r}): artifact files not found: {missing}")

        decision = gate() if callable(gate) else gate
        verdict = "passed" if decision.passed else "failed"
        olds = [str(mv.version) for mv in self._search(round=round_name) if not mv.tags.get("superseded_by")]
        version_tags = {k: _tag_value(v) for k, v in tags.items()}
        version_tags.update(ident, gate=verdict, gate_reasons=json.dumps(decision.reasons),
                            gate_reference=decision.reference or "none")
        if olds:
            version_tags["supersedes"] = ",".join(olds)
        num = {_metric_key(k): float(v) for k, v in flatten(metrics).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}
        par = {k: str(v)[:_MAX_PARAM] for k, v in flatten(params).items()}

        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
        self._end_dangling(round_name, log)
        with self._active():
            with mlflow.start_run(experiment_id=self.experiment_id(), run_name=round_name,
                                  tags={"round": round_name}) as run:  # tagged at creation: a killed one is found
                mlflow.set_tags({**ident, "gate": verdict})
                if par:
                    mlflow.log_params(par)
                if num:
                    mlflow.log_metrics(num)
                mlflow.log_dict(decision.to_dict(), "gate.json")
                for a in artifacts:
                    mlflow.log_artifact(str(a))
                info = mlflow.transformers.log_model(
                    transformers_model={"model": model, "tokenizer": tok}, name="model",
                    task="text-generation", model_config={"max_new_tokens": self.max_new_tokens},
                    pip_requirements=_pip_requirements(), model_card=_model_card(round_name, version_tags))
                crash.point("register.run")
                mv = mlflow.register_model(info.model_uri, self.model_name, tags=version_tags)
                crash.point("register.version")
        self._finish(str(mv.version))
        return str(mv.version), True

    def _end_dangling(self, round_name: str, log: Callable[[str], Any]) -> None:
        ended = self.end_dangling_runs(round_name)
        if ended:
            log(f"{round_name}: ended {len(ended)} MLflow run(s) left RUNNING by an interrupted registration as KILLED: "
                + ", ".join(ended))

    def end_dangling_runs(self, round_name: str) -> list[str]:
        """End as KILLED the runs of this round left RUNNING by a killed registration; returns their ids."""
        if not _SAFE_VALUE.match(round_name):
            raise RegistryError(f"round {round_name!r}: must be letters, digits, '_', '-', '.'")
        try:
            runs = self.client.search_runs([self.experiment_id()],
                                           filter_string=f"tags.round = '{round_name}' and attributes.status = 'RUNNING'")
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        for r in runs:
            self.client.set_terminated(r.info.run_id, status="KILLED")
        return [r.info.run_id for r in runs]

    def _finish(self, version: str) -> None:
        """Mark what the version supersedes, move the aliases it earned, then tag it complete (idempotent)."""
        mv = self.client.get_model_version(self.model_name, version)
        for old in _split(mv.tags.get("supersedes")):
            if not self.client.get_model_version(self.model_name, old).tags.get("superseded_by"):
                self.client.set_model_version_tag(self.model_name, old, "superseded_by", version)
        if not mv.tags.get("superseded_by"):
            self._set_alias(CANDIDATE, version)
            if mv.tags.get("gate") == "passed":
                self._set_alias(CHAMPION, version)
        self.client.set_model_version_tag(self.model_name, version, "registered", "complete")

    # ---- serving --------------------------------------------------------------------------------
    def load_champion_pipeline(self, alias: str = CHAMPION) -> Any:
        """A transformers text-generation pipeline for `models:/<name>@<alias>`."""
        if alias not in self._aliases():
            raise RegistryError(f"model {self.model_name!r} has no alias {alias!r}; aliases: {sorted(self._aliases())}")
        with self._active():
            return mlflow.transformers.load_model(f"models:/{self.model_name}@{alias}")


def _model_card(round_name: str, tags: Mapping[str, str]) -> Any:
    """A local model card (else MLflow tries to fetch one from the Hub, which fails offline)."""
    from huggingface_hub import ModelCard

    lines = "\n".join(f"- {k}: {v[:200]}" for k, v in sorted(tags.items()))
    return ModelCard(f"---\nlicense: other\ntags: [safepatching]\n---\n# SafePatching round {round_name}\n\n{lines}\n")


def _pip_requirements() -> list[str]:
    """Pinned requirements (skips MLflow's slow subprocess-based inference)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", "transformers", "tokenizers", "torch", "safetensors"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    return out


__all__ = ["ModelRegistry", "RegistryError", "UnknownVersionError", "VersionRow", "resolve_tracking_uri", "flatten",
           "short", "current_user", "CANDIDATE", "CHAMPION", "IDENTITY"]
