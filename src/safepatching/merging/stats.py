"""What a merge kept, counted the same way by the streaming and the in-memory merge: the row blocks a tensor is
merged and counted in (`row_blocks`, about BLOCK_ELEMS entries each) and the per-patch stats summed over them
(`MergeStats`: kept entries and L2-norm share per side, tensor counts)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .masks import where0
from .method import Keep, Merged, TensorInputs

BLOCK_ELEMS = 1 << 18  # entries per row block (1 MB of float32 per input: the block's working set stays in cache)


def row_blocks(shape: tuple[int, ...]) -> list[slice | None]:
    """The row blocks (dim 0, about BLOCK_ELEMS entries, at least one row) a tensor is merged and counted in;
    [None] (the whole tensor) for a 0-d tensor."""
    if not shape:
        return [None]
    step = max(1, BLOCK_ELEMS // max(1, math.prod(shape[1:])))
    return [slice(i, min(i + step, shape[0])) for i in range(0, max(shape[0], 1), step)]


def _cut(x: Keep, rows: slice | None) -> Keep:
    return x if isinstance(x, bool) or rows is None else x[rows]



@dataclass
class SideStats:
    """How much of one patch a merge kept: entries and squared L2 norm, over the tensors the patch touches."""

    tensors: int = 0
    entries: int = 0
    kept: int = 0
    sq: float = 0.0
    sq_kept: float = 0.0

    def add(self, p: torch.Tensor, keep: Keep, first: bool = True) -> None:
        """Add one row block of a patch (first: the tensor's first block) and its keep mask."""
        sq = p.detach().float().reshape(-1).square()
        sq_sum = float(sq.sum())  # not torch.dot: BLAS sums depend on the memory alignment
        self.tensors += first
        self.entries += sq.numel()
        self.sq += sq_sum
        if keep is True:
            self.kept += sq.numel()
            self.sq_kept += sq_sum
        elif keep is not False:
            self.kept += int(torch.count_nonzero(keep))
            self.sq_kept += float(where0(keep.reshape(-1), sq).sum())

    def as_dict(self) -> dict:
        return {"tensors": self.tensors, "entries": self.entries, "kept": self.kept,
                "kept_share": self.kept / self.entries if self.entries else 0.0,
                "l2_share": math.sqrt(self.sq_kept / self.sq) if self.sq > 0 else 0.0}


@dataclass
class MergeStats:
    """Per-patch kept entries / L2-norm share, plus tensor counts, accumulated over a merge."""

    se: SideStats = field(default_factory=SideStats)
    om: SideStats = field(default_factory=SideStats)
    tensors: int = 0
    tensors_patched: int = 0

    def update(self, t: TensorInputs, m: Merged) -> None:
        """Add a whole tensor, or one row block of it (t.rows; the tensor counts at its first block). Sums run over
        the tensor's row_blocks either way, so a streaming merge and an in-memory one give the same stats."""
        first = t.rows is None or t.rows.start == 0
        self.tensors += first
        self.tensors_patched += first and (t.p_se is not None or t.p_om is not None)
        for side, p, keep in ((self.se, t.p_se, m.keep_se), (self.om, t.p_om, m.keep_om)):
            if p is None:
                continue
            for rows in row_blocks(tuple(p.shape)) if t.rows is None else [None]:
                side.add(_cut(p, rows), _cut(keep, rows), first and (rows is None or rows.start == 0))

    def as_dict(self) -> dict:
        return {"tensors": self.tensors, "tensors_patched": self.tensors_patched,
                "se": self.se.as_dict(), "om": self.om.as_dict()}
