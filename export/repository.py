"""Write Triton models for exported engines into a model repository.

For an export of ``resnet20`` with engines onnxruntime-fp32 and onnxruntime-int8 this writes::

    preprocess_cifar10/                      image bytes -> model input (Python backend)
    resnet20_onnxruntime_fp32_classifier/    model input -> logits with labels (Python backend + engine)
    resnet20_onnxruntime_fp32/               ensemble: image bytes -> preprocess -> classifier -> logits
    resnet20_onnxruntime_int8_classifier/, resnet20_onnxruntime_int8/
    resnet20/                                ensemble for the default engine: the model users call
    index.json                               what was written, for the benchmarks (server/index.py)

Configs are ``model_config_pb2.ModelConfig`` messages written in protobuf's text format. Every model
has a version directory ``1/``, dynamic batching, instance groups, warmup with a real sample image
and, in its parameters, the model contract (dataset, sizes, mean/std) that the preprocess model, the
classifier and the client read. ``Profile`` holds the batching and instance settings; ``CPU_PROFILE``
is set from measurements on a 2-core machine (see README, "Serving"), ``GPU_PROFILE`` uses KIND_GPU.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from resnet_serve.engines import read_manifest, write_manifest
from resnet_serve.export.summary import LABELS_FILE, ExportSummary
from resnet_serve.resnets.spec import (
    IMAGE_BYTES_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    DatasetSpec,
    normalize,
    preprocess_pixels,
)
from resnet_serve.server import index
from resnet_serve.server.models import model_file

log = logging.getLogger(__name__)

# Default engine preference for the plain ``<arch>`` ensemble: the fastest engine that keeps accuracy.
DEFAULT_ORDER = (
    "gpu-int8",
    "tensorrt-int8",
    "tensorrt-fp16",
    "openvino-int8",
    "onnxruntime-int8",
    "openvino-fp32",
    "onnxruntime-fp32",
)


@dataclass(frozen=True)
class Profile:
    name: str
    instance_kind: str  # KIND_CPU | KIND_GPU
    classifier_instances: int
    classifier_threads: int | None  # engine threads per classifier instance (None: all cores)
    preprocess_instances: int
    input_dtype: str  # TYPE_FP32 (normalised CHW) or TYPE_UINT8 (HWC pixels, normalised in the classifier)
    # per input size: "small" (CIFAR-sized, up to SMALL_INPUT px) and "large" (ImageNet-sized) inputs
    max_batch_size: dict[str, int] = field(default_factory=dict)
    preferred_batch_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_queue_delay_us: int = 1000
    device: str = "cpu"

    def max_batch(self, spec: DatasetSpec) -> int:
        return self.max_batch_size[size_class(spec)]

    def preferred(self, spec: DatasetSpec) -> tuple[int, ...]:
        return self.preferred_batch_sizes[size_class(spec)]


SMALL_INPUT = 64


def size_class(spec: DatasetSpec) -> str:
    """Batching settings follow the input size: a 32 px image is ~50x cheaper than a 224 px one."""
    return "small" if spec.image_size <= SMALL_INPUT else "large"


# Measured on the 2-core CPU machine (resnet-serve sweep; README "Serving"): one classifier
# instance using both cores beats two single-thread instances; no batching window (queue delay 0 us) wins
# at every concurrency because requests queue up anyway while an instance is busy; uint8 HWC pixels
# between preprocess and classifier move a quarter of the bytes of float32 and serve 4-9% more img/s.
CPU_PROFILE = Profile(
    name="cpu",
    instance_kind="KIND_CPU",
    classifier_instances=1,
    classifier_threads=2,
    preprocess_instances=1,
    input_dtype="TYPE_UINT8",
    max_batch_size={"small": 256, "large": 32},
    preferred_batch_sizes={"small": (16, 64), "large": (8, 16)},
    max_queue_delay_us=0,
)

# GPU hosts: TensorRT plans take float32 NCHW, and a short window lets the GPU see larger batches.
GPU_PROFILE = replace(
    CPU_PROFILE,
    name="gpu",
    instance_kind="KIND_GPU",
    classifier_threads=None,
    preprocess_instances=4,
    input_dtype="TYPE_FP32",
    max_batch_size={"small": 1024, "large": 256},
    preferred_batch_sizes={"small": (256, 1024), "large": (64, 256)},
    max_queue_delay_us=1000,
    device="cuda",
)

PROFILES = {"cpu": CPU_PROFILE, "gpu": GPU_PROFILE}
CUDA_ENGINES = ("gpu",)  # engines that need a GPU (ONNX Runtime runs on either, by profile)


# ---- configs as model_config_pb2 messages ------------------------------------------------------------


def input_layout(spec: DatasetSpec, dtype: str) -> tuple[int, int, int]:
    side = spec.image_size
    return (side, side, 3) if dtype == "TYPE_UINT8" else (3, side, side)


def _base(name: str, max_batch_size: int, parameters: dict[str, str], **kwargs) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size, **kwargs)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def _input(name: str, dtype: str, dims) -> mc.ModelInput:
    return mc.ModelInput(name=name, data_type=mc.DataType.Value(dtype), dims=list(dims))


def _logits(num_classes: int) -> mc.ModelOutput:
    return mc.ModelOutput(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[num_classes], label_filename=LABELS_FILE)


def _batching(profile: Profile, spec: DatasetSpec) -> mc.ModelDynamicBatching:
    return mc.ModelDynamicBatching(
        preferred_batch_size=list(profile.preferred(spec)),
        max_queue_delay_microseconds=profile.max_queue_delay_us,
    )


def _instances(count: int, kind: str, **kwargs) -> list[mc.ModelInstanceGroup]:
    return [mc.ModelInstanceGroup(count=count, kind=mc.ModelInstanceGroup.Kind.Value(kind), **kwargs)]


def _warmup(name: str, batch_size: int, input_name: str, dtype: str, dims) -> mc.ModelWarmup:
    """Warmup requests read the model's ``warmup/sample`` file (a real image, preprocessed as this input takes it)."""
    sample = mc.ModelWarmup.Input(data_type=mc.DataType.Value(dtype), dims=list(dims), input_data_file="sample")
    return mc.ModelWarmup(name=name, batch_size=batch_size, inputs={input_name: sample})


