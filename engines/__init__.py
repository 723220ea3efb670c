"""The engine runtime layer: one interface for every backend, each imported only when asked.

    from resnet_serve.engines import load_engine
    engine = load_engine("build/resnet20/openvino-int8", threads=4)
    engine.infer(batch)   # float32 logits [N, classes] for a preprocessed batch
    engine.info()         # what really runs: engine, precision, device, threads, input/output

One module per backend: ``onnxruntime``, ``openvino``, ``pytorch`` (the reference, and the CUDA
peers), ``gpu`` (the project's Triton-lang CUDA engine). ``export`` builds engines and checks them
through this layer; ``server`` and ``benchmarks`` load them through it. This package imports numpy only.
"""

from resnet_serve.engines.base import (
    MANIFEST,
    Engine,
    EngineError,
    EngineInfo,
    EngineUnavailable,
    default_threads,
    read_manifest,
    write_manifest,
)
from resnet_serve.engines.registry import BACKENDS, backend, load_engine

__all__ = [
    "BACKENDS",
    "MANIFEST",
    "Engine",
    "EngineError",
    "EngineInfo",
    "EngineUnavailable",
    "backend",
    "default_threads",
    "load_engine",
    "read_manifest",
    "write_manifest",
]
