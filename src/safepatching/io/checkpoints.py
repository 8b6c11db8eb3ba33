"""Safetensors-only checkpoint IO for HF model folders.

* `list_shards` finds a folder's weight files (`model.safetensors`, or `model.safetensors.index.json` + its
  shards) and refuses pickle-only folders (`*.bin`, `*.pt`, ...) with a `CheckpointError` naming the folder.
* `LazyReader` reads one tensor at a time from one safetensors file (`safe_open`, `pread` backend: each tensor
  is read into its own memory, nothing of the file stays mapped, so resident memory is one tensor, not the file),
  or a block of a tensor's rows with one pread into a caller's reusable buffer (`read_rows`).
* `ShardWriter` streams tensors into one safetensors file: the header is written up front from the planned
  names/dtypes/shapes, then each tensor's bytes as it is produced (whole or row block by row block), so a shard
  never has to sit in memory.
* `save_sharded` writes a state dict as HF-named shards (`model-00001-of-0000N.safetensors`) + index json.
* `atomic_dir` writes a folder under `<out>.tmp-<pid>` and renames it into place only when complete; it first
  removes the `.tmp-<pid>` folders of writers that were killed (`clean_stale`).
* `sha256_dir` hashes a folder's weight files + config.json (for manifests).

Nothing here executes code from a checkpoint folder (no pickle, no trust_remote_code).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .. import crash
from ..errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
AUX_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
             "chat_template.jinja", "chat_template.json")

DTYPE_TO_ST = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}
ST_TO_DTYPE = {v: k for k, v in DTYPE_TO_ST.items()}

Spec = tuple[torch.dtype, tuple[int, ...]]


def shard_name(i: int, n: int) -> str:
    """HF shard naming: a single shard is `model.safetensors`, else `model-00001-of-00004.safetensors`."""
    return WEIGHTS_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def list_shards(folder: str | Path) -> list[Path]:
    """The safetensors weight files of an HF model folder, in index order (sorted file names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    index = folder / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CheckpointError(f"{index}: shard(s) listed in the index are missing: {missing}")
        return [folder / f for f in files]
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(f"{folder}: only pickle weights ({pickles[:3]}); safetensors is required "
                              "(pickle checkpoints are refused: loading them can execute code)")
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} or {INDEX_NAME}")


