"""Constants shared by every stage: tensor names, datasets, labels and image preprocessing.

Training, export, the Triton preprocess model, the client and the benchmarks all import this
module, so the pixels a model sees in production are computed exactly as in training.
Image handling uses Pillow and numpy only (torchvision is not a dependency).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from resnet_serve.errors import ResnetServeError

# Tensor names of every exported model and of the Triton models built from them.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_BYTES_NAME = "image"  # encoded image bytes fed to the ensemble / preprocess model

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Decoding guards: a tiny file may declare a huge canvas (decompression bomb).
MAX_IMAGE_PIXELS = 50_000_000  # about 7000 x 7000
MIN_IMAGE_SIDE = 8  # smaller images carry no usable content for a 32x32 (or larger) network input


ImageLike = Image.Image | bytes | np.ndarray  # encoded file bytes, a PIL image, or uint8 HWC pixels
# the model contract as Triton config parameters (DatasetSpec.as_parameters)
CONTRACT_PARAMETERS = ("dataset", "num_classes", "image_size", "resize_size", "mean", "std")


class ImageError(ResnetServeError):
    """An input image that cannot be used; the message says what is wrong with it."""


class ContractError(ResnetServeError):
    """Model facts (classes, labels, preprocessing) that are missing or do not fit together."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a model expects as input: size, normalisation and label names."""

    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int  # side of the square network input
    resize_size: int  # shorter side is resized to this before the center crop

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def as_parameters(self) -> dict[str, str]:
        """These facts as Triton config parameters (string values); ``from_parameters`` reads them back."""
        return {
            "dataset": self.name,
            "num_classes": str(self.num_classes),
            "image_size": str(self.image_size),
            "resize_size": str(self.resize_size),
            "mean": ",".join(repr(float(v)) for v in self.mean),
            "std": ",".join(repr(float(v)) for v in self.std),
        }

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], source: str = "model") -> DatasetSpec:
        """The inverse of ``as_parameters``; a missing or malformed entry is a ContractError naming it."""
        missing = [key for key in CONTRACT_PARAMETERS if key not in params]
        if missing:
            raise ContractError(
                f"{source} does not state {', '.join(missing)} in its parameters; it was not written by "
                "resnet-serve's repository writer (send encoded images to an ensemble instead)"
            )
        try:
            mean, std = (tuple(float(v) for v in params[key].split(",")) for key in ("mean", "std"))
            spec = cls(
                name=params["dataset"],
                num_classes=int(params["num_classes"]),
                mean=mean,
                std=std,
                image_size=int(params["image_size"]),
                resize_size=int(params["resize_size"]),
            )
        except ValueError as exc:
            raise ContractError(f"{source} has a malformed preprocessing parameter ({exc})") from None
        if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
            raise ContractError(f"{source}: mean and std need 3 values each, std above 0; got {spec.mean}, {spec.std}")
        return spec

    def labels(self, class_index: str | Path | None = None) -> list[str]:
        """Label names by class index.

        CIFAR-10 names are built in. For ImageNet, pass a torchvision/Keras-style
        ``imagenet_class_index.json`` ({"0": ["n01440764", "tench"], ...}); without one the
        labels are ``class_0`` .. ``class_999``.
        """
        if self.name == "cifar10":
            return list(CIFAR10_CLASSES)
        if class_index is None:
            return [f"class_{i}" for i in range(self.num_classes)]
        table = json.loads(Path(class_index).read_text())
        names = [table[str(i)][1] for i in range(len(table))]
        if len(names) != self.num_classes:
            raise ContractError(f"{class_index} has {len(names)} classes, expected {self.num_classes} for {self.name}")
        return names


# Per-channel statistics of the CIFAR-10 training images (0..1 scale).
CIFAR10 = DatasetSpec(
    name="cifar10",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    image_size=32,
    resize_size=32,
)

IMAGENET = DatasetSpec(
    name="imagenet",
    num_classes=1000,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    image_size=224,
    resize_size=256,
)

DATASETS = {spec.name: spec for spec in (CIFAR10, IMAGENET)}


