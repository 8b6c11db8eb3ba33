"""One typed config: params.yaml -> `load_params()` -> strict pydantic models.

Unknown keys are an error naming the key (extra="forbid"); every value is validated at load time, so a typo fails
before any compute is spent. A default lives once, on its model (an extension's on its own settings model), equal to
what params.yaml ships (tests/structure/test_params_file.py).

  settings.py    the extension settings machinery (Settings, resolve_settings) and each extension kind's base
  world.py evaluation.py training.py rounds.py params.py    the schema, by params.yaml section
  storage.py     the DVC remote (storage:)
  sweep.py       sweep-grid expansion (select.grid)
  yaml_io.py     the duplicate-key-refusing YAML loader

This module is the package's API: `from safepatching.config import Params, load_params, ...`.
"""

from .evaluation import ORGANISM_SUITE, EvalCfg, EvalSetCfg, UtilityCfg
from .params import DataCfg, MlflowCfg, Params, load_params, parse_params
from .rounds import ExecutorCfg, GateCfg, RedTeamCfg, RoundCfg, SelectCfg
from .settings import (JudgeSettings, MergeSettings, ObjectiveCfg, Settings, Strict, merge_settings,
                       objective_settings, resolve_settings)
from .storage import StorageCfg
from .sweep import grid_points, sweep_space
from .training import ComputeCfg, ImportanceCfg, LoraCfg, PatchCfg
from .world import BackboneCfg, WorldCfg
from .yaml_io import UniqueKeyLoader, load_yaml_text

__all__ = ["ORGANISM_SUITE", "BackboneCfg", "ComputeCfg", "DataCfg", "EvalCfg", "EvalSetCfg", "ExecutorCfg", "GateCfg",
           "ImportanceCfg", "JudgeSettings", "LoraCfg", "MergeSettings", "MlflowCfg", "ObjectiveCfg", "Params",
           "PatchCfg", "RedTeamCfg", "RoundCfg", "SelectCfg", "Settings", "StorageCfg", "Strict", "UniqueKeyLoader", "UtilityCfg",
           "WorldCfg", "grid_points", "load_params", "load_yaml_text", "merge_settings", "objective_settings",
           "parse_params", "resolve_settings", "sweep_space"]