class LazyReader:
    """Per-tensor reader for one safetensors file; use as a context manager or call close()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: safetensors file not found")
        if self.path.suffix != ".safetensors":
            raise CheckpointError(f"{self.path}: not a .safetensors file (pickle formats are refused)")
        try:
            self._f = safe_open(str(self.path), framework="pt", device="cpu", backend="pread")
            self._f.__enter__()
            self._slices = {k: self._f.get_slice(k) for k in self._f.keys()}
        except SafetensorError as e:
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({e})") from None
        self._fd = os.open(self.path, os.O_RDONLY)
        with open(self.path, "rb") as f:  # safe_open validated the header; keep each tensor's byte offset
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        self._offset = {k: 8 + n + v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}

    def keys(self) -> list[str]:
        return list(self._slices)

    def __contains__(self, name: str) -> bool:
        return name in self._slices

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slices[name].get_shape())

    def dtype(self, name: str) -> torch.dtype:
        st = self._slices[name].get_dtype()
        if st not in ST_TO_DTYPE:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {st}")
        return ST_TO_DTYPE[st]

    def spec(self, name: str) -> Spec:
        return self.dtype(name), self.shape(name)

    def numel(self, name: str) -> int:
        n = 1
        for d in self.shape(name):
            n *= d
        return n

    def get(self, name: str) -> torch.Tensor:
        if name not in self._slices:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}")
        return self._f.get_tensor(name)

    def _rows(self, name: str, rows: slice | None) -> tuple[torch.dtype, tuple[int, ...], int]:
        """(dtype, shape, byte offset in the file) of rows rows.start:rows.stop (dim 0) of a tensor (None: all)."""
        dtype, full = self.spec(name)
        start, shape = (0, full) if rows is None else (rows.start, (rows.stop - rows.start, *full[1:]))
        return dtype, shape, self._offset[name] + start * dtype.itemsize * math.prod(full[1:])

    def nbytes(self, name: str, rows: slice | None = None) -> int:
        dtype, shape, _ = self._rows(name, rows)
        return dtype.itemsize * math.prod(shape)

    def read_rows(self, name: str, rows: slice | None, buf: torch.Tensor) -> torch.Tensor:
        """Rows rows.start:rows.stop (dim 0) of a tensor (None: all of it), read with one pread into buf (a uint8
        tensor of at least nbytes(name, rows) bytes, reused by the caller: no new memory, no page faults); the
        result is a view of buf, valid until buf is reused."""
        dtype, shape, offset = self._rows(name, rows)
        nbytes = dtype.itemsize * math.prod(shape)
        out = buf[:nbytes]
        if nbytes and os.preadv(self._fd, [out.numpy()], offset) != nbytes:
            raise CheckpointError(f"{self.path}: short read of tensor {name!r}")
        return out.view(dtype).view(shape)

    def metadata(self) -> dict[str, str]:
        return dict(self._f.metadata() or {})

    def close(self) -> None:
        if getattr(self, "_f", None) is not None:
            self._f.__exit__(None, None, None)
            self._f = None
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "LazyReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_specs(folder: str | Path) -> dict[str, tuple[Path, torch.dtype, tuple[int, ...]]]:
    """name -> (shard path, dtype, shape) for every tensor of a model folder (headers only)."""
    out: dict[str, tuple[Path, torch.dtype, tuple[int, ...]]] = {}
    for shard in list_shards(folder):
        with LazyReader(shard) as r:
            for k in r.keys():
                if k in out:
                    raise CheckpointError(f"{folder}: tensor {k!r} is stored in two shards "
                                          f"({out[k][0].name}, {shard.name})")
                out[k] = (shard, *r.spec(k))
    return out


def iter_shards(folder: str | Path) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield (shard path, {name: tensor}) one shard at a time."""
    for shard in list_shards(folder):
        with LazyReader(shard) as r:
            yield shard, {k: r.get(k) for k in r.keys()}


def load_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder in memory (small models, tests)."""
    sd: dict[str, torch.Tensor] = {}
    for _, tensors in iter_shards(folder):
        sd.update(tensors)
    return sd


def _nbytes(spec: Spec) -> int:
    dtype, shape = spec
    n = 1
    for d in shape:
        n *= d
    return n * dtype.itemsize


def write_order(specs: dict[str, Spec]) -> list[str]:
    """The order ShardWriter writes tensors in: largest itemsize first, then name (keeps every tensor aligned)."""
    return sorted(specs, key=lambda n: (-specs[n][0].itemsize, n))


class ShardWriter:
    """Stream tensors into one safetensors file. The header (names, dtypes, shapes, offsets) is written first;
    tensors must then be written in `self.order` (`write_order`)."""

    def __init__(self, path: str | Path, specs: dict[str, Spec], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.specs = dict(specs)
        self.order = write_order(self.specs)
        header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
        off = 0
        for n in self.order:
            dtype, shape = self.specs[n]
            if dtype not in DTYPE_TO_ST:
                raise CheckpointError(f"{self.path}: cannot write tensor {n!r} of dtype {dtype}")
            size = _nbytes(self.specs[n])
            header[n] = {"dtype": DTYPE_TO_ST[dtype], "shape": list(shape), "data_offsets": [off, off + size]}
            off += size
        self.nbytes = off
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(raw)))
        self._f.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Write the next tensor: a tensor, or an iterable of row blocks (dim 0) that concatenate to it."""
        if self._next >= len(self.order) or name != self.order[self._next]:
            expected = self.order[self._next] if self._next < len(self.order) else "<none: shard complete>"
            raise CheckpointError(f"{self.path}: tensor {name!r} written out of order (expected {expected!r})")
        dtype, shape = self.specs[name]
        rows = 0
        for block in [tensor] if isinstance(tensor, torch.Tensor) else tensor:
            if block.dtype != dtype or block.dim() != len(shape) or tuple(block.shape[1:]) != shape[1:]:
                raise CheckpointError(f"{self.path}: tensor {name!r} (or a block of it) is {block.dtype} "
                                      f"{tuple(block.shape)}, planned {dtype} {shape}")
            rows += block.shape[0] if shape else 1
            if block.numel():
                flat = block.detach().cpu().contiguous().reshape(-1)
                self._f.write(memoryview(flat.view(torch.uint8).numpy()))
        if rows != (shape[0] if shape else 1):
            raise CheckpointError(f"{self.path}: tensor {name!r} got {rows} rows, planned {dtype} {shape}")
        self._next += 1

    def close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        self._f = None
        if self._next != len(self.order):
            raise CheckpointError(f"{self.path}: closed with {len(self.order) - self._next} tensor(s) unwritten")

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        elif self._f is not None:
            self._f.close()
            self._f = None


