"""Shared fixtures: offline env, the shipped params, a world built from them, and one tiny trained organism (built
once per session)."""

import os
from pathlib import Path

import pytest

from safepatching import envdefaults

envdefaults.apply()
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shipped_params():
    """The shipped params.yaml: tests derive their (small) settings from it, never from a third set of values."""
    from safepatching.config import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory, shipped_params) -> Path:
    from safepatching.organism.world import build_world, save_world

    d = tmp_path_factory.mktemp("world")
    save_world(build_world(shipped_params.world, shipped_params.seed), d)
    return d


@pytest.fixture(scope="session")
def tiny_organism(world_dir, tmp_path_factory, shipped_params) -> Path:
    """A few-step organism: not aligned well, but a real saved HF chat model for plumbing tests (the shipped
    backbone settings, shrunk)."""
    from safepatching.organism.model import build_organism

    cfg = shipped_params.backbone.model_copy(update=dict(vocab_size=600, hidden_size=32, num_layers=2, num_heads=2,
                                                         intermediate_size=64, steps=60, batch_size=32))
    out = tmp_path_factory.mktemp("organism") / "model"
    build_organism(world_dir, out, cfg, seed=shipped_params.seed, log=lambda s: None)
    return out
