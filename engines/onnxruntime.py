"""ONNX Runtime backend: CPU, or CUDA / TensorRT execution providers with onnxruntime-gpu."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnet_serve.engines.base import Engine, EngineError, EngineInfo, engine_threads, require

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def onnx_precision(model_path: str | Path) -> str:
    """int8 if the graph has QuantizeLinear, fp16 if its weights are float16, else fp32."""
    onnx = require("onnx", "pip install onnx")
    model = onnx.load(str(model_path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "QLinearConv" in ops:
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


class OnnxRuntimeEngine(Engine):
    def __init__(
        self,
        model_path: str | Path,
        *,
        precision: str | None = None,
        threads: int | None = None,
        device: str = "cpu",
        optimization: str = "all",
        optimized_model_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        meta: dict | None = None,
    ) -> None:
        ort = require("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(f"ONNX model {self.model_path} not found; run `python -m export` first")
        if optimization not in OPTIMIZATION_LEVELS:
            raise EngineError(f"unknown optimization level {optimization!r}; use {', '.join(OPTIMIZATION_LEVELS)}")
        precision = precision or onnx_precision(self.model_path)
        levels = dict(
            zip(
                OPTIMIZATION_LEVELS,
                (
                    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                ),
                strict=True,
            )
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        threads = engine_threads(threads)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: ORT warns about every serialised NCHWc graph
        if optimized_model_path is not None:
            options.optimized_model_filepath = str(optimized_model_path)
        providers = self._providers(ort, device, precision, cache_dir)
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types; the reason is kept
            raise EngineError(f"ONNX Runtime could not load {self.model_path}: {exc}") from exc
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        dtype = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}[inp.type]
        meta = meta or {}
        self._info = EngineInfo(
            engine="onnxruntime",
            precision=precision,
            device=device,
            threads=threads,
            input_name=inp.name,
            input_shape=[d if isinstance(d, int) else -1 for d in inp.shape],
            input_dtype=dtype,
            output_name=out.name,
            num_classes=int(out.shape[-1]),
            arch=meta.get("arch"),
            dataset=meta.get("dataset"),
            path=str(self.model_path),
            details={
                "providers": self.session.get_providers(),
                "graph_optimization": optimization,
                "onnxruntime": ort.__version__,
            },
        )

    @staticmethod
    def _providers(ort, device: str, precision: str, cache_dir) -> list:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device != "cuda":
            raise EngineError(f"unknown device {device!r} for onnxruntime; use cpu or cuda")
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise EngineError(
                f"--device cuda needs onnxruntime-gpu (installed providers: {', '.join(available)}); "
                "pip install 'resnet-serve[gpu]' on a CUDA host"
            )
        providers = []
        if "TensorrtExecutionProvider" in available:
            cache = str(Path(cache_dir or ".cache/ort-trt"))
            providers.append(
                (
                    "TensorrtExecutionProvider",
                    {
                        "trt_fp16_enable": precision in ("fp16", "int8"),
                        "trt_int8_enable": precision == "int8",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": cache,
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": cache,
                    },
                )
            )
        return providers + ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._info.output_name], {self._info.input_name: batch})[0]
