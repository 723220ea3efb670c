"""What an export builds: engines x precisions, calibration, evaluation. Validated before any work starts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from resnet_serve.errors import UsageError
from resnet_serve.export.quantize import METHODS
from resnet_serve.resnets.contract import ContractFlags
from resnet_serve.resnets.models import OPTION_A_PADDINGS
from resnet_serve.resnets.spec import CIFAR10, IMAGENET

# what each engine can be built as ("tensorrt": TensorRT-ready ONNX, and plans where TensorRT imports)
ENGINE_PRECISIONS = {
    "gpu": ("fp16", "int8"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "fp16", "int8"),
    "tensorrt": ("fp16", "int8"),
}
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PRESETS = {"cifar10": CIFAR10, "imagenet": IMAGENET}  # --preset: a dataset's contract as the default
OPTION_A_MARGIN = 1.0  # points of top-1 by which the other option-A variant may beat the declared one


class ExportConfigError(UsageError):
    """Bad export options; the message says which and what is allowed."""


@dataclass
class ExportConfig:
    checkpoint: Path | None
    out: Path
    arch: str | None = None
    random_weights: bool = False
    onnx: Path | None = None  # a classifier exported to ONNX elsewhere, instead of a checkpoint
    name: str | None = None  # the served model's name (default: the architecture, or the ONNX file's stem)
    contract: ContractFlags = ContractFlags()
    preset: str | None = None  # a dataset whose contract is the default (cifar10 | imagenet)
    option_a: str | None = None  # after | split (required for foreign checkpoints of option-A nets)
    weights_key: str | None = None  # where a training checkpoint keeps the weights, when it has several
    engines: tuple[str, ...] = ("onnxruntime", "openvino")
    precisions: tuple[str, ...] = ("fp32", "int8")
    calibration_data: Path | None = None
    calibration_size: int = 512
    calibration_method: str = "minmax"  # or "auto": pick by agreement with FP32 on held-out training images
    openvino_preset: str = "mixed"
    tensorrt_ready: bool = True
    eval_data: Path | None = None
    eval_limit: int | None = None
    evaluate: bool = True
    threads: int | None = None
    device: str = "cpu"
    max_batch: int = 256  # TensorRT optimization profile: batch 1..max_batch, tuned for max_batch // 4
    labels: Path | None = None  # ImageNet class index JSON
    seed: int = 0
    gpu_tune: str = "full"  # the GPU engine's autotuning: "full" (every candidate tile) or "quick" (four)

    @property
    def opt_batch(self) -> int:
        return max(1, self.max_batch // 4)

    def validate(self) -> None:
        if not self.engines or not self.precisions:
            raise ExportConfigError("--engines and --precisions each need at least one name")
        unknown = [e for e in self.engines if e not in ENGINE_PRECISIONS]
        if unknown:
            raise ExportConfigError(
                f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(sorted(ENGINE_PRECISIONS))}"
            )
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ExportConfigError(f"unknown precision(s) {', '.join(bad)}; choose from {', '.join(PRECISIONS)}")
        if self.calibration_method not in (*METHODS, "auto"):
            raise ExportConfigError(
                f"unknown calibration method {self.calibration_method!r}; choose from {', '.join(METHODS)} or auto"
            )
        if self.calibration_size < 1:
            raise ExportConfigError(f"--calibration-size must be at least 1, got {self.calibration_size}")
        sources = [bool(self.checkpoint), bool(self.onnx), bool(self.random_weights)]
        if sum(sources) != 1 or (self.random_weights and not self.arch):
            raise ExportConfigError(
                "pass one model: --checkpoint PATH, --onnx PATH, or --arch NAME --random-weights for an untrained one"
            )
        if self.onnx and (self.arch or self.option_a or self.weights_key):
            raise ExportConfigError(
                "--arch, --option-a and --weights-key describe checkpoints; an --onnx model has none"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise ExportConfigError(f"unknown --preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.option_a is not None and self.option_a not in OPTION_A_PADDINGS:
            choices = ", ".join(OPTION_A_PADDINGS)
            raise ExportConfigError(f"--option-a must be one of {choices}, got {self.option_a!r}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ExportConfigError(
                f"--name {self.name!r}: use letters, digits, '_', '-' and '.' (a Triton model name)"
            )
        if self.device not in ("cpu", "cuda"):
            raise ExportConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.gpu_tune not in ("full", "quick"):
            raise ExportConfigError(f"gpu_tune must be full or quick, got {self.gpu_tune!r}")
        if self.max_batch < 1:
            raise ExportConfigError(f"--max-batch must be at least 1, got {self.max_batch}")
