"""Where every artefact of the pipeline lives (relative to the project root)."""

from pathlib import Path

WORLD = Path("data/world")
EVAL = WORLD / "eval"
INCOMING = Path("data/incoming")
BATCHES = Path("data/batches")
QUARANTINE = Path("data/quarantine")
MODELS = Path("models")
ARTIFACTS = Path("artifacts")


def model_dir(name: str) -> Path:
    """'backbone' or a round name -> its checkpoint folder."""
    return MODELS / name


def round_dir(name: str) -> Path:
    return ARTIFACTS / name
