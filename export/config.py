"""What an export builds: engines x precisions, calibration, evaluation. Validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from resnet_serve.errors import UsageError
from resnet_serve.export.quantize import METHODS

# what each engine can be built as ("tensorrt": TensorRT-ready ONNX, and plans where TensorRT imports)
ENGINE_PRECISIONS = {
    "gpu": ("fp16", "int8"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "fp16", "int8"),
    "tensorrt": ("fp16", "int8"),
}
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class ExportConfigError(UsageError):
    """Bad export options; the message says which and what is allowed."""


@dataclass
class ExportConfig:
    checkpoint: Path | None
    out: Path
    arch: str | None = None
    random_weights: bool = False
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

    @property
    def opt_batch(self) -> int:
        return max(1, self.max_batch // 4)

    def validate(self) -> None:
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
        if self.checkpoint is None and not (self.random_weights and self.arch):
            raise ExportConfigError("pass --checkpoint PATH, or --arch NAME --random-weights for an untrained model")
        if self.device not in ("cpu", "cuda"):
            raise ExportConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.max_batch < 1:
            raise ExportConfigError(f"--max-batch must be at least 1, got {self.max_batch}")
