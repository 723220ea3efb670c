"""Write Triton models for exported engines into a model repository.

For an export of ``resnet20`` with engines onnxruntime-fp32 and onnxruntime-int8 this writes::

    preprocess_cifar10/                      image bytes -> model input (Python backend)
    resnet20_onnxruntime_fp32_classifier/    model input -> logits with labels (Python backend + engine)
    resnet20_onnxruntime_fp32/               ensemble: image bytes -> preprocess -> classifier -> logits
    resnet20_onnxruntime_int8_classifier/, resnet20_onnxruntime_int8/
    resnet20/                                the model users call: an ensemble for the default engine, or a
                                             one-step model (``default_path``, chosen by benchmarks/tune.py)
    index.json                               what was written, for the benchmarks (server/index.py)

Configs are ``model_config_pb2.ModelConfig`` messages written in protobuf's text format. Every model
has a version directory ``1/``, dynamic batching, instance groups, warmup with a real sample image
and, in its parameters, the model contract (dataset, sizes, mean/std) that the preprocess model, the
classifier and the client read. ``Profile`` holds the batching and instance settings: ``host_profile()``
sizes ``CPU_PROFILE`` for this host's cores, ``GPU_PROFILE`` uses KIND_GPU, and the tune step measures
the alternatives on the host (``benchmarks/tune.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from resnet_serve.engines import default_threads, read_manifest, write_manifest
from resnet_serve.engines.registry import has_option
from resnet_serve.errors import UsageError
from resnet_serve.export.summary import LABELS_FILE, ExportSummary
from resnet_serve.resnets.spec import (
    IMAGE_BYTES_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    DatasetSpec,
    normalize,
    preprocess_pixels,
)
from resnet_serve.scratch import scratch_dir
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
    classifier_streams: int = 1  # OpenVINO: the batch cut into this many parts on threads / streams each

    def max_batch(self, spec: DatasetSpec) -> int:
        return self.max_batch_size[size_class(spec)]

    def preferred(self, spec: DatasetSpec) -> tuple[int, ...]:
        return self.preferred_batch_sizes[size_class(spec)]


SMALL_INPUT = 64


def size_class(spec: DatasetSpec) -> str:
    """Batching settings follow the input size: a 32 px image is ~50x cheaper than a 224 px one."""
    return "small" if spec.image_size <= SMALL_INPUT else "large"


# The untuned starting point (``python -m export.tune`` measures the alternatives on the host): one
# classifier instance whose engine uses every core this process may use (``host_profile``), no batching
# window (requests queue up anyway while an instance is busy), uint8 HWC pixels between preprocess and
# classifier (a quarter of the bytes of float32). ``classifier_threads`` here is a placeholder.
CPU_PROFILE = Profile(
    name="cpu",
    instance_kind="KIND_CPU",
    classifier_instances=1,
    classifier_threads=1,
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


def host_profile(name: str = "cpu") -> Profile:
    """A named profile sized for this host: CPU engines get every available core."""
    profile = PROFILES[name]
    return replace(profile, classifier_threads=default_threads()) if profile.device == "cpu" else profile


# How a network's default model serves images (ServedNetwork.default_path)
REQUEST_PATHS = ("ensemble", "direct", "direct-raw")
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


def engine_profile(profile: Profile, backend: str) -> Profile:
    """``profile`` as the models of one engine take it: the classifier's ``streams`` only where the backend has
    them (a network tuned to OpenVINO streams still serves its ONNX Runtime engines, on one stream)."""
    if profile.classifier_streams > 1 and not has_option(backend, "streams"):
        return replace(profile, classifier_streams=1)
    return profile


def engine_parameters(profile: Profile) -> dict[str, str]:
    """How a Python model loads its engine (``server/models/classifier.py``): directory, threads, streams."""
    return {
        "engine_dir": "engine",
        **({"threads": str(profile.classifier_threads)} if profile.classifier_threads else {}),
        **({"streams": str(profile.classifier_streams)} if profile.classifier_streams > 1 else {}),
    }


def classifier_config(name: str, spec: DatasetSpec, num_classes: int, profile: Profile) -> mc.ModelConfig:
    dims = input_layout(spec, profile.input_dtype)
    parameters = {
        **engine_parameters(profile),
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


def direct_config(
    name: str, spec: DatasetSpec, num_classes: int, profile: Profile, *, raw: bool, sample_bytes: int = 0
) -> mc.ModelConfig:
    """The one-step model: encoded images -> logits in one Python model (``server/models/pipeline.py``).
    ``raw``: the input is one encoded file per request as UINT8 bytes with ragged batching (no BYTES
    deserialisation; ``sample_bytes``: the warmup file's size); else BYTES [1] per image, as the ensemble
    takes it."""
    parameters = {**engine_parameters(profile), **spec.as_parameters()}
    if raw:
        image = _input(IMAGE_BYTES_NAME, "TYPE_UINT8", [-1])
        image.allow_ragged_batch = True
        warmup = _warmup("sample_image", 1, IMAGE_BYTES_NAME, "TYPE_UINT8", [sample_bytes])
    else:
        image = _input(IMAGE_BYTES_NAME, "TYPE_STRING", [1])
        warmup = _warmup("sample_image", 1, IMAGE_BYTES_NAME, "TYPE_STRING", [1])
    return _base(
        name,
        profile.max_batch(spec),
        parameters,
        backend="python",
        input=[image],
        output=[_logits(num_classes)],
        instance_group=_instances(profile.classifier_instances, "KIND_CPU"),
        dynamic_batching=_batching(profile, spec),
        model_warmup=[warmup],
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
    default_engine: str | None = None,
    default_path: str = "ensemble",
    tuning: dict | None = None,
) -> index.ServedNetwork:
    """Add Triton models for the engines of ``export_dir`` (a ``python -m export`` output; ``engines``:
    only these, e.g. ("onnxruntime-int8",)) to ``repository`` and record them in its index.

    The plain ``<arch>`` model serves ``default_engine`` (else the first of DEFAULT_ORDER exported) through
    ``default_path`` (REQUEST_PATHS); ``tuning`` (the tune step's evidence) is recorded in the index."""
    profile = host_profile(profile) if isinstance(profile, str) else profile
    if default_path not in REQUEST_PATHS:
        raise ValueError(f"default_path must be one of {', '.join(REQUEST_PATHS)}, got {default_path!r}")
    repository = Path(repository)
    repo_index = writable_repository(repository)
    model = ServedModelFiles.load(export_dir, sample_image)
    repository.mkdir(parents=True, exist_ok=True)
    with _staging(repository) as stage:
        network = _write_network(stage, model, profile, engines, default_alias, default_engine, default_path, tuning)
        if stage != repository:
            _publish(stage, repository, network)
        repo_index.networks[model.arch] = network
        repo_index.save(repository)
    log.info(
        "wrote %d engines of %s into %s (default: %s, %s)",
        len(network.engines),
        model.arch,
        repository,
        network.default,
        network.default_path,
    )
    return network


def writable_repository(repository: Path) -> index.RepositoryIndex:
    """The index of a repository about to be written, or a clear error before anything is written (or
    exported): a path that is not a folder, an index this code cannot read."""
    if repository.exists() and not repository.is_dir():
        raise UsageError(f"model repository {repository} is not a folder; pass a folder (it is made if missing)")
    return index.RepositoryIndex.load(repository)


def _write_network(
    repository: Path,
    model: ServedModelFiles,
    profile: Profile,
    engines: tuple[str, ...] | None,
    default_alias: bool,
    default_engine: str | None,
    default_path: str,
    tuning: dict | None,
) -> index.ServedNetwork:
    """Every model of ``write_repository`` written into ``repository`` (its staging folder); returns what the
    index records."""
    arch, spec = model.arch, model.spec
    preprocess = write_preprocess_model(repository, model, profile)
    network = index.ServedNetwork(
        arch=arch, dataset=spec.name, preprocess=preprocess, profile=profile.name, tuning=tuning
    )

    def add_engine(engine: str, precision: str, classifier_cfg: mc.ModelConfig) -> Path:
        served = index.ServedEngine(
            engine,
            precision,
            index.ensemble_model(arch, engine, precision),
            index.classifier_model(arch, engine, precision),
        )
        classifier_cfg.name = served.classifier
        directory = _write_model(
            repository, classifier_cfg, kind="classifier" if classifier_cfg.backend else None, labels=model.labels
        )
        _write_model(
            repository,
            ensemble_config(served.ensemble, preprocess, served.classifier, spec, model.num_classes, profile),
            labels=model.labels,
        )
        network.engines.append(served)
        return directory

    for artifact in model.summary.artifacts:
        if engines is not None and artifact.name not in engines:
            continue
        # ONNX Runtime serves in both profiles; CPU-only engines only on CPU, GPU engines only on GPU
        if artifact.engine != "onnxruntime" and (artifact.engine in CUDA_ENGINES) != (profile.device == "cuda"):
            log.info("%s profile: skipping %s", profile.name, artifact.name)
            continue
        name = index.ensemble_model(arch, artifact.engine, artifact.precision)
        write_ensemble_model(repository, name, model, artifact.name, profile, preprocess)
        network.engines.append(
            index.ServedEngine(
                artifact.engine,
                artifact.precision,
                name,
                index.classifier_model(arch, artifact.engine, artifact.precision),
            )
        )
    if profile.device == "cuda" and model.summary.tensorrt:
        recipe = json.loads(Path(model.summary.tensorrt["recipe"]).read_text())
        max_batch = int(recipe["profile"]["max"].split(":")[1].split("x")[0])
        for precision in recipe["artifacts"]:
            add_engine("tensorrt", precision, tensorrt_config("", spec, model.num_classes, profile, max_batch))
    if default_alias and network.engines:
        keys = [e.key for e in network.engines]
        if default_engine is not None and default_engine not in keys:
            raise ValueError(f"default engine {default_engine} is not among the served engines {', '.join(keys)}")
        network.default = default_engine or next((key for key in DEFAULT_ORDER if key in keys), keys[0])
        network.default_model = arch
        network.default_path = default_path
        if default_path == "ensemble":
            default = network.engine(network.default)
            config = ensemble_config(arch, preprocess, default.classifier, spec, model.num_classes, profile)
            _write_model(repository, config, labels=model.labels)
        else:
            write_direct_model(repository, arch, model, network.default, profile, raw=default_path == "direct-raw")
    return network


@contextlib.contextmanager
def _staging(repository: Path) -> Iterator[Path]:
    """Where ``write_repository`` writes its models before they move into ``repository``: a folder beside it
    (not inside: Triton tries to load every folder of a repository, hidden ones too, and refuses to start
    on one without a config), ``.<name>-staging-<pid>-...``, removed when the write ends however it ends;
    one a killed run left is removed by the next write. Where a rename cannot reach the repository from
    its parent (a mount point, or a parent this user cannot write) the models are written in place."""
    resolved = repository.resolve()
    parent = resolved.parent
    if os.access(parent, os.W_OK) and parent.stat().st_dev == resolved.stat().st_dev:
        with scratch_dir(f".{resolved.name}-staging-", root=parent) as stage:
            yield Path(stage)
    else:
        log.warning(
            "%s is a mount point or its parent is not writable: writing its models in place (a write stopped "
            "midway leaves them half-written; write again to mend them)",
            repository,
        )
        yield repository


def _publish(stage: Path, repository: Path, network: index.ServedNetwork) -> None:
    """Move each staged model folder into ``repository``, replacing the folder of that name: two renames, so
    a model there is whole, old or new, however the run ends (a stop in the microseconds between them leaves
    it absent until the next write). Steps go before the ensembles that call them, the ``<arch>``
    model last, so a run stopped midway leaves no ensemble naming a step that is not there."""
    ensembles = {engine.ensemble for engine in network.engines}
    replaced = stage / ".replaced"
    replaced.mkdir()
    staged = sorted(
        (p.name for p in stage.iterdir() if p.is_dir() and p != replaced),
        key=lambda name: (name == network.arch, name in ensembles, name),
    )
    for name in staged:
        target = repository / name
        if target.exists():
            target.rename(replaced / name)
        (stage / name).rename(target)


@dataclass
class ServedModelFiles:
    """What every model written for one export shares: its summary, labels, and the warmup sample."""

    summary: ExportSummary
    export_dir: Path
    labels: str
    sample: bytes  # an encoded image (a real one where given)
    sample_source: str

    @classmethod
    def load(cls, export_dir: str | Path, sample_image: Path | None = None) -> ServedModelFiles:
        summary = ExportSummary.load(export_dir)
        labels = (Path(export_dir) / LABELS_FILE).read_text()
        sample = sample_image.read_bytes() if sample_image else _synthetic_jpeg(summary.model.spec)
        return cls(summary, Path(export_dir), labels, sample, str(sample_image or "synthetic sample"))

    @property
    def arch(self) -> str:
        return self.summary.model.name

    @property
    def spec(self) -> DatasetSpec:
        return self.summary.model.spec

    @property
    def num_classes(self) -> int:
        return len(self.labels.splitlines())

    def sample_tensor(self, profile: Profile) -> bytes:
        """The warmup sample as the classifier takes it (uint8 HWC pixels or float32 CHW)."""
        pixels = preprocess_pixels(self.sample, self.spec, source=self.sample_source)
        tensor = pixels if profile.input_dtype == "TYPE_UINT8" else normalize(pixels, self.spec)
        return np.ascontiguousarray(tensor).tobytes()

    def copy_engine(self, key: str, directory: Path, device: str = "cpu") -> None:
        engine_dir = directory / "1" / "engine"
        shutil.copytree(Path(self.summary.artifact(key).path), engine_dir)
        if device == "cuda":
            write_manifest(engine_dir, {**read_manifest(engine_dir), "device": "cuda"})


def write_ensemble_model(
    repository: Path, name: str, model: ServedModelFiles, engine: str, profile: Profile, preprocess: str
) -> Path:
    """An ensemble ``name`` (``preprocess`` -> ``<name>_classifier``) and its classifier serving the exported
    ``engine``; the preprocess model must exist in the repository (``write_preprocess_model``)."""
    spec, num_classes = model.spec, model.num_classes
    classifier = index.classifier_of(name)
    profile = engine_profile(profile, model.summary.artifact(engine).engine)
    directory = _write_model(
        Path(repository),
        classifier_config(classifier, spec, num_classes, profile),
        kind="classifier",
        labels=model.labels,
    )
    model.copy_engine(engine, directory, device=profile.device)
    (directory / "warmup").mkdir()
    (directory / "warmup" / "sample").write_bytes(model.sample_tensor(profile))
    _write_model(
        Path(repository),
        ensemble_config(name, preprocess, classifier, spec, num_classes, profile),
        labels=model.labels,
    )
    return directory


def write_preprocess_model(repository: Path, model: ServedModelFiles, profile: Profile) -> str:
    """The dataset's preprocess model (shared by every ensemble of that contract); returns its name."""
    name = index.preprocess_model(model.spec)
    directory = _write_model(Path(repository), preprocess_config(name, model.spec, profile), kind="preprocess")
    (directory / "warmup").mkdir()
    (directory / "warmup" / "sample").write_bytes(_length_prefixed(model.sample))
    return name


def write_direct_model(
    repository: Path, name: str, model: ServedModelFiles, engine: str, profile: Profile, *, raw: bool
) -> Path:
    """A one-step model ``name`` (``direct_config``) serving the exported ``engine`` (e.g. "openvino-int8")."""
    profile = engine_profile(profile, model.summary.artifact(engine).engine)
    config = direct_config(name, model.spec, model.num_classes, profile, raw=raw, sample_bytes=len(model.sample))
    directory = _write_model(Path(repository), config, kind="pipeline", labels=model.labels)
    model.copy_engine(engine, directory)
    _write_warmup_sample(directory, model, raw)
    return directory


def _write_warmup_sample(directory: Path, model: ServedModelFiles, raw: bool) -> None:
    """The warmup file a one-step config names: the sample JPEG itself (UINT8) or length-prefixed (BYTES)."""
    (directory / "warmup").mkdir()
    (directory / "warmup" / "sample").write_bytes(model.sample if raw else _length_prefixed(model.sample))


def write_floor_model(repository: Path, name: str, model: ServedModelFiles, profile: Profile, *, raw: bool) -> Path:
    """A model ``name`` with the one-step model's config that answers zeros (``server/models/floor.py``): the
    serving machinery's ceiling, measured beside the real model."""
    config = direct_config(name, model.spec, model.num_classes, profile, raw=raw, sample_bytes=len(model.sample))
    directory = _write_model(Path(repository), config, kind="floor", labels=model.labels)
    _write_warmup_sample(directory, model, raw)
    return directory


def _synthetic_jpeg(spec: DatasetSpec) -> bytes:
    """A smooth colour gradient as JPEG, for warmup when no real sample image is given."""
    from PIL import Image

    side = spec.resize_size + 16
    y, x = np.mgrid[0:side, 0:side]
    rgb = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
