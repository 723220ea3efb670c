"""One runtime API for every engine: ``load_engine(path) -> Engine``, ``engine.infer(batch)``, ``engine.info()``.

The server's classifier models and the benchmarks use only this module, so every engine is run the
same way. An exported engine is a directory holding ``engine.json`` (written by ``python -m export``)
and its model file; a bare ``.onnx``, OpenVINO ``.xml`` or resnet-serve ``.pt`` checkpoint loads too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MANIFEST = "engine.json"
ENGINES = ("onnxruntime", "openvino", "pytorch", "gpu")


class EngineError(RuntimeError):
    """An engine that cannot be loaded or run as asked; the message says what to do."""


@dataclass
class EngineInfo:
    engine: str  # onnxruntime | openvino | pytorch | ...
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
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Engine:
    """Base class: subclasses set ``self._info`` and implement ``_run``."""

    _info: EngineInfo

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

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# ---- ONNX Runtime ---------------------------------------------------------------------------------


def onnx_precision(model_path: str | Path) -> str:
    """int8 if the graph has QuantizeLinear, fp16 if its weights are float16, else fp32."""
    import onnx

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
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from exc
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(f"ONNX model {self.model_path} not found; run `python -m export` first")
        precision = precision or onnx_precision(self.model_path)
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        threads = threads or default_threads()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: ORT warns about every serialised NCHWc graph
        if optimized_model_path is not None:
            options.optimized_model_filepath = str(optimized_model_path)
        providers = self._providers(ort, device, precision, cache_dir)
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
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


# ---- OpenVINO -------------------------------------------------------------------------------------


class OpenVinoEngine(Engine):
    """OpenVINO on the CPU. ``precision``: fp32 or bf16 (inference hint) or int8 (an nncf-quantized IR).

    The precision reported by ``info()`` is read from the compiled model's runtime graph (the precision
    its convolutions really run in), not from the request: without an explicit f32 hint OpenVINO runs
    bf16 on CPUs that have it, and silently falls back to f32 on CPUs that do not.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        meta: dict | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise EngineError("openvino is not installed: pip install openvino") from exc
        if device != "cpu":
            raise EngineError(f"the OpenVINO engine runs on the CPU only, not {device!r}")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(f"OpenVINO model {self.model_path} not found; run `python -m export` first")
        threads = threads or default_threads()
        hint = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}.get(precision)
        if hint is None:
            raise EngineError(f"unknown OpenVINO precision {precision!r}; use fp32, bf16, fp16 or int8")
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        try:
            self.compiled = core.compile_model(core.read_model(str(self.model_path)), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with the reason
            raise EngineError(f"OpenVINO could not compile {self.model_path}: {exc}") from exc
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns
        runtime = runtime_precisions(self.compiled)
        really = (
            "int8"
            if "i8" in runtime or "u8" in runtime
            else {"bf16": "bf16", "f16": "fp16"}.get(runtime.get("dominant"), "fp32")
        )
        if really != precision:
            log.warning(
                "OpenVINO was asked for %s but runs %s on this CPU (capabilities: %s)",
                precision,
                really,
                ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
            )
        inp, out = self.compiled.inputs[0], self.compiled.outputs[0]
        meta = meta or {}
        self._info = EngineInfo(
            engine="openvino",
            precision=really,
            device="cpu",
            threads=threads,
            input_name=inp.get_any_name(),
            input_shape=[d.get_length() if d.is_static else -1 for d in inp.get_partial_shape()],
            input_dtype=inp.get_element_type().to_dtype().name,
            output_name=out.get_any_name(),
            num_classes=out.get_partial_shape()[-1].get_length(),
            arch=meta.get("arch"),
            dataset=meta.get("dataset"),
            path=str(self.model_path),
            details={
                "requested_precision": precision,
                "inference_precision_hint": hint,
                "conv_runtime_precisions": runtime,
                "openvino": ov.__version__,
            },
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.request.infer({0: batch})
            return self.request.get_output_tensor(0).data.copy()


def runtime_precisions(compiled) -> dict:
    """Counts of the runtime precisions of a compiled model's convolutions, plus the dominant one."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) == "Convolution":
            precision = str(info["runtimePrecision"].astype(str))
            counts[precision] = counts.get(precision, 0) + 1
    if counts:
        counts["dominant"] = max((k for k in counts if k != "dominant"), key=counts.get)
    return counts


# ---- PyTorch (the reference peer) -------------------------------------------------------------------


class TorchEngine(Engine):
    """PyTorch eager from a checkpoint: fp32, or bf16 autocast. The peer every engine is compared with."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        channels_last: bool = True,
        arch: str | None = None,
    ) -> None:
        import torch

        from resnet_serve.resnets.checkpoint import load_checkpoint
        from resnet_serve.resnets.models import arch_spec

        if precision not in ("fp32", "bf16", "fp16"):
            raise EngineError(f"PyTorch precision must be fp32, bf16 or fp16, got {precision!r}")
        self.torch = torch
        threads = threads or default_threads()
        if device == "cpu":
            torch.set_num_threads(threads)
        self.model, ckpt = load_checkpoint(checkpoint, arch)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(self.device).to(memory_format=self.memory_format)
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        spec = arch_spec(ckpt["arch"])
        self._info = EngineInfo(
            engine="pytorch",
            precision=precision,
            device=device,
            threads=threads if device == "cpu" else None,
            input_name="input",
            input_shape=[-1, *spec.dataset.input_shape],
            input_dtype="float32",
            output_name="logits",
            num_classes=self.model.fc.out_features,
            arch=ckpt["arch"],
            dataset=spec.dataset.name,
            path=str(checkpoint),
            details={
                "mode": "eager",
                "channels_last": channels_last,
                "autocast": precision != "fp32",
                "torch": torch.__version__,
            },
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None),
        ):
            return self.model(x).float().cpu().numpy()


