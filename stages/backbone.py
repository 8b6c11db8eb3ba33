"""DVC stage `backbone`: build the organism (source: organism) or copy any HF model to models/backbone."""

import sys
from pathlib import Path

from stages._cli import log, parser, run

from safepatching.io.checkpoints import atomic_dir
from safepatching.paths import WORLD, model_dir


def materialise(source: str, out: Path) -> None:
    """Any HF causal LM (hub id or local path) -> a local safetensors folder."""
    from safepatching.io.models import load_model

    model, tok = load_model(source, trainable=False)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)


def main(argv=None) -> int:
    def go(args, params):
        out = model_dir("backbone")
        b = params.backbone
        if b.source == "organism":
            from safepatching.organism.model import build_organism

            with atomic_dir(out, overwrite=True) as tmp:
                summary = build_organism(WORLD, tmp, b, params.seed, log=log)
            log(f"backbone: {summary}")
        else:
            materialise(b.source, out)
    return run(go, parser(__doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
