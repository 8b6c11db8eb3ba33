"""Shared fixtures: offline env, a small world, and one tiny trained organism (built once per session)."""

import os
import types
from pathlib import Path

import pytest

from safepatching import envdefaults

envdefaults.apply()
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from safepatching.organism.world import build_world, save_world

    d = tmp_path_factory.mktemp("world")
    save_world(build_world(0, 0.7, 0.5), d)
    return d


@pytest.fixture(scope="session")
def tiny_organism(world_dir, tmp_path_factory) -> Path:
    """A few-hundred-step organism: not aligned well, but a real saved HF chat model for plumbing tests."""
    from safepatching.organism.model import build_organism

    cfg = types.SimpleNamespace(vocab_size=600, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                max_len=128, steps=60, batch_size=32, lr=3e-3)
    out = tmp_path_factory.mktemp("organism") / "model"
    build_organism(world_dir, out, cfg, seed=0, log=lambda s: None)
    return out
