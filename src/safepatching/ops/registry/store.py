"""MLflow store plumbing: the tracking URI, the experiment and its artifact location, raw model-version queries.

Artifact root: artifacts live under `<project root>/mlartifacts`, resolved from the root this store is opened with,
not from where the store was first created. MLflow itself cannot store a relative location: its SQL store makes a
relative `artifact_location` absolute against the working directory when the experiment is created, and every run,
logged model and model version then copies that absolute prefix into its own row; the `mlflow-artifacts:` proxy scheme
only works behind an HTTP tracking server (with a `sqlite:` tracking URI the client refuses it), and MLflow has no API to
give one run its own location or to change an experiment's. So a copied or moved workspace (`cp -r`) would keep writing
into the original's `mlartifacts/`. When the store is the workspace's own SQLite file and its experiment points
elsewhere, `rehome()` (run on opening a writable store) moves those absolute prefixes to this root in one transaction,
as MLflow's own `mlflow db move-resources --artifact-policy retarget` does for an experiment's location: the
experiment's location always (new runs land here), and each run's, logged model's and model version's location when
its files are here (a copy made with its artifacts) or are not at the old place either (a move). Other experiments
whose location lies inside the old workspace (MLflow's `Default`, made at `<working directory>/mlruns/0` when the
database was created) move with it the same way. A row whose artifacts exist only at the old place (a copy of the
database alone) keeps pointing there, so it still loads. Nothing is copied or deleted. A store opened read-only
(`writable=False`: `status`) is never rewritten; `rehome_pending()` says what a writing command would move.

Tracking server (an `http(s)://` URI): the client sets no artifact location; the server assigns one and proxies the
artifacts (`mlflow server --serve-artifacts --artifacts-destination s3://...`), so every machine loads the same
`models:/...`. An experiment on the server whose location is a plain path (one machine's disk: made by an old client,
or a server without `--serve-artifacts`) is refused with the reason. Nothing is rehomed there. The server is probed
(`/health`) when the store is opened: one that does not answer raises `TrackingServerUnreachable` naming the URI, as
does any later request that cannot reach it (after MLflow's own retries: `MLFLOW_HTTP_REQUEST_MAX_RETRIES`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ...errors import SafePatchingError, UnknownNameError

SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # values used inside search filter strings


class RegistryError(SafePatchingError):
    """An MLflow tracking/registry operation failed or was asked something impossible."""


class UnknownVersionError(RegistryError, UnknownNameError):
    """A model version that does not exist was named; the message lists the known versions."""


class TrackingServerUnreachable(RegistryError):
    """The MLflow tracking server (an http(s) URI) did not answer; the message names the URI."""


PROBE_TIMEOUT_S = 10.0  # seconds the /health probe of a tracking server waits


def is_server(uri: str) -> bool:
    """True for a tracking server URI (http/https): the server owns the artifact locations."""
    return uri.startswith(("http://", "https://"))


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingServerUnreachable when nothing answers at `uri` (any HTTP answer, even 401, counts as up)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingServerUnreachable(f"MLflow tracking server {uri} is unreachable ({reason}); is it running? "
                                        "(mlflow.tracking_uri)") from None


def transport_error(uri: str, e: BaseException) -> RegistryError | None:
    """The typed error for a request that failed on the way to/from the server (connection refused or reset,
    timeout, retries exhausted, an artifact upload the server refused), or None for any other error."""
    import requests

    if isinstance(e, requests.exceptions.RequestException):
        resp = getattr(e, "response", None)
        if resp is not None:
            return RegistryError(f"MLflow tracking server {uri} refused a request ({resp.status_code} for "
                                 f"{resp.request.method if resp.request else ''} {resp.url}): {_short(str(e))}")
        return TrackingServerUnreachable(f"MLflow tracking server {uri} is unreachable: {_short(str(e))}")
    if isinstance(e, MlflowException) and e.message.startswith("API request to ") and (
            "failed with exception" in e.message or "failed to return code 200" in e.message):
        if "error responses" in e.message:  # it answered, with 5xx until MLflow's retries ran out
            return RegistryError(f"MLflow tracking server {uri} kept failing a request (its log says why, e.g. the "
                                 f"artifact store's credentials): {_short(e.message)}")
        return TrackingServerUnreachable(f"MLflow tracking server {uri} is unreachable: {_short(e.message)}")
    return None


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


class _ServerClient:
    """An MlflowClient whose calls raise the typed transport errors (naming the URI) instead of MLflow's."""

    def __init__(self, client: MlflowClient, uri: str) -> None:
        self._client, self._uri = client, uri

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                err = transport_error(self._uri, e)
                if err is None:
                    raise
                raise err from None

        return call


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


def _path(location: str) -> Path:
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(location))


def _under(value: str | None, prefix: str) -> bool:
    return bool(value) and (value == prefix or value.startswith(prefix.rstrip("/") + "/"))


