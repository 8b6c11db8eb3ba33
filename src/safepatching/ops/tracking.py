"""The one MLflow adapter: runs, model registry, aliases (`candidate`, `champion`) and rollback.

Everything MLflow-specific lives in `ModelRegistry`; the rest of the package never imports mlflow.

Idempotency: a round's model version is identified by three version tags, `round`, `batch_sha256`
and `parent_version` ("none" for the first round). `register_round` returns an existing version
with those tags instead of creating a duplicate. The tags are attached atomically when the version
is created; a version tag `registered=complete` is written after the aliases, so a registration
interrupted between the two is finished (not duplicated) by the next call.

Rollback history: whenever `champion` moves to a version by promotion, that version gets the tag
`previous_champion=<old champion>`; `rollback()` follows it back (repeatable, like a stack).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ..errors import SafePatchingError, UnknownNameError
from .gate import GateDecision

CANDIDATE = "candidate"
CHAMPION = "champion"
NO_PARENT = "none"
_MAX_PARAM = 6000  # MLflow's limit on a param value
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # values used inside search filter strings


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
            return dict(self.client.get_registered_model(self.model_name).aliases)
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

    def find_version(self, round_name: str, batch_sha256: str,
                     parent_version: str | int | None) -> ModelVersion | None:
        """The version registered for (round, batch, parent), or None (used for idempotency).

        `parent_version` None or "" means "first round" (stored as the tag value "none").
        """
        parent = NO_PARENT if parent_version in (None, "") else str(parent_version)
        hits = self._search(round=round_name, batch_sha256=batch_sha256, parent_version=parent)
        return hits[0] if hits else None

    def latest_version(self, round_name: str) -> ModelVersion | None:
        """The newest version registered for a round (any batch, any parent), or None."""
        hits = self._search(round=round_name)
        return hits[-1] if hits else None

    def champion(self) -> tuple[str, dict[str, str], dict[str, float]] | None:
        """(version, version tags, run metrics) of the champion, or None if there is none yet."""
        v = self._aliases().get(CHAMPION)
        if v is None:
            return None
        mv = self.client.get_model_version(self.model_name, v)
        return str(mv.version), dict(mv.tags), self._run_metrics(mv.run_id)

    def versions(self) -> list[VersionRow]:
        """All versions, oldest first, with aliases, gate decision and run metrics."""
        by_version: dict[str, list[str]] = {}
        for alias, v in self._aliases().items():
            by_version.setdefault(str(v), []).append(alias)
        return [VersionRow(version=str(mv.version), round=mv.tags.get("round", ""),
                           parent_version=mv.tags.get("parent_version", ""), gate=mv.tags.get("gate", ""),
                           aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                           batch_sha256=mv.tags.get("batch_sha256", ""), run_id=mv.run_id,
                           metrics=self._run_metrics(mv.run_id))
                for mv in self._all_versions()]

    # ---- aliases --------------------------------------------------------------------------------
    def promote(self, version: str | int, alias: str = CHAMPION) -> None:
        """Point `alias` at `version`; for `champion`, remember the old one for `rollback()`."""
        mv = self._get(version)
        version, old = str(mv.version), self._aliases().get(alias)
        if old == version:
            return
        if alias == CHAMPION and old is not None:
            self.client.set_model_version_tag(self.model_name, version, "previous_champion", old)
        self.client.set_registered_model_alias(self.model_name, alias, version)

    def rollback(self) -> str:
        """Move `champion` back to the version it replaced; returns the new champion version."""
        cur = self._aliases().get(CHAMPION)
        if cur is None:
            raise RegistryError(f"model {self.model_name!r} has no champion to roll back")
        prev = self.client.get_model_version(self.model_name, cur).tags.get("previous_champion")
        if not prev:
            raise RegistryError(f"champion v{cur} of {self.model_name!r} has no previous champion to roll back to")
        self._get(prev)
        self.client.set_registered_model_alias(self.model_name, CHAMPION, prev)
        self.client.set_model_version_tag(self.model_name, cur, "rolled_back", "true")
        return prev

    # ---- registration ---------------------------------------------------------------------------
    def register_round(self, round_name: str, model_dir: str | Path, params: Mapping[str, Any],
                       metrics: Mapping[str, Any], gate: GateDecision, tags: Mapping[str, Any],
                       artifacts: Sequence[str | Path] = ()) -> tuple[str, bool]:
        """Log a run for the round, register its merged model and move the aliases.

        `tags` must hold `batch_sha256` and may hold `parent_version` (None/absent: first round);
        every entry becomes a version tag (non-strings as JSON). Returns (version, created).
        """
        if "batch_sha256" not in tags:
            raise RegistryError(f"register_round({round_name!r}): tags must include 'batch_sha256'")
        parent = tags.get("parent_version")
        parent = NO_PARENT if parent in (None, "") else str(parent)
        existing = self.find_version(round_name, str(tags["batch_sha256"]), parent)
        if existing is not None:
            if existing.tags.get("registered") != "complete":
                self._finish(str(existing.version), existing.tags.get("gate") == "passed")
            return str(existing.version), False

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise RegistryError(f"{model_dir}: not a transformers checkpoint (no config.json)")
        missing = [str(a) for a in artifacts if not Path(a).is_file()]
        if missing:
            raise RegistryError(f"register_round({round_name!r}): artifact files not found: {missing}")

        decision = "passed" if gate.passed else "failed"
        version_tags = {k: _tag_value(v) for k, v in tags.items()}
        version_tags.update(round=round_name, parent_version=parent, batch_sha256=str(tags["batch_sha256"]),
                            gate=decision, gate_reasons=json.dumps(gate.reasons))
        num = {_metric_key(k): float(v) for k, v in flatten(metrics).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}
        par = {k: str(v)[:_MAX_PARAM] for k, v in flatten(params).items()}

        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
        with self._active():
            with mlflow.start_run(experiment_id=self.experiment_id(), run_name=round_name) as run:
                mlflow.set_tags({"round": round_name, "parent_version": parent, "gate": decision,
                                 "batch_sha256": str(tags["batch_sha256"])})
                if par:
                    mlflow.log_params(par)
                if num:
                    mlflow.log_metrics(num)
                mlflow.log_dict(gate.to_dict(), "gate.json")
                for a in artifacts:
                    mlflow.log_artifact(str(a))
                info = mlflow.transformers.log_model(
                    transformers_model={"model": model, "tokenizer": tok}, name="model",
                    task="text-generation", model_config={"max_new_tokens": self.max_new_tokens},
                    pip_requirements=_pip_requirements(), model_card=_model_card(round_name, version_tags))
                mv = mlflow.register_model(info.model_uri, self.model_name, tags=version_tags)
        self._finish(str(mv.version), gate.passed)
        return str(mv.version), True

    def _finish(self, version: str, passed: bool) -> None:
        self.client.set_registered_model_alias(self.model_name, CANDIDATE, version)
        if passed:
            self.promote(version, CHAMPION)
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
           "CANDIDATE", "CHAMPION"]
