"""Reading safetensors-only HF model folders (and hashing them).

* `list_shards` finds a folder's weight files (`model.safetensors`, or `model.safetensors.index.json` + its
  shards) and refuses pickle-only folders (`*.bin`, `*.pt`, ...) with a `CheckpointError` naming the folder.
* `LazyReader` reads one tensor at a time from one safetensors file (`safe_open`, `pread` backend: each tensor
  is read into its own memory, nothing of the file stays mapped, so resident memory is one tensor, not the file),
  or a block of a tensor's rows with one pread into a caller's reusable buffer (`read_rows`).
* `read_specs`, `iter_shards`, `load_state_dict`: a folder's tensor specs, tensors shard by shard, or all of them.
* `sha256_dir` hashes a folder's weight files + config.json (for manifests).

Writing checkpoints is `shard_writer.py`; atomic output folders are `atomic.py`.

Nothing here executes code from a checkpoint folder (no pickle, no trust_remote_code).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

DTYPE_TO_ST = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}
ST_TO_DTYPE = {v: k for k, v in DTYPE_TO_ST.items()}

Spec = tuple[torch.dtype, tuple[int, ...]]


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
