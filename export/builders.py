"""Engine builders, one per engine, chosen from a registry: each takes the export's context and a precision
and returns the artifact it built (with the quantized candidates it made on the way), or a Skip."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from resnet_serve.engines import EngineError, load_engine, write_manifest
from resnet_serve.engines.base import require
from resnet_serve.engines.openvino import cpu_capabilities
from resnet_serve.export.calibration import Calibration, Candidate
from resnet_serve.export.config import ENGINE_PRECISIONS, ExportConfig
from resnet_serve.export.openvino_build import convert_ir, quantize_ir
from resnet_serve.export.summary import ArtifactRecord, ModelRecord
from resnet_serve.resnets.models import ResNet
from resnet_serve.resnets.spec import INPUT_NAME, OUTPUT_NAME, DatasetSpec

log = logging.getLogger(__name__)


@dataclass
class BuildContext:
    """What every builder reads: the options, the model (original and prepared), its ONNX, calibration."""

    config: ExportConfig
    record: ModelRecord
    spec: DatasetSpec
    num_classes: int
    prepared: ResNet | None  # BN folded, option A as a conv: what the ONNX and the GPU engine start from
    onnx_path: Path
    calibration: Calibration
    fallbacks: list[dict]


@dataclass
class Built:
    artifact: ArtifactRecord
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class Skip:
    engine: str
    precision: str
    reason: str

    def as_dict(self) -> dict:
        return {"engine": self.engine, "precision": self.precision, "reason": self.reason}


def register(ctx: BuildContext, engine: str, precision: str, file: str, details: dict, device: str | None = None):
    """Write the engine's manifest, load it back through the engine layer and record what really runs."""
    directory = ctx.config.out / f"{engine}-{precision}"
    manifest = {
        "engine": engine,
        "precision": precision,
        "file": file,
        "model": ctx.record.name,
        "arch": ctx.record.arch,
        "dataset": ctx.spec.name,
        "num_classes": ctx.num_classes,
        "contract": ctx.spec.as_parameters(),
        "contract_sources": ctx.record.contract_sources,
        "option_a": ctx.record.option_a,
        "device": device or ctx.config.device,
        "input": {"name": INPUT_NAME, "shape": [-1, *ctx.spec.input_shape], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [-1, ctx.num_classes], "dtype": "float32"},
        "weights": ctx.record.weights,
        "source": ctx.record.source,
        **details,
    }
    write_manifest(directory, manifest)
    artifact = ArtifactRecord(engine, precision, str(directory), details)
    try:
        info = load_engine(directory, threads=ctx.config.threads).info()
        artifact.runs = {k: info[k] for k in ("engine", "precision", "threads")}
        if info["precision"] != precision:
            ctx.fallbacks.append(
                {
                    "step": artifact.name,
                    "asked": precision,
                    "used": info["precision"],
                    "reason": f"{engine} runs {info['precision']} on this machine",
                }
            )
    except EngineError as exc:
        if engine != "gpu":
            raise
        artifact.runs = f"not run here: {exc}"  # built on a machine without CUDA
        log.warning("%s built but not loadable here: %s", artifact.name, exc)
    log.info("engine %-18s -> %s", artifact.name, directory)
    return artifact


def build_onnxruntime(ctx: BuildContext, precision: str) -> Built:
    directory = ctx.config.out / f"onnxruntime-{precision}"
    directory.mkdir(parents=True, exist_ok=True)
    if precision == "fp32":
        shutil.copyfile(ctx.onnx_path, directory / "model.onnx")
        return Built(register(ctx, "onnxruntime", precision, "model.onnx", {}))
    chosen, candidates = ctx.calibration.quantize(directory / "model.onnx", symmetric=False, label="onnxruntime-int8")
    details = {
        "calibration": {
            "images": len(ctx.calibration.images()[0]),
            "source": str(ctx.calibration.directory),
            "seed": ctx.config.seed,
            "activations": "uint8 asymmetric",
            "weights": "int8 symmetric per-channel",
            **chosen,
        }
    }
    return Built(register(ctx, "onnxruntime", precision, "model.onnx", details), candidates)


