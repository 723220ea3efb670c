"""What each suite measures: models, offline batch sizes, served loads, accuracy. Defined by keyword."""

from __future__ import annotations

from dataclasses import dataclass, field

ENGINES = ("pytorch", "onnxruntime", "openvino", "gpu")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class Suite:
    name: str
    models: tuple[str, ...]
    offline: bool = True  # engines side by side in this process (needs the exported engines)
    served: bool = True  # load against Triton: closed-loop sweeps and open-loop rates
    accuracy: bool = True  # top-1/top-5 on the full labelled test split, offline and served
    transport: bool = False  # tensors in-band vs system shared memory
    batch_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # offline, per model
    offline_duration_s: float = 1.5
    served_duration_s: float = 4.0
    concurrency: tuple[int, ...] = (1, 16)  # closed loop, gRPC, JPEG to the ensemble
    http_concurrency: tuple[int, ...] = (16,)  # closed loop, HTTP, JPEG
    tensor_concurrency: tuple[int, ...] = (16,)  # closed loop, gRPC, tensors to the classifier
    open_loop_fractions: tuple[float, ...] = (0.5,)  # open-loop rates as fractions of the closed-loop peak
    served_engines: str = "default"  # "default" (the engine behind the plain <arch> ensemble) or "all"
    pytorch_bf16: bool = True
    offline_accuracy: bool = True  # accuracy of the engines offline, and the PyTorch FP32 reference (needs torch)


SUITES = {
    "quick": Suite(
        name="quick",
        models=("resnet20",),
        batch_sizes={"resnet20": (1, 64), "resnet50": (1, 8)},
    ),
    "full": Suite(
        name="full",
        models=("resnet20", "resnet50"),
        batch_sizes={"resnet20": (1, 8, 64, 256), "resnet50": (1, 8, 32)},
        offline_duration_s=4.0,
        served_duration_s=8.0,
        concurrency=(1, 4, 16, 64),
        http_concurrency=(1, 16),
        tensor_concurrency=(16, 64),
        open_loop_fractions=(0.25, 0.5, 0.9),
        served_engines="all",
        transport=True,
    ),
    "accuracy": Suite(
        name="accuracy",
        models=("resnet20",),
        offline=False,
        concurrency=(),
        http_concurrency=(),
        tensor_concurrency=(),
        open_loop_fractions=(),
        served_engines="all",
        pytorch_bf16=False,
    ),
    # hours of traffic in minutes: benchmarks/soak.py (concurrency 32, 5% bad inputs, per-minute latency and RSS)
    "soak": Suite(
        name="soak",
        models=("resnet20",),
        offline=False,
        accuracy=False,
        offline_accuracy=False,
        concurrency=(32,),
        served_duration_s=600.0,
    ),
    # against a running server only, without torch or the exported engines (the docker-compose service)
    "served": Suite(
        name="served",
        models=("resnet20",),
        offline=False,
        offline_accuracy=False,
        served_engines="all",
    ),
}