# ---- loading --------------------------------------------------------------------------------------


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


def load_engine(path: str | Path, *, threads: int | None = None, device: str | None = None, **kwargs) -> Engine:
    """Load an exported engine directory (``engine.json``) or a bare .onnx / .xml / .pt file."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        engine = manifest.get("engine")
        model_file = path / manifest.get("file", "")
        meta = {"arch": manifest.get("arch"), "dataset": manifest.get("dataset")}
        device = device or manifest.get("device", "cpu")
        if engine == "onnxruntime":
            return OnnxRuntimeEngine(
                model_file, precision=manifest.get("precision"), threads=threads, device=device, meta=meta, **kwargs
            )
        if engine == "openvino":
            return OpenVinoEngine(
                model_file, precision=manifest.get("precision", "fp32"), threads=threads, device=device, meta=meta
            )
        if engine == "gpu":
            try:
                from resnet_serve.export.gpu.engine import GpuEngine
            except ImportError as exc:
                raise EngineError(f"the GPU engine needs triton and a CUDA build of torch ({exc})") from None
            return GpuEngine(path, device=device if device != "cpu" else None, meta=meta, **kwargs)
        raise EngineError(f"{path / MANIFEST} names engine {engine!r}; known engines: {', '.join(ENGINES)}")
    if not path.exists():
        raise EngineError(f"engine {path} not found; run `python -m export --checkpoint ... --out ...` first")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxRuntimeEngine(path, threads=threads, device=device or "cpu", **kwargs)
    if suffix == ".xml":
        return OpenVinoEngine(path, threads=threads, device=device or "cpu", **kwargs)
    if suffix in (".pt", ".pth"):
        return TorchEngine(path, threads=threads, device=device or "cpu", **kwargs)
    raise EngineError(
        f"cannot tell the engine of {path}: expected an exported engine directory "
        f"(with {MANIFEST}), a .onnx, an OpenVINO .xml or a .pt checkpoint"
    )