class MlflowStore:
    """One MLflow tracking + registry store (tracking URI injected) and the registered model `model_name` in it."""

    def __init__(self, tracking_uri: str, model_name: str, experiment: str = "safepatching",
                 root: str | Path = ".", artifact_root: str | Path | None = None, *, writable: bool = True) -> None:
        self.root = Path(root).resolve()
        self.uri = resolve_tracking_uri(tracking_uri, self.root)
        self.writable = writable
        if writable and self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        if not model_name or "'" in model_name or '"' in model_name:
            raise RegistryError(f"mlflow.model_name {model_name!r}: must be non-empty and hold no quotes")
        self.model_name = model_name
        self.experiment = experiment
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else self.root / "mlartifacts"
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self.rehomed: str | None = None  # what `rehome()` did on opening (a line for the log), else None
        self.server = is_server(self.uri)  # a tracking server: it assigns and serves the artifact locations
        if writable:
            self.client  # noqa: B018  (opened now: a store that cannot be opened fails here)
            if self.exists():
                self.rehome()

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (opening it creates a missing SQLite store: refused when opened read-only)."""
        if self._client is None:
            if not self.writable and not self.exists():
                raise RegistryError(f"no MLflow store at {self.uri} yet (nothing registered); opened read-only, so "
                                    "none is created")
            if self.server:
                probe_server(self.uri)
            try:
                client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            except MlflowException as e:
                raise RegistryError(f"cannot open MLflow store {self.uri}: {e.message}") from None
            self._client = _ServerClient(client, self.uri) if self.server else client
        return self._client

    # ---- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _active(self) -> Iterator[None]:
        """Point MLflow's fluent API (runs, log_model, models:/ URIs) at this store, then restore."""
        prev_t, prev_r = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            yield
        except Exception as e:
            err = transport_error(self.uri, e) if self.server else None
            if err is not None:
                raise err from None
            if isinstance(e, MlflowException):
                raise RegistryError(f"MLflow ({self.uri}): {e.message}") from e
            raise
        finally:
            mlflow.set_tracking_uri(prev_t)
            mlflow.set_registry_uri(prev_r)

    def _own_store(self) -> Path | None:
        """The SQLite file of the store when it is this workspace's own (inside the project root), else None."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri[len("sqlite:///"):])
        return db if db.resolve().is_relative_to(self.root) else None

    def exists(self) -> bool:
        """False when the store is this workspace's own SQLite file and that file is not there yet."""
        own = self._own_store()
        return own is None or own.exists()

    # ---- rehome ---------------------------------------------------------------------------------
    def _rehome_plan(self) -> tuple[int, str, str] | None:
        """(experiment id, old location, new location) when the workspace's own store points its experiment at
        another path's artifact folder (read-only), else None."""
        from mlflow.utils.uri import is_local_uri

        if self._own_store() is None or not self.exists():
            return None
        try:
            exp = self.client.get_experiment_by_name(self.experiment)
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        old, new = (exp.artifact_location or "") if exp else "", self.artifact_root.as_uri()
        if not old or old == new or not is_local_uri(old):
            return None
        old_dir = _path(old)
        if old_dir.exists() and old_dir.resolve() == self.artifact_root.resolve():
            return None
        return int(exp.experiment_id), old, new

    def rehome_pending(self) -> str | None:
        """A line when the store was made at another path and a writing command would rehome it, else None."""
        plan = self._rehome_plan()
        if plan is None:
            return None
        return (f"MLflow: this workspace's store was made at another path (artifacts at {plan[1]}); left as it is "
                f"(read-only); the next command that writes (promote, rollback, a round's registration) points it at "
                f"{plan[2]}")

    def _old_root(self, old_location: str) -> Path | None:
        """The workspace root the store was made in, read off the old artifact location (None when it cannot be)."""
        try:
            rel = self.artifact_root.relative_to(self.root).parts
        except ValueError:
            return None
        old = _path(old_location).parts
        if rel and tuple(old[-len(rel):]) != rel:
            return None
        return Path(*old[:len(old) - len(rel)])

    def _other_moves(self, conn, exp_id: int, old_location: str) -> list[tuple[int, str, str, str]]:
        """(id, name, old, new location) of the store's other experiments whose location lies in the old workspace
        (MLflow's `Default`, made at `<working directory>/mlruns/0`), in the same style (path or file URI)."""
        import sqlalchemy as sa
        from mlflow.store.tracking.dbmodels.models import SqlExperiment
        from mlflow.utils.uri import is_local_uri

        old_root = self._old_root(old_location)
        if old_root is None or old_root == self.root:
            return []
        exps = SqlExperiment.__table__
        out = []
        for eid, name, loc in conn.execute(sa.select(exps.c.experiment_id, exps.c.name, exps.c.artifact_location)).all():
            if eid == exp_id or not loc or not is_local_uri(loc) or not _path(loc).is_relative_to(old_root):
                continue
            there = self.root / _path(loc).relative_to(old_root)
            out.append((eid, name, loc, there.as_uri() if loc.startswith("file:") else str(there)))
        return out

    def rehome(self) -> str | None:
        """Point the experiment's artifact location (and the rows whose artifacts are here) at this root's artifact
        folder when the workspace's store was created at another path (a copied or moved workspace); returns the
        line saying what moved, or None when nothing had to. Only for the workspace's own SQLite store with local
        artifact locations (see the module docstring)."""
        if not self.writable:
            raise RegistryError(f"{self.uri} was opened read-only: not rehoming it")
        plan = self._rehome_plan()
        if plan is None:
            return None
        exp_id, old, new = plan

        import sqlalchemy as sa
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLoggedModel, SqlRun

        engine = sa.create_engine(self.uri)
        try:
            with engine.begin() as conn:  # one transaction: all or nothing
                others = self._other_moves(conn, exp_id, old)
                prefixes = [(old, new)] + [(o, n) for _, _, o, n in others]

                def moved(value: str | None) -> str | None:
                    """The value under the new root, or None when it stays (outside the old root, or its files are
                    only there)."""
                    for was, now in prefixes:
                        if _under(value, was):
                            there = now + value[len(was):]
                            return there if _path(there).exists() or not _path(value).exists() else None
                    return None

                ids = [exp_id, *(eid for eid, *_ in others)]
                runs, models, versions = SqlRun.__table__, SqlLoggedModel.__table__, SqlModelVersion.__table__
                tables = (("runs", runs, (runs.c.run_uuid,), (runs.c.artifact_uri,), runs.c.experiment_id.in_(ids)),
                          ("logged models", models, (models.c.model_id,), (models.c.artifact_location,),
                           models.c.experiment_id.in_(ids)),
                          ("model versions", versions, (versions.c.name, versions.c.version),
                           (versions.c.source, versions.c.storage_location), None))
                counts, kept = {what: 0 for what, *_ in tables}, 0
                experiments = SqlExperiment.__table__
                for eid, location in [(exp_id, new), *((eid, n) for eid, _, _, n in others)]:
                    conn.execute(experiments.update().where(experiments.c.experiment_id == eid)
                                 .values(artifact_location=location))
                for what, table, keys, cols, scope in tables:
                    query = sa.select(*keys, *cols)
                    for row in conn.execute(query if scope is None else query.where(scope)).all():
                        ident, values = row[:len(keys)], row[len(keys):]
                        change = {c.name: there for c, v in zip(cols, values) if (there := moved(v)) is not None}
                        kept += sum(1 for c, v in zip(cols, values) if c.name not in change
                                    and any(_under(v, was) for was, _ in prefixes))
                        if change:
                            conn.execute(table.update().where(sa.and_(*(k == i for k, i in zip(keys, ident))))
                                         .values(change))
                            counts[what] += 1
        except sa.exc.SQLAlchemyError as e:
            raise RegistryError(f"cannot move the artifact location of {self.uri} to {new}: {e}") from None
        finally:
            engine.dispose()
        done = ", ".join(f"{n} {what}" for what, n in counts.items())
        also = "".join(f"; experiment {name!r} now at {n}" for _, name, _, n in others)
        self.rehomed = (f"MLflow: this workspace's store was made at another path (artifacts at {old}); new artifacts "
                        f"now go to {new} ({done} moved with it"
                        + (f"; {kept} locations left at the old path, their files are only there" if kept else "")
                        + also + ")")
        return self.rehomed

    # ---- the experiment and the model's versions ------------------------------------------------
    def experiment_id(self) -> str:
        """The experiment id, creating it: with an explicit artifact location under the project root for a local
        store, with none on a tracking server (the server assigns it; see the module docstring)."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                if self.server:
                    exp = self.client.get_experiment(self.client.create_experiment(self.experiment))
                else:
                    self.artifact_root.mkdir(parents=True, exist_ok=True)
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=self.artifact_root.as_uri())
                    return self._experiment_id
            elif exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if self.server:
                self._check_server_location(exp.artifact_location or "")
            self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _check_server_location(self, location: str) -> None:
        """Refuse an experiment on a tracking server whose artifacts would go to one machine's disk."""
        from mlflow.utils.uri import is_local_uri

        if location and is_local_uri(location, is_tracking_or_registry_uri=False):
            raise RegistryError(
                f"experiment {self.experiment!r} on {self.uri} keeps its artifacts at {location}: a path on one "
                "machine's disk, which other machines cannot load from. Start the server with --serve-artifacts "
                "(and --artifacts-destination s3://...), and use a new mlflow.experiment (an experiment's location "
                "cannot be changed)")

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

    def _search(self, **tags: str) -> list[ModelVersion]:
        """Versions of this model whose version tags equal `tags`, oldest first."""
        for k, v in tags.items():
            if not isinstance(v, str) or not SAFE_VALUE.match(v):
                raise RegistryError(f"{k} {v!r}: must be a string of letters, digits, '_', '-', '.'")
        flt = " and ".join([f"name='{self.model_name}'", *(f"tags.{k}='{v}'" for k, v in tags.items())])
        try:
            hits = self.client.search_model_versions(flt)
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        return sorted(hits, key=lambda mv: int(mv.version))
