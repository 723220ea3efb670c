"""The model repository's index: which models exist for which network, and the one place their names
are made. The repository writer (``resnet_serve.export.repository``) writes ``index.json`` beside the
models; the benchmarks and tests read it instead of parsing model names back apart. Triton ignores
files at the top of a repository, so the index travels with the models it describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.spec import DATASETS, DatasetSpec

INDEX_FILE = "index.json"
FORMAT = "resnet-serve-repository-index/1"


class RepositoryIndexError(ResnetServeError):
    """A repository without an index, or an index that does not list what was asked for."""


def engine_key(engine: str, precision: str) -> str:
    """How an engine build is named everywhere ("openvino-int8")."""
    return f"{engine}-{precision}"


def preprocess_model(spec: DatasetSpec) -> str:
    """``preprocess_<dataset>`` for a registered dataset's own contract; models whose contract differs
    (other classes, sizes, mean/std) get their own preprocess model, named by a hash of the contract."""
    if DATASETS.get(spec.name) == spec:
        return f"preprocess_{spec.name}"
    digest = hashlib.sha256(json.dumps(spec.as_parameters(), sort_keys=True).encode()).hexdigest()[:8]
    return f"preprocess_{re.sub(r'[^A-Za-z0-9_]+', '_', spec.name)}_{digest}"


def ensemble_model(arch: str, engine: str, precision: str) -> str:
    return f"{arch}_{engine}_{precision}"


def classifier_model(arch: str, engine: str, precision: str) -> str:
    return classifier_of(ensemble_model(arch, engine, precision))


def classifier_of(ensemble: str) -> str:
    """The classifier model behind an ensemble of that name."""
    return f"{ensemble}_classifier"


@dataclass
class ServedEngine:
    """One engine build served for a network: its ensemble (image bytes in) and its classifier (tensors in)."""

    engine: str
    precision: str
    ensemble: str
    classifier: str

    @property
    def key(self) -> str:
        return engine_key(self.engine, self.precision)


@dataclass
class ServedNetwork:
    arch: str
    dataset: str
    preprocess: str
    engines: list[ServedEngine] = field(default_factory=list)
    default: str | None = None  # the engine key behind the plain <arch> ensemble
    default_model: str | None = None  # that model's name (= arch)
    profile: str = "cpu"
    # how the default model serves: "ensemble" (preprocess -> classifier), "direct" (one model, BYTES in) or
    # "direct-raw" (one model, one encoded image per request as UINT8 bytes)
    default_path: str = "ensemble"
    tuning: dict | None = None  # the tune step's choice and its evidence (export/tune.py), if tuned

    def engine(self, key: str) -> ServedEngine:
        for served in self.engines:
            if served.key == key:
                return served
        raise RepositoryIndexError(
            f"{self.arch} has no served {key} engine; it has {', '.join(e.key for e in self.engines)}"
        )

    @property
    def default_engine(self) -> ServedEngine:
        if self.default is None:
            raise RepositoryIndexError(f"{self.arch} has no default engine in the repository index")
        return self.engine(self.default)


@dataclass
class RepositoryIndex:
    networks: dict[str, ServedNetwork] = field(default_factory=dict)

    def network(self, arch: str) -> ServedNetwork:
        if arch not in self.networks:
            served = ", ".join(self.networks) or "none"
            raise RepositoryIndexError(f"the model repository serves no {arch} (it serves: {served}); export it first")
        return self.networks[arch]

    def save(self, repository: Path) -> Path:
        path = Path(repository) / INDEX_FILE
        data = {"format": FORMAT, "networks": {arch: asdict(n) for arch, n in self.networks.items()}}
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # a file: Triton reads only folders
        partial.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(partial, path)  # a run killed mid-write leaves the previous index whole, not a truncated one
        return path

    @classmethod
    def load(cls, repository: Path) -> RepositoryIndex:
        """The repository's index (an empty one where the repository has none yet)."""
        path = Path(repository) / INDEX_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            networks = {}
            for arch, raw in data["networks"].items():
                engines = [ServedEngine(**e) for e in raw.pop("engines")]
                networks[arch] = ServedNetwork(**raw, engines=engines)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RepositoryIndexError(
                f"{path} is not a {FORMAT} index ({type(exc).__name__}: {exc}); move it aside and write the "
                "repository again (python -m export.default_repository, or python -m export ... --repository)"
            ) from None
        return cls(networks)
