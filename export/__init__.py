"""Checkpoint -> ONNX -> CPU engines (ONNX Runtime, OpenVINO; FP32/INT8) and TensorRT-ready artifacts.

``load_engine(path)`` is the one runtime API the server and the benchmarks use.
"""

from resnet_serve.export.runtime import Engine, EngineError, EngineInfo, load_engine

__all__ = ["Engine", "EngineError", "EngineInfo", "load_engine"]
