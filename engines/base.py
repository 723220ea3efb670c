"""The Engine interface every backend implements, and the manifest an exported engine carries.

An exported engine is a directory holding ``engine.json`` (written by ``python -m export``) and its
model file. This module imports numpy only: backends import their own packages when loaded.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.env import available_cores
from resnet_serve.resnets.metrics import predict_chunked

MANIFEST = "engine.json"


class EngineError(ResnetServeError):
    """An engine that cannot be loaded or run as asked; the message says what to do."""


class EngineUnavailable(EngineError):
    """The package a backend needs is not installed here."""


def require(package: str, install: str) -> ModuleType:
    """Import a backend's package, or raise EngineUnavailable saying how to install it.

    Only the package itself being absent is reported so; an ImportError from inside an installed
    package is a real problem and propagates unchanged.
    """
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name != package.split(".")[0]:
            raise
        raise EngineUnavailable(f"{package} is not installed: {install}") from None


@dataclass
class EngineInfo:
    engine: str  # onnxruntime | openvino | pytorch | gpu | pytorch-<mode>
    precision: str  # what really runs (fp32, int8, bf16, fp16)
    device: str
    threads: int | None
    input_name: str
    input_shape: list[int]  # -1 for the dynamic batch dimension
    input_dtype: str
    output_name: str
    num_classes: int
    arch: str | None = None
    dataset: str | None = None
    path: str | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def default_threads() -> int:
    """Engine threads when none are asked for: the cores this process may run on."""
    return available_cores()


def engine_threads(threads: int | None) -> int:
    """``threads`` as asked (a whole number >= 1), or ``default_threads()`` for None; 0 is not "all cores"."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EngineError(f"threads must be a whole number of at least 1 (or None: all cores), got {threads!r}")
    return threads


class Engine:
    """Base class: subclasses set ``self._info`` and implement ``_run``; ``from_manifest`` loads an export."""

    _info: EngineInfo

    @classmethod
    def from_manifest(cls, directory: Path, manifest: dict, *, threads: int | None, device: str, **options) -> Engine:
        """An exported engine: the model file its manifest names, at the precision it was built for."""
        meta = {"arch": manifest.get("arch"), "dataset": manifest.get("dataset")}
        return cls(
            directory / manifest["file"],
            precision=manifest.get("precision"),
            threads=threads,
            device=device,
            meta=meta,
            **options,
        )

    def info(self) -> dict:
        return self._info.as_dict()

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        info = self._info
        if not isinstance(batch, np.ndarray):
            raise EngineError(f"infer() takes a numpy array, got {type(batch).__name__}")
        expected = tuple(info.input_shape[1:])
        if batch.ndim != len(info.input_shape) or tuple(batch.shape[1:]) != expected or batch.shape[0] < 1:
            raise EngineError(
                f"{info.engine} {info.precision} expects {info.input_dtype} [N, {', '.join(map(str, expected))}], "
                f"got shape {list(batch.shape)}"
            )
        if batch.dtype != np.dtype(info.input_dtype):
            raise EngineError(f"{info.engine} {info.precision} expects dtype {info.input_dtype}, got {batch.dtype}")
        return np.ascontiguousarray(batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32 [N, num_classes]) for a preprocessed batch."""
        return self._run(self.check_batch(batch))

    def infer_all(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Logits for any number of images, run in batches of ``batch_size``."""
        return predict_chunked(self.infer, images, batch_size)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineError(f"{directory} has no {MANIFEST}; it is not an exported engine directory") from None
    except json.JSONDecodeError as exc:
        raise EngineError(f"{path} is not valid JSON ({exc}); re-run `python -m export`") from None


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
