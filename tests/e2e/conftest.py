"""Fixtures of the e2e tests that run the flow entry point in a child process (see flowspace.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """One local Prefect server for the flow runs of these tests (saves a temporary server start per run)."""
    from .flowspace import start_prefect_server, stop

    proc, url = start_prefect_server(tmp_path_factory.mktemp("prefect_server"))
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def flow_template(tmp_path_factory, prefect_api) -> Path:
    """One small workspace with the organism built and r1 registered (champion v1); tests copy it."""
    from .flowspace import build_template

    return build_template(tmp_path_factory.mktemp("flow_template"), prefect_api)
