"""The images every runner uses, read once: the labelled CIFAR-10 test split (encoded bytes as the server
receives them, and the pixels evaluated offline) and the ImageNet sample images. numpy and Pillow only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve.resnets.data import check_class_folders, load_cifar10, scan_image_folder
from resnet_serve.resnets.spec import CIFAR10_CLASSES, DatasetSpec, encode_png, normalize, preprocess_pixels

log = logging.getLogger(__name__)


@dataclass
class LabelledImages:
    encoded: list[bytes]  # what a client sends (files as they are; official-batch images as lossless PNG)
    labels: np.ndarray | None  # None: sample images without labels
    classes: list[str]
    pixels: np.ndarray  # uint8 NHWC crops, as the server's preprocessing makes them
    source: str

    def normalized(self, spec: DatasetSpec) -> np.ndarray:
        return normalize(self.pixels, spec)


def cifar_test_split(cifar_dir: Path, spec: DatasetSpec) -> LabelledImages:
    """The CIFAR-10 test split from an ImageFolder tree (files sent as they are) or the official batches
    (each image sent as lossless PNG, so the server decodes exactly the pixels evaluated offline)."""
    if (cifar_dir / "test").is_dir():
        classes, samples = scan_image_folder(cifar_dir / "test")
        check_class_folders(cifar_dir / "test", classes, CIFAR10_CLASSES)
        encoded = [path.read_bytes() for path, _ in samples]
        labels = np.array([label for _, label in samples])
        pixels = np.stack(
            [preprocess_pixels(b, spec, source=str(p)) for b, (p, _) in zip(encoded, samples, strict=True)]
        )
    else:
        data = load_cifar10(cifar_dir, "test")
        classes, labels, pixels = data.classes, data.labels, data.images
        encoded = [encode_png(image) for image in pixels]
    return LabelledImages(encoded, labels, classes, pixels, str(cifar_dir))


def sample_images(folder: Path, spec: DatasetSpec, limit: int = 64) -> LabelledImages | None:
    """Up to ``limit`` unlabelled JPEGs of a folder (e.g. the ImageNet sample), or None if it has none."""
    files = sorted(folder.glob("*.JPEG"))[:limit] if folder.is_dir() else []
    if not files:
        return None
    encoded = [f.read_bytes() for f in files]
    pixels = np.stack([preprocess_pixels(b, spec, source=str(f)) for b, f in zip(encoded, files, strict=True)])
    return LabelledImages(encoded, None, [], pixels, str(folder))


def repeat_to(images: np.ndarray, batch_size: int) -> np.ndarray:
    """A batch of ``batch_size`` made of the given images, cycled."""
    return np.ascontiguousarray(images[np.arange(batch_size) % len(images)])