def build_openvino(ctx: BuildContext, precision: str) -> Built | Skip:
    capability = {"bf16": "BF16", "fp16": "FP16"}.get(precision)
    if capability and capability not in (caps := cpu_capabilities()):
        return Skip(
            "openvino",
            precision,
            f"this CPU has no {precision} support (OpenVINO capabilities: {', '.join(caps)}); "
            "OpenVINO would silently run f32",
        )
    directory = ctx.config.out / f"openvino-{precision}"
    details: dict = {}
    if precision == "int8":
        calibration = ctx.calibration.images()[0]
        quantize_ir(ctx.onnx_path, directory / "model.xml", calibration, preset=ctx.config.openvino_preset)
        details = {
            "calibration": {
                "images": len(calibration),
                "source": str(ctx.calibration.directory),
                "seed": ctx.config.seed,
                "tool": "nncf.quantize",
                "preset": ctx.config.openvino_preset,
            }
        }
    else:
        convert_ir(ctx.onnx_path, directory / "model.xml")
    return Built(register(ctx, "openvino", precision, "model.xml", details))


def build_gpu(ctx: BuildContext, precision: str) -> Built | Skip:
    if ctx.prepared is None:
        return Skip("gpu", precision, "the GPU engine plans a PyTorch ResNet; an ONNX input has no module to plan")
    require("triton", "pip install triton (the GPU engine's kernels are Triton-lang)")
    from resnet_serve.engines.gpu.kernels import CANDIDATE_CONFIGS, QUICK_CONFIGS
    from resnet_serve.export.gpu_build import CALIBRATION_METHODS, build_gpu_engine

    calibration = ctx.calibration.images()[0] if precision == "int8" else None
    method = ctx.config.calibration_method
    if calibration is not None and method not in CALIBRATION_METHODS:
        ctx.fallbacks.append(
            {
                "step": f"gpu-{precision} calibration",
                "asked": method,
                "used": "minmax",
                "reason": f"the GPU engine's calibration implements {', '.join(CALIBRATION_METHODS)} only",
            }
        )
        log.warning("gpu-%s: calibration method %s is not available to the GPU engine; using minmax", precision, method)
        method = "minmax"
    plan = build_gpu_engine(
        ctx.prepared,
        ctx.config.out / f"gpu-{precision}",
        precision=precision,
        input_shape=ctx.spec.input_shape,
        calibration=calibration,
        method=method,
        max_batch=ctx.config.max_batch,
        candidates=QUICK_CONFIGS if ctx.config.gpu_tune == "quick" else CANDIDATE_CONFIGS,
        tune_rep_ms=8 if ctx.config.gpu_tune == "quick" else 20,
    )
    if not plan.autotuned:
        ctx.fallbacks.append(
            {
                "step": f"gpu-{precision} autotune",
                "asked": "tile configurations tuned per layer",
                "used": "the kernel's default tiles",
                "reason": "no CUDA GPU at build time; build on the GPU host to tune",
            }
        )
    details = {"calibration": {"images": len(calibration), "method": method}} if calibration is not None else {}
    details["autotuned"] = plan.autotuned
    return Built(register(ctx, "gpu", precision, "plan.json", details, device="cuda"))


Builder = Callable[[BuildContext, str], Built | Skip]
BUILDERS: dict[str, Builder] = {"onnxruntime": build_onnxruntime, "openvino": build_openvino, "gpu": build_gpu}


def build_engines(ctx: BuildContext) -> tuple[list[ArtifactRecord], list[Candidate], list[Skip]]:
    """Every requested engine x precision this machine can build ("tensorrt" is the TensorRT-ready step)."""
    artifacts, candidates, skipped = [], [], []
    for engine in ctx.config.engines:
        if engine == "tensorrt":
            continue
        for precision in ctx.config.precisions:
            if precision not in ENGINE_PRECISIONS[engine]:
                offers = ", ".join(ENGINE_PRECISIONS[engine])
                result = Skip(engine, precision, f"{engine} has no {precision} engine here (it offers {offers})")
            else:
                result = BUILDERS[engine](ctx, precision)
            if isinstance(result, Skip):
                log.warning("skipping %s-%s: %s", engine, precision, result.reason)
                skipped.append(result)
            else:
                artifacts.append(result.artifact)
                candidates += result.candidates
    return artifacts, candidates, skipped
