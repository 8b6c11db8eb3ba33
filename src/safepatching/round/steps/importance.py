"""Round step: SNIP importance of both patches."""

from __future__ import annotations

from ...config import Params
from ...layout import KINDS, RoundLayout
from ._pairs import pairs as _pairs


def importance(params: Params, layout: RoundLayout, log=print) -> dict[str, dict]:
    """SNIP importance of both patches on the patched models; returns {kind: scores manifest}."""
    from ...patching.importance import compute_importance

    pairs = _pairs(params, layout)
    imp = params.importance
    respond = None
    if imp.target == "own":
        from ...evaluation.generate import DecodingConfig, generate

        dec = DecodingConfig(imp.max_new_tokens, imp.batch_size)
        respond = lambda model, tok, questions: generate(model, tok, questions, dec)  # noqa: E731
    return {kind: compute_importance(layout.parent_model, layout.patch(kind), pairs, layout.scores(kind), imp.score,
                                     imp.n_samples, imp.batch_size, params.seed, log=log, compute=params.compute,
                                     respond=respond)
            for kind in KINDS}
