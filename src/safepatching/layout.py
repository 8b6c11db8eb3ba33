"""Where every artefact lives: the project's folders (`Project`) and one round's files (`RoundLayout`).

Nothing else in the code base spells an artefact's sub-path: stages, flows, the CLI, benches and tests all go
through these two types (relative to a project root, so a copied workspace stays self-contained).

    models/<name>/                      a round's merged checkpoint (`backbone`: the starting model)
    artifacts/<name>/redteam.json       red-team rounds: the pool, the failures found (the batch), their shares
    artifacts/<name>/validation.json    the batch's validation report (+ validation_reports/)
    artifacts/<name>/se|om/             the two patches (patch.safetensors + manifest.json)
    artifacts/<name>/scores_se|om/      SNIP importance of each patch (scores.safetensors + manifest.json)
    artifacts/<name>/select/            the validation sweep: selected.json, sweep.json, diagnosis.json, pareto.png,
                                        importance_layers.json/.png
    artifacts/<name>/metrics_<split>.json (+ _samples.json)   evaluation
    artifacts/<name>/report.png         metrics over the lineage up to this round
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKBONE = "backbone"
KINDS = ("se", "om")
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Project:
    """The project's top-level folders, under `root` (the folder holding dvc.yaml and params.yaml)."""

    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def world(self) -> Path:
        return self.root / "data" / "world"

    def eval_split(self, split: str) -> Path:
        """The organism's evaluation split folder (<kind>.jsonl files)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.world / "eval" / split

    @property
    def incoming(self) -> Path:
        return self.root / "data" / "incoming"

    @property
    def intake_journal(self) -> Path:
        """Intake's transaction journal (ops.intake): each batch's step between incoming/ and a round. Beside the
        workspace lock, out of data/incoming/ (where anyone who hands over batches can write)."""
        return self.root / ".dvc" / "tmp" / "intake-journal.json"

    @property
    def batches(self) -> Path:
        return self.root / "data" / "batches"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def lock(self) -> Path:
        return self.root / ".dvc" / "tmp" / "continual-psa.lock"

    def model(self, name: str) -> Path:
        """'backbone' or a round name -> its checkpoint folder."""
        return self.models / name

    def round(self, name: str, parent: str | None = None) -> "RoundLayout":
        return RoundLayout(self.root, name, parent)

    def backbone(self) -> "RoundLayout":
        return RoundLayout(self.root, BACKBONE, None)


@dataclass(frozen=True)
class RoundLayout:
    """Every artefact of one round (or of the backbone, name='backbone', parent=None)."""

    root: Path
    name: str
    parent: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, params, name: str, root: str | Path = ".") -> "RoundLayout":
        """The layout of round `name` of `params` (its parent from params.rounds); 'backbone' too."""
        if name == BACKBONE:
            return cls(Path(root), BACKBONE, None)
        return cls(Path(root), name, params.round(name).parent)

    @property
    def project(self) -> Project:
        return Project(self.root)

    @property
    def dir(self) -> Path:
        return self.root / "artifacts" / self.name

    @property
    def model(self) -> Path:
        return self.project.model(self.name)

    @property
    def parent_model(self) -> Path:
        if self.parent is None:
            raise ValueError(f"{self.name} has no parent model")
        return self.project.model(self.parent)

    def patch(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"patch kind must be one of {KINDS}, got {kind!r}")
        return self.dir / kind

    def scores(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"patch kind must be one of {KINDS}, got {kind!r}")
        return self.dir / f"scores_{kind}"

    @property
    def redteam(self) -> Path:
        return self.dir / "redteam.json"

    @property
    def validation(self) -> Path:
        return self.dir / "validation.json"

    @property
    def validation_reports(self) -> Path:
        return self.dir / "validation_reports"

    @property
    def select_dir(self) -> Path:
        return self.dir / "select"

    @property
    def selected(self) -> Path:
        return self.select_dir / "selected.json"

    @property
    def sweep(self) -> Path:
        return self.select_dir / "sweep.json"

    @property
    def diagnosis(self) -> Path:
        return self.select_dir / "diagnosis.json"

    @property
    def pareto(self) -> Path:
        return self.select_dir / "pareto.png"

    @property
    def importance_layers(self) -> Path:
        """Per-layer share of each patch's global top-k SNIP set (JSON; the plot is the .png beside it)."""
        return self.select_dir / "importance_layers.json"

    def metrics(self, split: str) -> Path:
        return self.dir / f"metrics_{split}.json"

    def samples(self, split: str) -> Path:
        return self.dir / f"metrics_{split}_samples.json"

    @property
    def report(self) -> Path:
        return self.dir / "report.png"
