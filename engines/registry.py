"""Backends by name, each imported only when an engine of that kind is loaded."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from resnet_serve.engines.base import MANIFEST, Engine, EngineError, read_manifest


def _onnxruntime() -> type[Engine]:
    from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine

    return OnnxRuntimeEngine


def _openvino() -> type[Engine]:
    from resnet_serve.engines.openvino import OpenVinoEngine

    return OpenVinoEngine


def _pytorch() -> type[Engine]:
    from resnet_serve.engines.pytorch import TorchEngine

    return TorchEngine


def _gpu() -> type[Engine]:
    from resnet_serve.engines.gpu.engine import GpuEngine

    return GpuEngine


BACKENDS: dict[str, Callable[[], type[Engine]]] = {
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "pytorch": _pytorch,
    "gpu": _gpu,
}
SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".pt": "pytorch", ".pth": "pytorch"}


def backend(name: str | None) -> type[Engine]:
    """The Engine class of a backend (imports that backend's module, and nothing else)."""
    if name not in BACKENDS:
        raise EngineError(f"unknown engine {name!r}; known engines: {', '.join(BACKENDS)}")
    return BACKENDS[name]()


def _options(cls: type[Engine]) -> set[str]:
    """The options an engine class takes: its constructor's parameters."""
    return set(inspect.signature(cls.__init__).parameters)


def has_option(name: str, option: str) -> bool:
    """Whether backend ``name`` takes ``option`` (``streams``: OpenVINO's, not ONNX Runtime's)."""
    return option in _options(backend(name))


def check_options(cls: type[Engine], name: str, options: dict) -> None:
    """Options a backend does not have (``streams`` for ONNX Runtime, say) are refused by name."""
    unknown = sorted(set(options) - _options(cls))
    if unknown:
        raise EngineError(f"the {name} engine has no option {', '.join(unknown)}; remove it or use another engine")


def load_engine(path: str | Path, *, threads: int | None = None, device: str | None = None, **options) -> Engine:
    """Load an exported engine directory (``engine.json``) or a bare .onnx / .xml / .pt file."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        cls = backend(manifest.get("engine"))
        check_options(cls, manifest.get("engine"), options)
        return cls.from_manifest(
            path, manifest, threads=threads, device=device or manifest.get("device", "cpu"), **options
        )
    if not path.exists():
        raise EngineError(f"engine {path} not found; run `python -m export --checkpoint ... --out ...` first")
    name = SUFFIXES.get(path.suffix.lower())
    if name is None:
        raise EngineError(
            f"cannot tell the engine of {path}: expected an exported engine directory "
            f"(with {MANIFEST}), a .onnx, an OpenVINO .xml or a .pt checkpoint"
        )
    cls = backend(name)
    check_options(cls, name, options)
    if name == "pytorch":
        return cls.from_checkpoint(path, threads=threads, device=device or "cpu", **options)
    return cls(path, threads=threads, device=device or "cpu", **options)
