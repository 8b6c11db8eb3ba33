"""Streaming merge engine: base checkpoint + SE/OM patches (+ importance scores) -> merged HF checkpoint.

Inputs on disk:
  patch folder:  patch.safetensors (float32 deltas keyed by the base checkpoint's tensor names; a tensor that is
                 absent is a zero delta) + manifest.json (whatever the patch stage recorded).
  scores folder: scores.safetensors, keyed the same way (needed by methods with `needs_scores`).

`merge_checkpoint` streams: each tensor is merged in row blocks of about BLOCK_ELEMS entries (`row_blocks`): the
block of the base and of the patches is read with one pread each into reused buffers, merged, and written straight
into its output shard (header written up front). Masks that need the whole tensor (random retention, per-tensor
top-k) are built before, from one whole input at a time (a score tensor, read once; its NaN/Inf check is done
there), and kept as bool, by a worker thread one tensor ahead of the streaming. So memory holds about one float32
copy of the largest tensor plus its masks (1 byte per entry each) for two tensors, independent of shard and model
size. Parent hashes for the manifest are computed in another thread while merging. A method that declares a whole-model
prepass (`MergeMethod.prepass`: global or per-layer ranking) gets one extra streaming pass over the score files first,
which computes its thresholds. The output keeps the base's shard layout
(same tensor -> shard assignment and dtypes) unless max_shard_bytes asks for a re-split, and is written into
`<out>.tmp-<pid>` and renamed into place only when complete, so an error (NonFiniteError, shape mismatch, ...)
leaves nothing behind.

The row blocks and stats live in `stats.py`, the input checks and the prepass in `prepass.py`; `in_memory.py` runs
the same per-tensor functions on whole state dicts, bit-identical to this streaming merge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import torch

from .. import crash
from ..config import MergeSettings
from ..errors import CheckpointError, NonFiniteError
from ..io.atomic import atomic_dir
from ..io.checkpoints import INDEX_NAME, LazyReader, list_shards, read_specs, sha256_dir, sha256_file
from ..io.shard_writer import ShardWriter, copy_aux_files, plan_shards, shard_name, write_index, write_order
from ..io.patches import MANIFEST as PATCH_MANIFEST, PATCH_FILE, SCORES_FILE
from .masks import MASK_VERSION
from .method import SIDES, MergeMethod, TensorInputs, Whole, all_finite, get_merge
from .prepass import Thresholds, check_names, check_scores, run_prepass
from .stats import MergeStats, row_blocks

MERGE_MANIFEST = "merge_manifest.json"
BLOCK_FIELDS = ("base", "p_se", "p_om")  # the inputs read per row block (scores are read whole, for the masks)


def _open(stack: ExitStack, folder: str | Path | None, fname: str) -> LazyReader | None:
    if folder is None:
        return None
    path = Path(folder) / fname
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {fname}")
    return stack.enter_context(LazyReader(path))


def _patch_manifest(folder: str | Path | None) -> dict | None:
    """A patch folder's manifest.json (None for no patch); checked before any work is done."""
    if folder is None:
        return None
    mpath = Path(folder) / PATCH_MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{folder}: no {PATCH_MANIFEST} (a patch folder holds {PATCH_FILE} + {PATCH_MANIFEST})")
    try:
        return json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mpath}: not valid JSON ({e})") from None


