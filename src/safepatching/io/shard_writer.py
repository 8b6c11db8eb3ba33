"""Writing safetensors checkpoints for HF model folders.

* `ShardWriter` streams tensors into one safetensors file: the header is written up front from the planned
  names/dtypes/shapes, then each tensor's bytes as it is produced (whole or row block by row block), so a shard
  never has to sit in memory.
* `save_sharded` writes a state dict as HF-named shards (`model-00001-of-0000N.safetensors`) + index json.
* `plan_shards`, `shard_name`, `write_index`: the shard split, names and index json; `copy_aux_files` copies a base
  folder's config and tokenizer files (never code).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoints import DTYPE_TO_ST, INDEX_NAME, WEIGHTS_NAME, Spec

AUX_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
             "chat_template.jinja", "chat_template.json")


def shard_name(i: int, n: int) -> str:
    """HF shard naming: a single shard is `model.safetensors`, else `model-00001-of-00004.safetensors`."""
    return WEIGHTS_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


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
