"""`ModelRegistry`: the pipeline's rounds as MLflow runs and model versions, their aliases (`candidate`, `champion`),
rollback and serving.

Identity: a version is what produced it. Its identity is five version tags: `round`, `batch_sha256`,
`parent_version` ("none" for the first round), `model_sha256` (content hash of the merged model folder) and
`dvc_stage_hash` (hash of the DVC lock entry of the stage that wrote the model). `register_round` returns the
live version with that identity instead of creating a duplicate, so a rerun with nothing changed is a no-op.
The same round with a different identity becomes a new version tagged `supersedes=<old versions>`; each old
version gets `superseded_by=<new>` and is never promoted again by the pipeline (by hand: only with `force`,
recorded in the version tag `forced_promotions` with who, why and when; see `promotion`). Nothing is ever deleted.

A registered version keeps the gate decision it was registered with (`gate`, `gate_reasons`, `gate_reference`):
an existing version is never re-gated. Tags are attached atomically when the version is created; the tag
`registered=complete` is written after superseding and the aliases, so a registration interrupted in between
is finished (not duplicated) by the next call, and the version's own MLflow run, left RUNNING, is ended FINISHED
(it holds the model and metrics); a run left RUNNING without a version is ended KILLED.

Versions registered before model identity (no `model_sha256` tag) are adopted, not duplicated, when their
recorded `dvc_stage_hash` (then the md5 of the merge stage's output) equals the current `dvc_outs_md5`.

Rollback history: whenever `champion` moves to a version by promotion, that version gets the tag
`previous_champion=<old champion>`; `rollback()` follows it back (repeatable, like a stack).
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ... import crash
from ..gate import GateDecision
from .promotion import CANDIDATE, CHAMPION, Promotion, alias_problem, decide_promotion, decide_rollback
from .rows import VersionRow, json_list, row_from_tags, split
from .store import SAFE_VALUE, MlflowStore, RegistryError

NO_PARENT = "none"
IDENTITY = ("round", "batch_sha256", "parent_version", "model_sha256", "dvc_stage_hash")
RUN_TAGS = ("decided_by", "selection", "selection_rule")  # version tags the run carries too (search/compare runs)
_MAX_PARAM = 6000  # MLflow's limit on a param value


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


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


class ModelRegistry(MlflowStore):
    """MLflow runs + model registry for the pipeline's rounds (tracking URI injected; `writable=False`: a store
    opened only to read, never rewritten)."""

    def __init__(self, tracking_uri: str, model_name: str, experiment: str = "safepatching",
                 root: str | Path = ".", artifact_root: str | Path | None = None,
                 max_new_tokens: int = 48, *, writable: bool = True) -> None:
        super().__init__(tracking_uri, model_name, experiment, root, artifact_root, writable=writable)
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_params(cls, params: Any, root: str | Path = ".", *, writable: bool = True) -> "ModelRegistry":
        """Build from a `safepatching.config.Params` (its mlflow: and eval: sections)."""
        m = params.mlflow
        return cls(m.tracking_uri, m.model_name, m.experiment, root=root,
                   max_new_tokens=params.eval.max_new_tokens, writable=writable)

    # ---- queries --------------------------------------------------------------------------------
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
        return row_from_tags(str(mv.version), mv.tags, aliases, mv.run_id, self._run_metrics(mv.run_id))

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

    def _record_force(self, version: str, alias: str, reason: str, by: str | None, replaced: str | None) -> None:
        mv = self.client.get_model_version(self.model_name, version)
        entries = json_list(mv.tags.get("forced_promotions"))
        entries.append({"alias": alias, "by": by or current_user(), "reason": reason, "replaced": replaced,
                        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        self.client.set_model_version_tag(self.model_name, version, "forced_promotions", json.dumps(entries))

    def promote(self, version: str | int, alias: str = CHAMPION, *, force: bool = False, reason: str = "",
                by: str | None = None, lineage: Iterable[str] | None = None) -> Promotion:
        """Point `alias` at `version` by hand, as `promotion.decide_promotion` decides (a refusal raises
        RegistryError); a forced promotion is recorded on the version (tag `forced_promotions`: alias, by, reason,
        when, replaced), also when the alias already pointed there. Returns the decision carried out."""
        problem = alias_problem(alias)
        if problem:
            raise RegistryError(problem)
        row = self.version(version)
        decision = decide_promotion(row, alias, self._aliases().get(alias), force=force, reason=reason,
                                    lineage=lineage)
        if decision.refusal:
            raise RegistryError(decision.refusal)
        if decision.forced:
            self._record_force(row.version, alias, reason.strip(), by, decision.replaced)
        if decision.moves:
            self._set_alias(alias, row.version)
        return decision

    def rollback(self, *, force: bool = False, reason: str = "", by: str | None = None) -> str:
        """Move `champion` back to the version it replaced, as `promotion.decide_rollback` decides; returns the new
        champion version."""
        cur = self._aliases().get(CHAMPION)
        if cur is None:
            raise RegistryError(f"model {self.model_name!r} has no champion to roll back")
        prev = self.client.get_model_version(self.model_name, cur).tags.get("previous_champion")
        if not prev:
            raise RegistryError(f"champion v{cur} of {self.model_name!r} has no previous champion to roll back to")
        decision = decide_rollback(self.version(prev), cur, force=force, reason=reason)
        if decision.refusal:
            raise RegistryError(decision.refusal)
        if decision.forced:
            self._record_force(prev, CHAMPION, reason.strip(), by, cur)
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
                mlflow.set_tags({**ident, "gate": verdict,
                                 **{k: version_tags[k] for k in RUN_TAGS if k in version_tags}})
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
        killed = [run for run, version in ended if version is None]
        if killed:
            log(f"{round_name}: ended {len(killed)} MLflow run(s) left RUNNING by an interrupted registration as KILLED: "
                + ", ".join(killed))
        for run, version in ended:
            if version is not None:
                log(f"{round_name}: ended MLflow run {run} of version {version}, left RUNNING by an interrupted "
                    "registration, as FINISHED (it holds the version's model and metrics)")

    def end_dangling_runs(self, round_name: str) -> list[tuple[str, str | None]]:
        """End the runs of this round left RUNNING by a killed registration: FINISHED for a run that made a model
        version (its model and metrics are all there), KILLED for one without. Returns (run id, its version or None)."""
        if not SAFE_VALUE.match(round_name):
            raise RegistryError(f"round {round_name!r}: must be letters, digits, '_', '-', '.'")
        try:
            runs = self.client.search_runs([self.experiment_id()],
                                           filter_string=f"tags.round = '{round_name}' and attributes.status = 'RUNNING'")
        except MlflowException as e:
            raise RegistryError(f"MLflow ({self.uri}): {e.message}") from None
        versions = {mv.run_id: str(mv.version) for mv in self._search(round=round_name) if mv.run_id}
        out = []
        for r in runs:
            version = versions.get(r.info.run_id)
            self.client.set_terminated(r.info.run_id, status="KILLED" if version is None else "FINISHED")
            out.append((r.info.run_id, version))
        return out

    def _finish(self, version: str) -> None:
        """Mark what the version supersedes, move the aliases it earned, then tag it complete (idempotent)."""
        mv = self.client.get_model_version(self.model_name, version)
        for old in split(mv.tags.get("supersedes")):
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