def decode_image(data: bytes, *, source: str = "image") -> Image.Image:
    """Decode encoded image bytes (JPEG, PNG, WebP, ...) into an RGB PIL image.

    Any mode (grayscale, palette, RGBA, CMYK, 16-bit) is converted to RGB; alpha is dropped.
    Raises ImageError naming ``source`` for empty, undecodable, truncated or oversized input.
    """
    if not data:
        raise ImageError(f"{source}: empty input (0 bytes); send the encoded image file's bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_size(*img.size, source=source)  # from the header, before decoding any pixels
            img.load()  # decode now so truncated files fail here, not later
            return to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"{source}: not a decodable image ({len(data)} bytes, starts with {data[:8]!r}); "
            "send JPEG, PNG, WebP, BMP or TIFF bytes"
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit fires before ours for huge canvases
        raise ImageError(
            f"{source}: rejected as a decompression bomb ({exc}); resize the image before sending it"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{source}: broken image data ({exc}); re-encode or re-download it") from None


def check_size(width: int, height: int, *, source: str = "image") -> None:
    """Refuse images too small to classify or too large to decode safely."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{source}: declares {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb or an oversized photo); resize the image before sending it"
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"{source}: is {width}x{height} pixels; images need at least {MIN_IMAGE_SIDE} pixels on each side"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / peak)).round().astype(np.uint8), mode="L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, spec: DatasetSpec) -> np.ndarray:
    """Resize the shorter side to ``spec.resize_size`` and center-crop ``spec.image_size``.

    Returns uint8 HWC RGB. Bilinear with Pillow's antialiasing, as torchvision's
    ``Resize`` + ``CenterCrop`` do on PIL images. A CIFAR-sized 32x32 image passes unchanged.
    """
    width, height = img.size
    short = min(width, height)
    if short != spec.resize_size:
        scale = spec.resize_size / short
        new_w = spec.resize_size if width == short else max(spec.resize_size, round(width * scale))
        new_h = spec.resize_size if height == short else max(spec.resize_size, round(height * scale))
        img = img.resize((new_w, new_h), Image.BILINEAR)
        width, height = new_w, new_h
    left = int(round((width - spec.image_size) / 2.0))
    top = int(round((height - spec.image_size) / 2.0))
    img = img.crop((left, top, left + spec.image_size, top + spec.image_size))
    return np.asarray(img, dtype=np.uint8)


def normalize(pixels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """uint8 pixels, HWC or NHWC, to float32 normalised CHW / NCHW."""
    x = pixels.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess(image: ImageLike, spec: DatasetSpec, *, source: str = "image") -> np.ndarray:
    """One image (PIL, encoded bytes, or uint8 HWC RGB array) to the float32 CHW model input."""
    return normalize(preprocess_pixels(image, spec, source=source), spec)


def preprocess_pixels(image: ImageLike, spec: DatasetSpec, *, source: str = "image") -> np.ndarray:
    """One image to the uint8 HWC crop the network sees, before normalisation."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = decode_image(bytes(image), source=source)
    elif isinstance(image, np.ndarray):
        image = array_to_image(image, source=source)
    elif isinstance(image, Image.Image):
        check_size(*image.size, source=source)
        image = to_rgb(image)
    else:
        raise ImageError(f"{source}: expected a PIL image, encoded bytes or a uint8 array, got {type(image).__name__}")
    return resize_center_crop(image, spec)


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    """Lossless PNG bytes of a PIL image or a uint8 HWC array (what the server decodes back exactly)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def array_to_image(array: np.ndarray, *, source: str = "image") -> Image.Image:
    """A uint8 HWC (RGB/RGBA) or HW (grayscale) array to an RGB PIL image."""
    if array.dtype != np.uint8:
        raise ImageError(f"{source}: image arrays must be uint8 HWC RGB, got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise ImageError(f"{source}: image arrays must be HxW or HxWx{{1,3,4}}, got shape {array.shape}")
    check_size(array.shape[1], array.shape[0], source=source)
    return to_rgb(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array))
