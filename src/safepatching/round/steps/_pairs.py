"""The round's batch as (prompt, response) pairs."""

from __future__ import annotations

from ...config import Params
from ...layout import RoundLayout


def pairs(params: Params, layout: RoundLayout) -> list[tuple[str, str]]:
    from ...batches.loading import load_pairs

    df = load_pairs(layout.root / params.round(layout.name).batch, params.data)
    return list(zip(df["prompt"], df["response"]))