def plan_shards(specs: dict[str, Spec], max_shard_bytes: int) -> list[list[str]]:
    """Greedy split of names (in the given order) into shards of at most max_shard_bytes (a bigger tensor gets
    a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for n, spec in specs.items():
        b = _nbytes(spec)
        if shards[-1] and size + b > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += b
    return shards if shards[0] else []


def write_index(out_dir: str | Path, weight_map: dict[str, str], total_size: int) -> None:
    """HF index json: {"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}."""
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (Path(out_dir) / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def save_sharded(state_dict: dict[str, torch.Tensor], out_dir: str | Path, max_shard_bytes: int = 5 * 2**30,
                 metadata: dict[str, str] | None = None) -> list[str]:
    """Write a state dict into out_dir (which must exist) as HF-named safetensors shards, streaming one tensor at a
    time into one shard at a time; an index json is written when there is more than one shard. Returns the files."""
    specs = {n: (t.dtype, tuple(t.shape)) for n, t in state_dict.items()}
    groups = plan_shards(specs, max_shard_bytes)
    files, weight_map, total = [], {}, 0
    for i, names in enumerate(groups):
        fname = shard_name(i, len(groups))
        with ShardWriter(Path(out_dir) / fname, {n: specs[n] for n in names}, metadata) as w:
            for n in w.order:
                w.write(n, state_dict[n])
            total += w.nbytes
        files.append(fname)
        weight_map.update({n: fname for n in names})
    if len(groups) > 1:
        write_index(out_dir, weight_map, total)
    return files


def copy_aux_files(base_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Copy config, generation config, tokenizer files and chat template (never *.py) from base_dir."""
    copied = []
    for name in AUX_FILES:
        src = Path(base_dir) / name
        if src.is_file():
            shutil.copy2(src, Path(out_dir) / name)
            copied.append(name)
    return copied


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out_dir: str | Path) -> list[Path]:
    """Remove the debris of killed `atomic_dir` writers of `out_dir`: `<out>.tmp-<pid>` folders whose process is gone
    (a live process's, e.g. a concurrent writer's, are left alone). A dead writer's `<out>.old-<pid>` (killed between
    its two renames) is put back as `<out>` when `<out>` is missing, else removed. Returns what it removed/restored."""
    out = Path(out_dir)
    if not out.parent.is_dir():
        return []
    done = []
    for p in sorted(out.parent.iterdir()):
        m = re.fullmatch(re.escape(out.name) + r"\.(tmp|old)-(\d+)", p.name)
        if not m or int(m.group(2)) == os.getpid() or pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not os.path.lexists(out):
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()
        done.append(p)
    return done


@contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh `<out>.tmp-<pid>` folder; on success rename it to out_dir, on any error delete it.

    An existing out_dir is refused unless overwrite=True; then it is renamed aside, the new folder renamed in and
    the old one deleted (two renames: readers see the old or the new folder, never a half-written one). On start,
    the debris of writers that were killed (their pid is gone) is cleaned first (`clean_stale`)."""
    out = Path(out_dir)
    clean_stale(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    crash.point("publish")
    if out.exists():
        if not overwrite:  # appeared while we were writing
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"{out}: appeared while writing (pass overwrite=True to replace it)")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: str | Path) -> str:
    """sha256 over (file name, file sha256) of a model folder's weight files, index and config.json, sorted."""
    folder = Path(path)
    files = sorted({*list_shards(folder), *[folder / n for n in (INDEX_NAME, "config.json") if (folder / n).is_file()]})
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
