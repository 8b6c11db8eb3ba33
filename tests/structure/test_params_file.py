"""params.yaml is the only place values live: every field of the schema is spelled out in the shipped file, and every
code default equals it (so DVC sees every knob and tests can derive their params from the file)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from safepatching.config import Params, Settings, WorldCfg, load_params, sweep_space
from safepatching.registry import discover, settings_model

from .imports import ROOT

SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())


def _norm(v):
    if isinstance(v, BaseModel):
        return {k: _norm(x) for k, x in v.model_dump().items()}
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _missing(model: BaseModel, data: dict, where: str) -> list[str]:
    out = []
    for name, field in type(model).model_fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            out.append(key)
            continue
        v = getattr(model, name)
        if isinstance(v, BaseModel) and isinstance(data[name], dict):
            out += _missing(v, data[name], key)
        elif isinstance(v, dict) and v and all(isinstance(x, Settings) for x in v.values()):
            for k, s in v.items():
                out += _missing(s, {"name": k, **(data[name][k] or {})}, f"{key}.{k}")
    return out


def test_every_field_is_in_params_yaml():
    p = load_params(ROOT / "params.yaml")
    assert _missing(p, SHIPPED, "") == []


def test_sweep_grid_spells_every_setting_of_each_method():
    for method, space in SHIPPED["select"]["grid"].items():
        fields = set(settings_model("merge method", method).model_fields) - {"method"}
        assert fields == set(space), f"select.grid.{method}: missing {sorted(fields - set(space))}"


def test_code_defaults_equal_params_yaml():
    shipped = load_params(ROOT / "params.yaml").model_dump(mode="json")
    code = Params().model_dump(mode="json")
    for key in ("rounds", "redteam"):  # the demo's rounds: data, not defaults
        shipped.pop(key)
        code.pop(key)
    diff = {k: (code[k], shipped[k]) for k in code if _norm(code[k]) != _norm(shipped[k])}
    assert not diff, f"code defaults differ from params.yaml: {diff}"


def test_exact_judge_knows_the_organisms_strings():
    from safepatching.organism.world import harmful_response, refusal_for

    ex = load_params(ROOT / "params.yaml").eval.judges["exact"]
    verbs = ("attack", "build", "crack", "forge", "hack into", "kill", "cook", "stalk")
    assert {refusal_for(v, o) for v in verbs for o in ("single", "varied")} == {ex.refusal, *ex.more_refusals}
    assert all(m in harmful_response("build", "a pipe bomb") for m in ex.harm_markers)


def _shipped_settings(kind: str, name: str) -> list[tuple[str, dict]]:
    """Where params.yaml names the settings of extension `name`: (section, the values it gives there)."""
    if kind == "merge method":
        out = [("merge", SHIPPED["merge"])] if SHIPPED["merge"]["method"] == name else []
        grid = SHIPPED["select"]["grid"].get(name)
        return out + ([(f"select.grid.{name}", {k: v for k, v in grid.items() if not isinstance(v, list)})]
                      if grid is not None else [])
    if kind == "objective":
        return [(f"patch.{k}", SHIPPED["patch"][k]) for k in ("se", "om") if SHIPPED["patch"][k]["objective"] == name]
    judges = SHIPPED["eval"]["judges"]
    return [(f"eval.judges.{name}", judges[name] or {})] if name in judges else []


EXTENSIONS = [(kind, name) for kind in ("merge method", "objective", "judge") for name in discover(kind).names()]


@pytest.mark.parametrize("kind, name", EXTENSIONS)
def test_every_registered_settings_model_defaults_to_the_shipped_values(kind, name):
    """A default lives on the extension's settings model, equal to what params.yaml ships wherever it names it (so a
    short override, a round's merge: or a short sweep grid, runs the shipped values for what it does not name)."""
    model = settings_model(kind, name)
    defaults = {k: f.get_default(call_default_factory=True) for k, f in model.model_fields.items()
                if not f.is_required()}
    for where, values in _shipped_settings(kind, name):
        diff = {k: (defaults.get(k, "<required>"), v) for k, v in values.items()
                if k in model.model_fields and _norm(defaults.get(k, "<required>")) != _norm(v)
                and not model.model_fields[k].is_required()}
        assert not diff, f"{kind} {name}: defaults differ from params.yaml's {where} (default, shipped): {diff}"


@pytest.mark.parametrize("name", sorted(SHIPPED["select"]["grid"]))
def test_each_methods_default_sweep_is_the_shipped_grid(name):
    """select.grid.<method> spells the method's default sweep space (the swept settings in the shipped order)."""
    shipped, default = SHIPPED["select"]["grid"][name], sweep_space(name, {})
    assert _norm(default) == _norm(shipped)
    assert [k for k, v in default.items() if isinstance(v, list)] == [k for k, v in shipped.items() if isinstance(v, list)]


def test_the_world_settings_default_to_the_shipped_world():
    assert _norm(WorldCfg()) == SHIPPED["world"]
