# Two commands do all the set-up on a fresh machine:  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
EXTRA_STAMP := $(VENV)/.extra-installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_HOME ?= $(CURDIR)/.prefect
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1

.PHONY: setup setup-extra preflight run repro test test-slow test-cluster bench bench-merge clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(VENV)/bin/pip install -q -r requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(VENV)/bin/pip install -q --no-deps -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

setup: $(STAMP)

PARAMS ?= params.yaml

## preflight: check a params file's data, models and benchmarks in seconds, every problem at once (PARAMS=...)
preflight: setup
	$(PY) -m safepatching.ops.preflight --params $(PARAMS)

## run: build the organism, then 3 continual SafePatching rounds (DVC + Prefect + MLflow), ~21 min on 2 idle AVX2 cores;
## the preflight first (a problem stops it before Prefect or DVC start)
run: setup
	$(PY) -m safepatching.ops.preflight --params params.yaml --record
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m flows.continual

## repro: the lineage alone (`dvc repro`, no intake, no MLflow registration); the stages' `python` is the venv's
## (PATH above), which a bare `.venv/bin/dvc repro` outside an activated venv would not find
repro: setup
	$(PY) -m safepatching.ops.preflight --params params.yaml --record
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} dvc repro

## test: the default (fast) test suite
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

## test-slow: end-to-end tests (DVC chain, real Prefect server)
test-slow: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

# team-deployment requirements (boto3, Postgres drivers, dvc-s3, dask/prefect-dask, and the servers the cluster
# tests start), constrained by the pinned stack; see README "Scale out"
$(EXTRA_STAMP): $(STAMP) requirements-extra.txt
	set -o pipefail; $(VENV)/bin/pip install -q -r requirements-extra.txt -c requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(EXTRA_STAMP)

## setup-extra: install requirements-extra.txt into the venv (needed for a tracking server, S3, DVC remote, Dask)
setup-extra: $(EXTRA_STAMP)

## test-cluster: the miniature team deployment (Postgres, S3, MLflow and Prefect servers, a worker, Dask), real servers
test-cluster: setup $(EXTRA_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m cluster

# bench-only requirements (mergekit, for merge_bench's mergekit column), constrained by the pinned stack
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	set -o pipefail; $(VENV)/bin/pip install -q -r requirements-bench.txt -c requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(BENCH_STAMP)

## bench: backbone bench + a quick merge bench (~70 MB model; ours vs mergekit); installs requirements-bench.txt
bench: setup $(BENCH_STAMP)
	OMP_NUM_THREADS=2 $(PY) bench/backbone_bench.py
	OMP_NUM_THREADS=2 $(PY) bench/merge_bench.py --small

## bench-merge: the full merge bench (1.1 GB fp32 Llama, ~19 GB of temp files in /tmp; see docs/performance.md)
bench-merge: setup $(BENCH_STAMP)
	$(PY) bench/merge_bench.py

clean:
	rm -rf models artifacts reports mlflow.db mlartifacts .prefect data/quarantine data/incoming/*.tmp
