"""The export summary (``OUT/export.json``) as a typed object: written once by the export, read once by
the repository writer and the benchmarks. numpy-free and torch-free."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.spec import DatasetSpec

SUMMARY_FILE, LABELS_FILE = "export.json", "labels.txt"


class SummaryError(ResnetServeError):
    """An export directory without a usable summary."""


def file_sha256(path: str | Path) -> str:
    """Content hash of a checkpoint, recorded by exports so stale engines can be detected."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelRecord:
    """The model an export started from, its contract, and where every fact came from."""

    name: str  # the served model's name (the architecture's, or the user's)
    arch: str | None  # None for an ONNX input
    weights: str  # "trained", "random (...)", "as exported elsewhere (ONNX)"
    source: str  # the file the user gave (hashed: engines are stale when it changes)
    source_sha256: str
    source_kind: str  # resnet-serve checkpoint | bare state_dict | training checkpoint (...) | onnx | random
    checkpoint: str | None  # a resnet-serve checkpoint the PyTorch peers load (None for an ONNX input)
    contract: dict[str, str]  # DatasetSpec.as_parameters(): dataset, classes, sizes, interpolation, mean/std
    contract_sources: dict[str, str] = field(default_factory=dict)  # contract field -> where it came from
    labels_source: str = ""
    option_a: str | None = None  # where option-A shortcuts put their zero channels (after | split)
    option_a_source: str | None = None
    import_report: dict | None = None  # how a checkpoint's weights were found and matched
    checkpoint_test_top1: float | None = None

    @property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.from_parameters(self.contract, f"export of {self.name}")

    @property
    def dataset(self) -> str:
        return self.contract["dataset"]


@dataclass
class ArtifactRecord:
    """One built engine: where it is and what really runs (``runs``: engine info, or why it does not run here)."""

    engine: str
    precision: str
    path: str
    details: dict[str, Any] = field(default_factory=dict)
    runs: dict | str | None = None

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}"

    @property
    def runnable(self) -> bool:
        return isinstance(self.runs, dict)


@dataclass
class ExportSummary:
    model: ModelRecord
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # engine x precision not built, with the reason
    fallbacks: list[dict] = field(default_factory=list)  # a step that did something other than asked, and why
    option_a_check: dict | str | None = None  # both option-A variants' accuracy, where labelled data allowed
    onnx: dict = field(default_factory=dict)
    tensorrt: dict | None = None
    accuracy: dict | str | None = None  # results per engine, or why accuracy was not measured
    parity: dict = field(default_factory=dict)
    fusion: list[dict] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step
    environment: dict = field(default_factory=dict)
    repository: dict | None = None
    out: Path = field(default=Path("."), repr=False)

    def artifact(self, name: str) -> ArtifactRecord:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise SummaryError(f"{self.out} has no {name} engine; it has {', '.join(a.name for a in self.artifacts)}")

    def labels(self) -> list[str]:
        return (self.out / LABELS_FILE).read_text().splitlines()

    def stale_reason(self) -> str | None:
        """Why these engines no longer match their checkpoint, or None if they do."""
        source = Path(self.model.source)
        if not source.is_file():
            return f"its source {source} is gone"
        if self.model.source_sha256 != file_sha256(source):
            return f"{source} changed since the engines were exported"
        return None

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("out")
        return data

    def save(self) -> Path:
        path = self.out / SUMMARY_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, export_dir: str | Path) -> ExportSummary:
        export_dir = Path(export_dir)
        path = export_dir / SUMMARY_FILE
        try:
            data = json.loads(path.read_text())
            data["model"] = ModelRecord(**data["model"])
            data["artifacts"] = [ArtifactRecord(**a) for a in data["artifacts"]]
            return cls(**data, out=export_dir)
        except FileNotFoundError:
            raise SummaryError(
                f"{export_dir} has no {SUMMARY_FILE}: export a model there with `python -m export`"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SummaryError(f"{path} is not an export summary of this version ({exc}); export again") from None


def stale_export(export_dir: Path) -> str | None:
    """Why the engines in ``export_dir`` cannot be used as they are (missing, stale), or None if they can."""
    if not (Path(export_dir) / SUMMARY_FILE).is_file():
        return "no exported engines"
    try:
        return ExportSummary.load(export_dir).stale_reason()
    except SummaryError as exc:
        return str(exc)
