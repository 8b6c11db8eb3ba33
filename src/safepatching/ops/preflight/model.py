"""Preflight of the models and benchmarks a params file names: the backbone and each model-backed judge reachable
(local folder or hub), lm-eval's tasks resolvable (offline: their datasets cached), the suite's prompts within the
model's context (see the package doc)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...config import Params
from ...errors import SafePatchingError
from . import Report

_TRUE = {"1", "true", "yes", "on"}
_LOCAL_LOADERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder"}
GATED_FIX = ("a gated model (e.g. meta-llama/*) also needs its licence accepted on the model's hub page and a token "
             "in the environment: HF_TOKEN=hf_... or `hf auth login` once")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def folder_problems(folder: Path, chat: bool = True) -> list[str]:
    """What a local model folder lacks for load_model: config.json, safetensors weights, a tokenizer and (`chat`) a
    chat template."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(folder.glob("*.safetensors")):
        bins = sorted(p.name for p in folder.glob("*.bin"))
        missing.append(f"safetensors weights (found only {bins}: pickle weights are not loaded; re-save with "
                       "save_pretrained(..., safe_serialization=True))" if bins else "safetensors weights (*.safetensors)")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")):
        missing.append("a tokenizer (tokenizer.json / tokenizer.model)")
    elif chat and not _has_chat_template(folder):
        missing.append("a chat template (tokenizer_config.json `chat_template` or chat_template.jinja)")
    return missing


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def locate(source: str, revision: str | None, root: Path, key: str, rep: Report, chat: bool = True) -> Path | None:
    """The local folder of a model source (a folder, or a hub id's cached snapshot), checked; problems to `rep`.
    None when there is no local copy (a hub id to download, or a problem)."""
    rep.checks += 1
    local = Path(source).expanduser()
    local = local if local.is_absolute() else root / local
    if local.exists() or _looks_like_path(source):
        if not local.is_dir():
            rep.add(f"{key}: {source}", "no such model folder", "point it at a folder saved by save_pretrained, or "
                                                                 "at a hub id (org/name)")
            return None
        miss = folder_problems(local, chat)
        if miss:
            rep.add(f"{key}: {source}", "the model folder lacks " + "; ".join(miss),
                    "save the model and its tokenizer with save_pretrained into that folder")
            return None
        return local
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snap = Path(snapshot_download(source, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        snap = None
    if snap is not None and not folder_problems(snap, chat):
        return snap
    if hub_offline():
        rep.add(f"{key}: {source}" + (f" (revision {revision})" if revision else ""),
                f"a hub id not (completely) in the local HF cache ({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1 "
                "(the default of make run and every stage)",
                "download it once with the hub on: HF_HUB_OFFLINE=0 make run (or HF_HUB_OFFLINE=0 make preflight); "
                + GATED_FIX + "; or point the key at a local folder")
        return None
    _check_hub(source, key, rep)
    return None


def _check_hub(repo: str, key: str, rep: Report) -> None:
    """With the hub on: the repo exists and this environment's token may read it."""
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(repo)
    except GatedRepoError:
        rep.add(f"{key}: {repo}", "a gated model this environment has no access to", GATED_FIX)
    except RepositoryNotFoundError:
        rep.add(f"{key}: {repo}", "no such model on the hub (or a private one without a token)",
                "check the id; a private or gated model needs HF_TOKEN=... or `hf auth login`")
    except Exception as e:  # network: requests / httpx errors, timeouts
        rep.add(f"{key}: {repo}", f"the hub is not reachable ({type(e).__name__}: {str(e)[:120]})",
                "check the network / HF_ENDPOINT / proxy, or use a local folder")


def context_length(folder: Path, tok) -> int | None:
    """The model's context in tokens: its config's position limit, else the tokenizer's model_max_length."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    for k in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        if isinstance(cfg.get(k), int) and cfg[k] > 0:
            return int(cfg[k])
    n = getattr(tok, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 10_000_000 else None


def check_prompt_lengths(params: Params, root: Path, folder: Path, rep: Report) -> None:
    """Every suite prompt (through the chat template) against the prompt limit: notes of what will be skipped."""
    from transformers import AutoTokenizer

    from ...evaluation.generate import prompt_limit, prompt_tokens
    from ...evaluation.suite import load_set
    from .data import produced_by_pipeline

    rep.checks += 1
    e = params.eval
    tok = AutoTokenizer.from_pretrained(str(folder))
    ctx = context_length(folder, tok)
    limit = prompt_limit(e.max_prompt_tokens, e.max_new_tokens, ctx)
    if limit is None:
        rep.notes.append(f"prompt lengths not checked: {folder} states no context length (set eval.max_prompt_tokens)")
        return
    if limit < 1:
        rep.add("eval.max_new_tokens", f"{e.max_new_tokens} new tokens leave no room for a prompt in the model's "
                                       f"{ctx}-token context", "lower eval.max_new_tokens")
        return
    for name, s in e.suite.items():
        if any(produced_by_pipeline(params, f) for f in (s.file, s.val, s.test, s.templates) if f):
            continue
        for split in ("val", "test"):
            try:
                rows = load_set(name, s, split, root)
            except SafePatchingError:
                break  # reported by the data checks
            n = prompt_tokens(tok, [r["prompt"] for r in rows])
            over = [(k, r["id"]) for k, r in zip(n, rows) if k > limit]
            if over:
                k, rid = max(over)
                rep.notes.append(f"eval.suite.{name} ({split}): {len(over)} of {len(rows)} prompts are longer than "
                                 f"{limit} tokens (longest {k}, id {rid}); they are skipped and counted "
                                 f"(skipped_too_long in the metrics; eval.max_prompt_tokens, model context {ctx})")


def task_datasets(tm, name: str, seen: set[str] | None = None) -> set[str]:
    """The hub datasets behind an lm-eval task, group or tag (local loaders such as json are left out)."""
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    entry = tm.task_index.get(name)
    if entry is None:
        return set()
    kind, cfg = getattr(entry.kind, "name", str(entry.kind)), entry.cfg or {}
    if kind == "TAG":
        return {d for n, en in tm.task_index.items() if name in (en.tags or ()) for d in task_datasets(tm, n, seen)}
    if kind == "GROUP":
        subs = cfg.get("task", [])
        out: set[str] = set()
        for sub in subs if isinstance(subs, list) else [subs]:
            if isinstance(sub, dict):
                out |= {sub["dataset_path"]} if sub.get("dataset_path") else task_datasets(tm, str(sub.get("task")), seen)
            else:
                out |= task_datasets(tm, str(sub), seen)
        return out
    path = cfg.get("dataset_path")
    return {path} if isinstance(path, str) and path not in _LOCAL_LOADERS else set()


def dataset_cached(repo: str) -> bool:
    """A hub dataset in the hub cache (datasets--org--name) or in `datasets`' processed cache (org___name)."""
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / ("datasets--" + repo.replace("/", "--"))
    ds_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return hub.is_dir() or (ds_cache / repo.replace("/", "___")).is_dir()


def check_utility(params: Params, root: Path, rep: Report) -> None:
    u = params.eval.utility
    if not u.tasks:
        return
    rep.checks += 1
    try:
        from ...evaluation.utility import task_manager
    except ImportError as e:  # pragma: no cover
        rep.add("eval.utility.tasks", f"lm-eval is not importable ({e})", "install requirements.txt")
        return
    inc = root / u.include_path if u.include_path else None
    try:
        tm = task_manager(u.tasks, inc)
    except SafePatchingError as e:
        rep.add("eval.utility.tasks", str(e), "name tasks lm-eval knows (`lm_eval ls tasks`) or put task YAMLs "
                                              "under eval.utility.include_path")
        return
    if not (hub_offline() or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in _TRUE):
        rep.notes.append(f"eval.utility.tasks {list(u.tasks)}: the hub is on; datasets not in the cache are "
                         "downloaded at the first evaluation")
        return
    missing = {t: sorted(d for d in task_datasets(tm, t) if not dataset_cached(d)) for t in u.tasks}
    missing = {t: d for t, d in missing.items() if d}
    if missing:
        rep.add("eval.utility.tasks", "datasets not in the local HF cache while the hub is off (HF_HUB_OFFLINE=1): "
                + "; ".join(f"{t}: {', '.join(d[:3])}{' ...' if len(d) > 3 else ''}" for t, d in missing.items()),
                "fetch them once with the hub on (HF_HUB_OFFLINE=0 make run), or drop those tasks from "
                "eval.utility.tasks")


def check_models(params: Params, root: Path, rep: Report) -> None:
    b = params.backbone
    folder = None
    if b.source != "organism":
        folder = locate(b.source, b.revision, root, "backbone.source", rep)
    for name, j in params.eval.judges.items():
        model = getattr(j, "model", None)
        if isinstance(model, str):
            locate(model, None, root, f"eval.judges.{name}.model", rep, chat=name == "guard")
    check_utility(params, root, rep)
    if folder is not None:
        check_prompt_lengths(params, root, folder, rep)
    elif b.source != "organism":
        rep.notes.append("prompt lengths not checked: the backbone's tokenizer is not available locally yet")
