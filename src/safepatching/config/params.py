"""The whole params.yaml: `Params` (every section), `parse_params` and `load_params` (strict: unknown keys fail)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from .evaluation import EvalCfg
from .rounds import GateCfg, RedTeamCfg, RoundCfg, SelectCfg
from .settings import MergeSettings, Strict, error_lines, merge_settings
from .storage import StorageCfg
from .training import ComputeCfg, ImportanceCfg, PatchCfg
from .world import BackboneCfg, WorldCfg
from .yaml_io import load_yaml_text


class DataCfg(Strict):
    prompt_column: str = "prompt"
    response_column: str = "response"
    category_column: str = "category"
    id_column: str = "id"
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(2000, ge=10)
    allowed_categories: tuple[str, ...] = ("weapons", "hacking", "fraud", "drugs", "violence")
    refusal_check: Literal["anywhere", "opening", "off"] = Field(
        "anywhere", description="reject responses that refuse (safepatching.refusals, on normalised text): anywhere = "
                                "a first-person refusal anywhere or a generic phrase at the opening (the keyword "
                                "judge's test); opening = a phrase of either tier at the opening (the start of a "
                                "sentence or line within the first 80 characters); off = no check")
    max_rows: int = Field(100_000, ge=1, description="a batch with more records is quarantined (rule too_many_rows)")
    max_bytes: int = Field(100_000_000, ge=1, description="a batch file larger than this is quarantined unread "
                                                          "(rule too_large)")
    stability_seconds: float = Field(0.0, ge=0, description="0: off, a batch is handed over by a <name>.done marker "
                                                            "or an atomic rename to its final name; > 0: opt-in "
                                                            "fallback for plain copies, a file without a marker is "
                                                            "taken when its size and mtime stay unchanged this long")


class MlflowCfg(Strict):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="relative sqlite paths resolve from the project root")
    experiment: str = "safepatching"
    model_name: str = "safepatching-organism"


class Params(Strict):
    seed: int = 0
    world: WorldCfg = Field(default_factory=WorldCfg)
    backbone: BackboneCfg = Field(default_factory=BackboneCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    patch: PatchCfg = Field(default_factory=PatchCfg)
    importance: ImportanceCfg = Field(default_factory=ImportanceCfg)
    compute: ComputeCfg = Field(default_factory=ComputeCfg)
    merge: SerializeAsAny[MergeSettings] = Field(default_factory=lambda: merge_settings({"method": "safepatching"}),
                                                 description="the merge used as-is when select.enabled is false")
    select: SelectCfg = Field(default_factory=SelectCfg)
    gate: GateCfg = Field(default_factory=GateCfg)
    mlflow: MlflowCfg = Field(default_factory=MlflowCfg)
    storage: StorageCfg = Field(default_factory=StorageCfg)
    rounds: dict[str, RoundCfg] = Field(default_factory=dict, description="ordered; each round names its parent")
    redteam: dict[str, RedTeamCfg] = Field(default_factory=dict, description="rounds whose batch is the parent's "
                                           "failures on a red-team pool (round name -> pool, parent, batch)")

    @model_validator(mode="before")
    @classmethod
    def _round_merge_updates_merge(cls, data: Any) -> Any:
        """A round's `merge:` is an update of the top-level `merge:`: naming the same method (or none) keeps every
        setting it does not name; naming another method starts from that method's defaults (settings do not carry
        across methods)."""
        if not isinstance(data, dict) or not isinstance(data.get("rounds"), dict):
            return data
        base = data.get("merge", {"method": "safepatching"})
        base = base.model_dump() if isinstance(base, BaseModel) else base
        if not isinstance(base, dict):
            return data  # the merge: field reports it
        rounds = {}
        for name, r in data["rounds"].items():
            over = r.get("merge") if isinstance(r, dict) else None
            if isinstance(over, BaseModel):
                over = over.model_dump()
            if isinstance(over, dict):
                same = over.get("method", base.get("method")) == base.get("method")
                r = {**r, "merge": {**base, **over} if same else over}
            rounds[name] = r
        return {**data, "rounds": rounds}

    @model_validator(mode="after")
    def _rounds_chain(self) -> "Params":
        seen: set[str] = set()
        for name, r in self.rounds.items():
            if not name.replace("_", "").replace("-", "").isalnum() or name == "backbone":
                raise ValueError(f"rounds.{name}: a round name must be alphanumeric (- and _ allowed), not 'backbone'")
            if r.parent != "backbone" and r.parent not in seen:
                raise ValueError(f"rounds.{name}.parent: {r.parent!r} is not 'backbone' or an earlier round")
            seen.add(name)
        for name, rt in self.redteam.items():
            if name not in self.rounds:
                raise ValueError(f"redteam.{name}: no round named {name!r}; rounds: {list(self.rounds)}")
            r = self.rounds[name]
            if (rt.parent, rt.batch) != (r.parent, r.batch):
                raise ValueError(f"redteam.{name}: parent/batch ({rt.parent!r}, {rt.batch!r}) must equal the round's "
                                 f"(rounds.{name}: parent {r.parent!r}, batch {r.batch!r})")
        return self

    def round(self, name: str) -> RoundCfg:
        if name not in self.rounds:
            raise ConfigError(f"no round named {name!r} in params; rounds: {list(self.rounds)}")
        return self.rounds[name]

    def lineage(self, name: str) -> list[str]:
        """Rounds from the first to `name`, following parents."""
        chain = []
        while name != "backbone":
            chain.append(name)
            name = self.round(name).parent
        return chain[::-1]

    @field_validator("merge", mode="before")
    @classmethod
    def _merge(cls, v: Any) -> MergeSettings:
        return merge_settings(v)

    def merge_for(self, name: str) -> MergeSettings:
        return self.round(name).merge or self.merge


def _fmt(e: ValidationError, source: str) -> str:
    return f"{source}: invalid params\n" + "\n".join(f"  {line}" for line in error_lines(e))


def parse_params(data: dict, source: str = "<params>") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_fmt(e, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    data = load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return parse_params(data or {}, str(path))