def classifier_config(name: str, spec: DatasetSpec, num_classes: int, profile: Profile) -> mc.ModelConfig:
    dims = input_layout(spec, profile.input_dtype)
    parameters = {
        "engine_dir": "engine",
        **({"threads": str(profile.classifier_threads)} if profile.classifier_threads else {}),
        # GPU instances take inputs where Triton has them (DLPack), not copied to the CPU first
        **({"FORCE_CPU_ONLY_INPUT_TENSORS": "no"} if profile.device == "cuda" else {}),
        **spec.as_parameters(),
    }
    largest = max(profile.preferred(spec))
    return _base(
        name,
        profile.max_batch(spec),
        parameters,
        backend="python",
        input=[_input(INPUT_NAME, profile.input_dtype, dims)],
        output=[_logits(num_classes)],
        instance_group=_instances(profile.classifier_instances, profile.instance_kind),
        dynamic_batching=_batching(profile, spec),
        model_warmup=[
            _warmup(f"sample_batch_{bs}", bs, INPUT_NAME, profile.input_dtype, dims) for bs in sorted({1, largest})
        ],
    )


def tensorrt_config(name: str, spec: DatasetSpec, num_classes: int, profile: Profile, max_batch: int) -> mc.ModelConfig:
    """A ``tensorrt_plan`` classifier; the plan (``1/model.plan``) comes from the trt-build service."""
    return _base(
        name,
        max_batch,
        {},
        platform="tensorrt_plan",
        input=[_input(INPUT_NAME, "TYPE_FP32", spec.input_shape)],
        output=[_logits(num_classes)],
        # the plan's optimization profile 0 covers batch 1..max_batch (see tensorrt/recipe.json)
        instance_group=_instances(1, "KIND_GPU", profile=["0"]),
        dynamic_batching=_batching(profile, spec),
    )


def preprocess_config(name: str, spec: DatasetSpec, profile: Profile) -> mc.ModelConfig:
    return _base(
        name,
        profile.max_batch(spec),
        spec.as_parameters(),
        backend="python",
        input=[_input(IMAGE_BYTES_NAME, "TYPE_STRING", [1])],
        output=[
            mc.ModelOutput(
                name=INPUT_NAME,
                data_type=mc.DataType.Value(profile.input_dtype),
                dims=list(input_layout(spec, profile.input_dtype)),
            )
        ],
        # image decoding is CPU work whatever the profile
        instance_group=_instances(profile.preprocess_instances, "KIND_CPU"),
        dynamic_batching=_batching(profile, spec),
        model_warmup=[_warmup("sample_image", 1, IMAGE_BYTES_NAME, "TYPE_STRING", [1])],
    )


def ensemble_config(
    name: str, preprocess: str, classifier: str, spec: DatasetSpec, num_classes: int, profile: Profile
) -> mc.ModelConfig:
    config = _base(
        name,
        profile.max_batch(spec),
        spec.as_parameters(),
        platform="ensemble",
        input=[_input(IMAGE_BYTES_NAME, "TYPE_STRING", [1])],
        output=[_logits(num_classes)],
    )
    steps = config.ensemble_scheduling.step
    steps.add(
        model_name=preprocess,
        model_version=-1,
        input_map={IMAGE_BYTES_NAME: IMAGE_BYTES_NAME},
        output_map={INPUT_NAME: "preprocessed"},
    )
    steps.add(
        model_name=classifier,
        model_version=-1,
        input_map={INPUT_NAME: "preprocessed"},
        output_map={OUTPUT_NAME: OUTPUT_NAME},
    )
    return config


# ---- writing ---------------------------------------------------------------------------------------