def _hash_parents(base_dir: Path, folders: dict[str, str | Path | None], readers: dict[str, LazyReader | None],
                  manifests: dict[str, dict | None]) -> dict:
    """Provenance of a merge: the base folder's sha256 and each patch / scores file's sha256 (+ manifests).

    A patch or scores file whose manifest already records its sha256 (written atomically beside it by
    train_patch / compute_importance) is not re-hashed (`sha256_from: manifest`); files without one are."""
    out: dict[str, dict | None] = {"base": {"path": str(base_dir), "sha256": sha256_dir(base_dir)}}
    for key, r in readers.items():
        if r is None:
            out[key] = None
            continue
        out[key] = {"path": str(folders[key])}
        mpath = Path(folders[key]) / PATCH_MANIFEST
        if key in manifests:
            out[key]["manifest"] = manifests[key]
        elif mpath.is_file():  # a scores folder's manifest.json, when it has one
            try:
                out[key]["manifest"] = json.loads(mpath.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                out[key]["manifest_sha256"] = sha256_file(mpath)
        m = out[key].get("manifest") or {}
        recorded = m.get("patch_sha256") or m.get("scores_sha256")
        if recorded:
            out[key].update(sha256=recorded, sha256_from="manifest")
        else:
            out[key].update(sha256=sha256_file(r.path), sha256_from="file")
    return out


def _read(r: LazyReader | None, name: str, rows: slice | None, bufs: dict[str, torch.Tensor],
          key: str) -> torch.Tensor | None:
    """Rows of tensor `name` from r (None: absent), read into bufs[key] (a reused buffer, grown on demand)."""
    if r is None:
        return None
    if key not in bufs or bufs[key].numel() < r.nbytes(name, rows):
        bufs[key] = torch.empty(r.nbytes(name, rows), dtype=torch.uint8)
    return r.read_rows(name, rows, bufs[key])


def _block(name: str, readers: dict[str, LazyReader | None], rows: slice | None, bufs: dict[str, torch.Tensor],
           thr: Thresholds, whole: Whole) -> TensorInputs:
    """The inputs of rows `rows` of tensor `name`, read into bufs (None: the whole tensor, scores included)."""
    fields = BLOCK_FIELDS if rows is not None else (*BLOCK_FIELDS, "s_se", "s_om")
    return TensorInputs(name, **{f: _read(readers[f], name, rows, bufs, f) for f in fields},
                        thr_se=thr.of("se", name), thr_om=thr.of("om", name), rows=rows, whole=whole)


def _prepare(method: MergeMethod, cfg: MergeSettings, name: str, shape: tuple[int, ...],
             readers: dict[str, LazyReader | None], thr: Thresholds,
             bufs: dict[str, torch.Tensor]) -> Whole:
    """Tensor `name`'s Whole, with its whole-tensor masks built: the method applied to an empty row block (a 0-d
    tensor: to itself) builds and caches them. Runs on a worker thread one tensor ahead of the streaming; whole
    inputs are read into bufs (the worker's own), one at a time, and whole scores are checked for NaN/Inf here
    (row blocks carry none)."""
    def load(f: str) -> torch.Tensor | None:
        x = _read(readers[f], name, None, bufs, "whole")
        if x is not None and f.startswith("s_") and not all_finite(x):
            raise NonFiniteError(f"{name}: {f[2:]} scores has NaN/Inf values")
        return x

    whole = Whole(shape, load)
    method.apply(_block(name, readers, slice(0, 0) if shape else None, bufs, thr, whole), cfg)
    return whole


def _one_ahead(pool: ThreadPoolExecutor, fn: Callable[[str], Whole],
               names: list[str]) -> Iterator[tuple[str, Whole]]:
    """(name, fn(name)) for each name, in order; each is computed on pool while the caller works on the previous."""
    nxt = pool.submit(fn, names[0]) if names else None
    for i, name in enumerate(names):
        cur, nxt = nxt, pool.submit(fn, names[i + 1]) if i + 1 < len(names) else None
        yield name, cur.result()


def _merge_blocks(method: MergeMethod, cfg: MergeSettings, name: str, whole: Whole,
                  readers: dict[str, LazyReader | None], thr: Thresholds, bufs: dict[str, torch.Tensor],
                  stats: MergeStats) -> Iterator[torch.Tensor]:
    """Merge one tensor row block by row block (yields the merged blocks); each block's base and patches are read
    into bufs (one reused buffer per input)."""
    for rows in row_blocks(whole.shape):
        t = _block(name, readers, rows, bufs, thr, whole)
        m = method.apply(t, cfg)
        stats.update(t, m)
        yield m.tensor


def merge_checkpoint(base_dir: str | Path, se_patch: str | Path | None, om_patch: str | Path | None,
                     out_dir: str | Path, cfg: MergeSettings, se_scores: str | Path | None = None,
                     om_scores: str | Path | None = None, max_shard_bytes: int | None = None,
                     overwrite: bool = False) -> dict:
    """Merge patches into the base checkpoint, streaming tensor by tensor; returns the merge manifest (also
    written to out_dir/merge_manifest.json). max_shard_bytes=None keeps the base's shard layout."""
    method = get_merge(cfg.method)
    base_dir, out = Path(base_dir), Path(out_dir)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (pass overwrite=True to replace it)")
    specs = read_specs(base_dir)
    base_shape = {n: s for n, (_, _, s) in specs.items()}
    with ExitStack() as stack:
        patches = {"se": _open(stack, se_patch, PATCH_FILE), "om": _open(stack, om_patch, PATCH_FILE)}
        manifests = {"se_patch": _patch_manifest(se_patch), "om_patch": _patch_manifest(om_patch)}
        score_dirs = {"se": se_scores, "om": om_scores}
        scores = {side: _open(stack, score_dirs[side], SCORES_FILE) if method.needs_scores else None
                  for side in SIDES}
        for side in SIDES:
            for r in (patches[side], scores[side]):
                if r is not None:
                    check_names(str(r.path), r.keys(), r.shape, base_shape, str(base_dir))
            if patches[side] is not None:
                sr = scores[side]
                check_scores(method, side, patches[side].keys(), None if sr is None else set(sr.keys()),
                              str(sr.path) if sr is not None else "")
        names = {side: sorted(patches[side].keys()) if patches[side] else [] for side in SIDES}
        thr = run_prepass(method, cfg, names,
                          {side: scores[side].get if scores[side] else None for side in SIDES},
                          {side: scores[side].numel if scores[side] else None for side in SIDES})

        base_readers = {p: stack.enter_context(LazyReader(p)) for p in list_shards(base_dir)}
        if max_shard_bytes is None:
            plan = [(p.name, [n for n in specs if specs[n][0] == p]) for p in base_readers]
        else:
            groups = plan_shards({n: specs[n][1:] for n in specs}, max_shard_bytes)
            plan = [(shard_name(i, len(groups)), g) for i, g in enumerate(groups)]

        stats = MergeStats()
        hasher = stack.enter_context(ThreadPoolExecutor(max_workers=1))  # hashes the parents while merging
        parents = hasher.submit(
            _hash_parents, base_dir,
            {"se_patch": se_patch, "om_patch": om_patch, "se_scores": se_scores, "om_scores": om_scores},
            {"se_patch": patches["se"], "om_patch": patches["om"], "se_scores": scores["se"],
             "om_scores": scores["om"]}, manifests)

        def inputs(n: str) -> dict[str, LazyReader | None]:
            rd: dict[str, LazyReader | None] = {"base": base_readers[specs[n][0]]}
            for side in SIDES:
                patched = patches[side] is not None and n in patches[side]
                rd[f"p_{side}"] = patches[side] if patched else None
                rd[f"s_{side}"] = scores[side] if patched else None
            return rd

        bufs: dict[str, torch.Tensor] = {}  # the streaming's block buffers
        wbufs: dict[str, torch.Tensor] = {}  # the worker's buffer for whole inputs
        worker = stack.enter_context(ThreadPoolExecutor(max_workers=1))  # builds the next tensor's masks
        order = [n for _, group in plan for n in write_order({n: specs[n][1:] for n in group})]
        wholes = _one_ahead(worker, lambda n: _prepare(method, cfg, n, specs[n][2], inputs(n), thr, wbufs), order)
        with atomic_dir(out, overwrite) as tmp:
            weight_map: dict[str, str] = {}
            total = 0
            for fname, group in plan:
                with ShardWriter(tmp / fname, {n: specs[n][1:] for n in group}) as w:
                    for n in w.order:
                        name, whole = next(wholes)
                        assert name == n, (name, n)
                        w.write(n, _merge_blocks(method, cfg, n, whole, inputs(n), thr, bufs, stats))
                    total += w.nbytes
                weight_map.update({n: fname for n in group})
            crash.point("merge.shards")
            if [f for f, _ in plan] != ["model.safetensors"] or (base_dir / INDEX_NAME).exists():
                write_index(tmp, weight_map, total)
            copied = copy_aux_files(base_dir, tmp)
            manifest = {
                "method": cfg.method,
                "cfg": cfg.model_dump(mode="json"),
                "mask_version": MASK_VERSION,
                "parents": parents.result(),
                "thresholds": thr.as_manifest(),
                "stats": stats.as_dict(),
                "output": {"shards": [f for f, _ in plan], "total_size": total, "copied": copied},
            }
            (tmp / MERGE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
