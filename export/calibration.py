"""INT8 calibration: a seeded random pick of training images (never the test split), and the choice
of calibration method by agreement with FP32 on other training images."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve import settings
from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine
from resnet_serve.errors import ResnetServeError
from resnet_serve.export.quantize import METHODS, calibrate, preprocess_for_quantization, quantize_onnx
from resnet_serve.resnets.data import find_cifar_batches, is_image_file, load_cifar10, load_image_file
from resnet_serve.resnets.metrics import top1_agreement_pct
from resnet_serve.resnets.spec import INPUT_NAME, DatasetSpec, normalize

log = logging.getLogger(__name__)

HELD_OUT = 1000  # training images (disjoint from the calibration pick) used to choose a calibration method


class CalibrationError(ResnetServeError):
    """Calibration data that cannot be used: missing, empty, or an evaluation split."""


def calibration_files(directory: str | Path) -> list[Path]:
    """All image files under ``directory`` (``DIR/train`` if it has one); refuses test/val splits."""
    directory = Path(directory)
    if (directory / "train").is_dir():
        directory = directory / "train"
    if not directory.is_dir():
        raise CalibrationError(
            f"calibration data {directory} is not a directory; pass --calibration-data "
            "with a folder of training images (e.g. ../shared/data/cifar-10-jpg/train)"
        )
    parts = {p.lower() for p in directory.resolve().parts}
    if parts & {"test", "val", "validation"}:
        raise CalibrationError(
            f"calibration data {directory} looks like an evaluation split; INT8 scales "
            "must come from training images, or the accuracy measured on that split is biased"
        )
    files = sorted(p for p in directory.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise CalibrationError(
            f"calibration data {directory} holds no image files (.jpg, .png, ...); "
            "point --calibration-data at a folder of training images"
        )
    return files


def calibration_split(directory: str | Path, size: int, *, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """The image files of a calibration folder that calibration uses (a seeded pick of ``size``) and the
    rest, in the seeded order: the rest is what accuracy checks may use without bias."""
    files = calibration_files(directory)
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order[:size]], [files[i] for i in order[size:]]


def load_calibration_set(
    directory: str | Path, spec: DatasetSpec, size: int, *, seed: int = 0, held_out: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` preprocessed float32 NCHW images, plus ``held_out`` other ones (for choosing a method)."""
    if size < 1:
        raise CalibrationError(f"--calibration-size must be at least 1, got {size}")
    if spec.name == "cifar10" and find_cifar_batches(Path(directory)) is not None:
        pixels = load_cifar10(directory, "train").images  # the official training batches
        order = np.random.default_rng(seed).permutation(len(pixels))
        log.info(
            "calibration: %d images from the CIFAR-10 training batches in %s (seed %d), %d held out",
            size,
            directory,
            seed,
            held_out,
        )
        return normalize(pixels[order[:size]], spec), normalize(pixels[order[size : size + held_out]], spec)
    pick, rest = calibration_split(directory, size, seed=seed)
    if len(pick) < size:
        log.warning("calibration data has %d images, fewer than the %d asked for; using all", len(pick), size)
    rest = rest[:held_out]

    def load(paths: list[Path]) -> np.ndarray:
        if not paths:
            return np.empty((0, *spec.input_shape), np.float32)
        return normalize(np.stack([load_image_file(p, spec) for p in paths]), spec)

    log.info("calibration: %d images from %s (seed %d), %d held out", len(pick), directory, seed, len(rest))
    return load(pick), load(rest)


def qdq_level(symmetric: bool) -> str:
    """ORT optimization level for checking a quantized graph on this CPU. The TensorRT-ready INT8 graph
    (symmetric) runs unfused ("disable": every Q/DQ pair executed as written, convolutions in float),
    which computes what TensorRT's int8 kernels do with int32 accumulation; ORT's fused CPU int8 kernels
    would add their own int16 saturation on CPUs without VNNI and blame it on the graph."""
    return "disable" if symmetric else "all"


@dataclass(frozen=True)
class Candidate:
    """A quantized graph made while choosing a calibration method, kept for the accuracy report."""

    label: str  # e.g. "onnxruntime-int8[percentile]"
    path: Path
    optimization: str  # the ORT level it is checked at (qdq_level)


