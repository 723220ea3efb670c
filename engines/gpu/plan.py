"""The GPU engine's plan: typed ops over named NHWC tensors, saved as ``plan.json`` beside ``tensors.pt``.

A plan is made by ``resnet_serve.export.gpu_build`` and run by ``GpuEngine``. Every tensor has a
``TensorSpec`` (its per-image shape, dtype and, for int8 tensors, its quantization scale); every
convolution records, per batch class ("small", "large"), the tile configuration it runs with and
whether that configuration was measured by the autotuner or is the untuned default.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from resnet_serve.engines.base import EngineError

PLAN_FILE, TENSORS_FILE = "plan.json", "tensors.pt"
FORMAT = "resnet-serve-gpu-plan/2"
ELEMENT_BYTES = {"fp16": 2, "int8": 1, "fp32": 4}
BATCH_CLASSES = ("small", "large")  # buckets up to SMALL_BATCH_MAX images use "small"
SMALL_BATCH_MAX = 8


@dataclass(frozen=True)
class TensorSpec:
    h: int
    w: int
    c: int
    dtype: str  # fp16 | int8
    scale: float | None = None  # int8 tensors: the value of one quantization step

    @property
    def bytes_per_image(self) -> int:
        return self.h * self.w * self.c * ELEMENT_BYTES[self.dtype]


@dataclass
class Tiles:
    """The tile configuration a convolution runs with for one batch class, and where it came from."""

    config: dict[str, int]
    tuned: bool  # False: the kernel's default configuration, recorded as such (no GPU to tune on)
    ms: float | None = None  # the autotuner's best time for this configuration
    failures: dict[str, str] = field(default_factory=dict)  # candidate configuration -> why it failed


@dataclass
class InputOp:
    kind: ClassVar[str] = "input"
    dst: str
    scale: float | None = None  # int8 plans quantize the float32 input with this scale


@dataclass
class ConvOp:
    kind: ClassVar[str] = "conv"
    name: str  # the module path in the PyTorch model, e.g. layer2.0.conv1
    src: str
    dst: str
    stride: int
    pad: int
    kh: int
    kw: int
    relu: bool
    weight: str  # keys into tensors.pt
    bias: str
    residual: str | None = None
    w_scale: str | None = None  # int8: per-output-channel weight scales (a key into tensors.pt)
    in_scale: float = 1.0  # int8: scale of src
    res_scale: float = 1.0  # int8: scale of the residual input
    out_scale: float | None = None  # int8 output: its scale; None: fp16 output
    tiles: dict[str, Tiles] = field(default_factory=dict)  # batch class -> tiles


@dataclass
class MaxPoolOp:
    kind: ClassVar[str] = "maxpool"
    src: str
    dst: str
    kernel: int
    stride: int
    pad: int


@dataclass
class QuantizeOp:
    kind: ClassVar[str] = "quantize"
    src: str
    dst: str
    scale: float


@dataclass
class HeadOp:
    """Global average pool + the fully connected layer, into the float32 logits."""

    kind: ClassVar[str] = "head"
    src: str
    fc_weight: str
    fc_bias: str


Op = InputOp | ConvOp | MaxPoolOp | QuantizeOp | HeadOp
OP_TYPES: dict[str, type] = {cls.kind: cls for cls in (InputOp, ConvOp, MaxPoolOp, QuantizeOp, HeadOp)}


@dataclass
class Plan:
    precision: str  # fp16 | int8
    input_shape: tuple[int, int, int]  # C, H, W of the float32 NCHW input
    num_classes: int
    ops: list[Op]
    tensors: dict[str, TensorSpec]
    buffers: dict[str, int]  # tensor -> shared buffer id (assigned by liveness)
    buffer_bytes_per_image: list[int]
    max_batch: int = 1024
    calibration_method: str | None = None

    @property
    def convs(self) -> list[ConvOp]:
        return [op for op in self.ops if isinstance(op, ConvOp)]

    @property
    def autotuned(self) -> bool:
        return bool(self.convs) and all(t.tuned for op in self.convs for t in op.tiles.values())

    def check(self) -> None:
        """Every convolution has a finite, recorded tile configuration for every batch class."""
        for op in self.convs:
            for label in BATCH_CLASSES:
                tiles = op.tiles.get(label)
                if tiles is None or not tiles.config:
                    raise EngineError(f"plan layer {op.name} has no tile configuration for {label} batches")
                if tiles.tuned and not (tiles.ms is not None and math.isfinite(tiles.ms) and tiles.ms > 0):
                    raise EngineError(
                        f"plan layer {op.name} ({label}) is marked tuned without a valid time: {tiles.ms}"
                    )

    def to_json(self) -> dict:
        def op_json(op: Op) -> dict:
            return {"op": op.kind, **asdict(op)}

        return {
            "format": FORMAT,
            "precision": self.precision,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "max_batch": self.max_batch,
            "calibration_method": self.calibration_method,
            "autotuned": self.autotuned,
            "ops": [op_json(op) for op in self.ops],
            "tensors": {name: asdict(spec) for name, spec in self.tensors.items()},
            "buffers": self.buffers,
            "buffer_bytes_per_image": self.buffer_bytes_per_image,
        }

    @classmethod
    def from_json(cls, data: dict, source: str = PLAN_FILE) -> Plan:
        if data.get("format") != FORMAT:
            raise EngineError(
                f"{source} is not a {FORMAT} plan (format {data.get('format')!r}); rebuild the engine with "
                "`python -m export --engines gpu`"
            )
        ops: list[Op] = []
        for raw in data["ops"]:
            fields = {k: v for k, v in raw.items() if k != "op"}
            if raw["op"] == "conv":
                fields["tiles"] = {label: Tiles(**t) for label, t in fields.get("tiles", {}).items()}
            ops.append(OP_TYPES[raw["op"]](**fields))
        return cls(
            precision=data["precision"],
            input_shape=tuple(data["input_shape"]),
            num_classes=data["num_classes"],
            ops=ops,
            tensors={name: TensorSpec(**spec) for name, spec in data["tensors"].items()},
            buffers=data["buffers"],
            buffer_bytes_per_image=data["buffer_bytes_per_image"],
            max_batch=data.get("max_batch", 1024),
            calibration_method=data.get("calibration_method"),
        )

    def save(self, directory: Path) -> Path:
        self.check()
        path = Path(directory) / PLAN_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> Plan:
        path = Path(directory) / PLAN_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise EngineError(
                f"{directory} has no {PLAN_FILE}; build it with `python -m export --engines gpu`"
            ) from None
        plan = cls.from_json(data, str(path))
        plan.check()
        return plan


def batch_class(bucket_size: int) -> str:
    return "small" if bucket_size <= SMALL_BATCH_MAX else "large"
