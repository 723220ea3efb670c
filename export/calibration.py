"""Calibration images for INT8: a seeded random pick of training images, never the test split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from resnet_serve.resnets.data import find_cifar_batches, is_image_file, load_cifar10, load_image_file
from resnet_serve.resnets.spec import DatasetSpec, normalize

log = logging.getLogger(__name__)

HELD_OUT = 1000  # training images (disjoint from the calibration pick) used to choose a calibration method


class CalibrationError(ValueError):
    pass


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
    files = calibration_files(directory)
    order = np.random.default_rng(seed).permutation(len(files))
    if len(files) < size:
        log.warning("calibration data has %d images, fewer than the %d asked for; using all", len(files), size)
    pick = [files[i] for i in order[:size]]
    rest = [files[i] for i in order[size : size + held_out]]

    def load(paths: list[Path]) -> np.ndarray:
        if not paths:
            return np.empty((0, *spec.input_shape), np.float32)
        return normalize(np.stack([load_image_file(p, spec) for p in paths]), spec)

    log.info("calibration: %d images from %s (seed %d), %d held out", len(pick), directory, seed, len(rest))
    return load(pick), load(rest)