def _write_model(
    repository: Path, config: mc.ModelConfig, *, kind: str | None = None, labels: str | None = None
) -> Path:
    directory = repository / config.name
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "1").mkdir(parents=True)
    (directory / "config.pbtxt").write_text(text_format.MessageToString(config))
    if kind:
        (directory / "1" / "model.py").write_text(model_file(kind))
    if labels is not None:
        (directory / LABELS_FILE).write_text(labels)
    return directory


def _length_prefixed(data: bytes) -> bytes:
    """Triton's raw format for one TYPE_STRING element: 4-byte little-endian length, then the bytes."""
    return struct.pack("<I", len(data)) + data


def write_repository(
    repository: str | Path,
    export_dir: str | Path,
    *,
    profile: str | Profile = "cpu",
    sample_image: Path | None = None,
    default_alias: bool = True,
    engines: tuple[str, ...] | None = None,
) -> index.ServedNetwork:
    """Add Triton models for the engines of ``export_dir`` (a ``python -m export`` output; ``engines``:
    only these, e.g. ("onnxruntime-int8",)) to ``repository`` and record them in its index."""
    profile = PROFILES[profile] if isinstance(profile, str) else profile
    repository = Path(repository)
    summary = ExportSummary.load(export_dir)
    arch, spec = summary.model.name, summary.model.spec
    labels = (Path(export_dir) / LABELS_FILE).read_text()
    num_classes = len(labels.splitlines())
    sample = sample_image.read_bytes() if sample_image else _synthetic_jpeg(spec)
    pixels = preprocess_pixels(sample, spec, source=str(sample_image or "synthetic sample"))
    tensor = pixels if profile.input_dtype == "TYPE_UINT8" else normalize(pixels, spec)
    repository.mkdir(parents=True, exist_ok=True)

    preprocess = index.preprocess_model(spec)
    directory = _write_model(repository, preprocess_config(preprocess, spec, profile), kind="preprocess")
    (directory / "warmup").mkdir()
    (directory / "warmup" / "sample").write_bytes(_length_prefixed(sample))
    network = index.ServedNetwork(arch=arch, dataset=spec.name, preprocess=preprocess, profile=profile.name)

    def add_engine(engine: str, precision: str, classifier_cfg: mc.ModelConfig) -> Path:
        served = index.ServedEngine(
            engine,
            precision,
            index.ensemble_model(arch, engine, precision),
            index.classifier_model(arch, engine, precision),
        )
        classifier_cfg.name = served.classifier
        directory = _write_model(
            repository, classifier_cfg, kind="classifier" if classifier_cfg.backend else None, labels=labels
        )
        _write_model(
            repository,
            ensemble_config(served.ensemble, preprocess, served.classifier, spec, num_classes, profile),
            labels=labels,
        )
        network.engines.append(served)
        return directory

    for artifact in summary.artifacts:
        if engines is not None and artifact.name not in engines:
            continue
        # ONNX Runtime serves in both profiles; CPU-only engines only on CPU, GPU engines only on GPU
        if artifact.engine != "onnxruntime" and (artifact.engine in CUDA_ENGINES) != (profile.device == "cuda"):
            log.info("%s profile: skipping %s", profile.name, artifact.name)
            continue
        directory = add_engine(artifact.engine, artifact.precision, classifier_config("", spec, num_classes, profile))
        engine_dir = directory / "1" / "engine"
        shutil.copytree(Path(artifact.path), engine_dir)
        if profile.device == "cuda":
            write_manifest(engine_dir, {**read_manifest(engine_dir), "device": "cuda"})
        (directory / "warmup").mkdir()
        (directory / "warmup" / "sample").write_bytes(np.ascontiguousarray(tensor).tobytes())
    if profile.device == "cuda" and summary.tensorrt:
        recipe = json.loads(Path(summary.tensorrt["recipe"]).read_text())
        max_batch = int(recipe["profile"]["max"].split(":")[1].split("x")[0])
        for precision in recipe["artifacts"]:
            add_engine("tensorrt", precision, tensorrt_config("", spec, num_classes, profile, max_batch))
    if default_alias and network.engines:
        keys = [e.key for e in network.engines]
        network.default = next((key for key in DEFAULT_ORDER if key in keys), keys[0])
        network.default_model = arch
        default = network.engine(network.default)
        _write_model(
            repository, ensemble_config(arch, preprocess, default.classifier, spec, num_classes, profile), labels=labels
        )
    repo_index = index.RepositoryIndex.load(repository)
    repo_index.networks[arch] = network
    repo_index.save(repository)
    log.info("wrote %d engines of %s into %s (default: %s)", len(network.engines), arch, repository, network.default)
    return network


def _synthetic_jpeg(spec: DatasetSpec) -> bytes:
    """A smooth colour gradient as JPEG, for warmup when no real sample image is given."""
    from PIL import Image

    side = spec.resize_size + 16
    y, x = np.mgrid[0:side, 0:side]
    rgb = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