def calibration_dir(config, spec: DatasetSpec) -> Path:
    """Where an export's calibration images come from: --calibration-data, else (CIFAR) the training split."""
    if config.calibration_data is not None:
        return config.calibration_data
    if spec.name == "cifar10":
        return settings.cifar_dir()  # its train split (ImageFolder train/ or the official batches)
    raise CalibrationError(
        f"INT8 for a {spec.name} model needs --calibration-data: a folder of training images "
        f"({spec.name} preprocessing is applied)"
    )


def warmup_image(config, spec: DatasetSpec) -> Path | None:
    """A real training image for the served models' warmup, if calibration data is at hand."""
    try:
        return calibration_files(calibration_dir(config, spec))[0]
    except CalibrationError:
        return None


class Calibration:
    """The calibration images of one export and the INT8 graphs quantized from them.

    Images are read once, when an INT8 engine first asks; activation ranges are computed once per
    method and shared by every INT8 graph (the CPU engine's and the TensorRT-ready one). With method
    "auto" every method is tried and the one whose top-1 agrees most with FP32 on held-out *training*
    images is kept: the test split never chooses.
    """

    def __init__(
        self,
        config,
        spec: DatasetSpec,
        onnx_path: Path,
        reference: Callable[[np.ndarray], np.ndarray],
        fallbacks: list[dict],
    ) -> None:
        self.config, self.spec, self.onnx_path = config, spec, onnx_path
        self.reference = reference  # FP32 logits of the model being exported
        self.fallbacks = fallbacks
        self.out = config.out
        self._images: tuple[np.ndarray, np.ndarray] | None = None
        self._ranges: dict[str, Path] = {}

    @property
    def directory(self) -> Path:
        return calibration_dir(self.config, self.spec)

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """(calibration images, held-out images), float32 NCHW, preprocessed as the model expects."""
        if self._images is None:
            held_out = HELD_OUT if self.config.calibration_method == "auto" else 0
            self._images = load_calibration_set(
                self.directory, self.spec, self.config.calibration_size, seed=self.config.seed, held_out=held_out
            )
            got = len(self._images[0])
            if got < self.config.calibration_size:
                self.fallbacks.append(
                    {
                        "step": "calibration",
                        "asked": f"{self.config.calibration_size} images",
                        "used": f"{got} images",
                        "reason": f"{self.directory} has no more images",
                    }
                )
        return self._images

    def preprocessed_onnx(self) -> Path:
        pre = self.out / "model.preprocessed.onnx"
        if not pre.exists():
            preprocess_for_quantization(self.onnx_path, pre)
        return pre

    def ranges(self, method: str) -> Path:
        """Activation ranges for ``method``, computed once and shared by every INT8 graph of this export."""
        if method not in self._ranges:
            cache = self.out / f"calibration.{method}.json"
            calibrate(self.preprocessed_onnx(), self.images()[0], method, cache, input_name=INPUT_NAME)
            self._ranges[method] = cache
        return self._ranges[method]

    def quantize(self, target: Path, *, symmetric: bool, label: str) -> tuple[dict, list[Candidate]]:
        """Quantize the model into ``target`` (QDQ ONNX). Returns the chosen method (with every candidate's
        held-out agreement under "auto") and the candidate graphs, kept beside it as ``<name>.<method>.onnx``."""
        methods = METHODS if self.config.calibration_method == "auto" else (self.config.calibration_method,)
        pre = self.preprocessed_onnx()
        if len(methods) == 1:
            quantize_onnx(pre, target, methods[0], self.ranges(methods[0]), symmetric_activations=symmetric)
            return {"method": methods[0]}, []
        held_out = self.images()[1]
        reference = self.reference(held_out)
        agreements, candidates = {}, []
        for method in methods:
            path = target.with_name(f"{target.stem}.{method}.onnx")
            quantize_onnx(pre, path, method, self.ranges(method), symmetric_activations=symmetric)
            engine = OnnxRuntimeEngine(path, threads=self.config.threads, optimization=qdq_level(symmetric))
            agreements[method] = {"held_out_agreement": top1_agreement_pct(engine.infer_all(held_out), reference)}
            candidates.append(Candidate(f"{label}[{method}]", path, qdq_level(symmetric)))
            log.info(
                "%s calibration %s: top-1 agreement with FP32 on %d held-out training images: %.2f%%",
                label,
                method,
                len(held_out),
                agreements[method]["held_out_agreement"],
            )
        best = max(agreements, key=lambda m: agreements[m]["held_out_agreement"])
        shutil.copyfile(target.with_name(f"{target.stem}.{best}.onnx"), target)
        return {"method": best, "candidates": agreements}, candidates
