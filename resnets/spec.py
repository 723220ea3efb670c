"""Constants shared by every stage: tensor names, datasets, labels and image preprocessing.

Training, export, the Triton preprocess model, the client and the benchmarks all import this
module, so the pixels a model sees in production are computed exactly as in training.
Image handling uses Pillow and numpy only (torchvision is not a dependency).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
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
# long side / short side: photos and panoramas stay well under it; a file of 8 x 6,000,000 pixels would make
# the resize (which scales the short side up to the model's size) allocate gigabytes
MAX_ASPECT_RATIO = 20


ImageLike = Image.Image | bytes | np.ndarray  # encoded file bytes, a PIL image, or uint8 HWC pixels
# the model contract as Triton config parameters (DatasetSpec.as_parameters)
CONTRACT_PARAMETERS = ("dataset", "num_classes", "image_size", "resize_size", "mean", "std")
INTERPOLATIONS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}


class ImageError(ResnetServeError):
    """An input image that cannot be used; the message says what is wrong with it."""


class ContractError(ResnetServeError):
    """Model facts (classes, labels, preprocessing) that are missing or do not fit together."""


@dataclass(frozen=True)
class DatasetSpec:
    """The model contract: what a model expects as input and how many classes it scores.

    ``name`` is the data the model was trained for ("cifar10", "imagenet", or a user's name); the
    rest is the preprocessing: resize the shorter side to ``resize_size`` with ``interpolation``,
    center-crop ``image_size``, scale to 0..1 and normalize with ``mean``/``std``.
    """

    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int  # side of the square network input
    resize_size: int  # shorter side is resized to this before the center crop
    interpolation: str = "bilinear"  # a key of INTERPOLATIONS

    def __post_init__(self) -> None:
        problems = []
        if self.num_classes < 1:
            problems.append(f"num_classes {self.num_classes} (need at least 1)")
        if self.image_size < MIN_IMAGE_SIDE or self.resize_size < self.image_size:
            problems.append(
                f"image_size {self.image_size} / resize_size {self.resize_size} (need image_size >= "
                f"{MIN_IMAGE_SIDE} and resize_size >= image_size)"
            )
        finite = all(math.isfinite(v) for v in (*self.mean, *self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or not finite or min(self.std) <= 0:
            problems.append(f"mean {self.mean} / std {self.std} (need 3 finite values each, std above 0)")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} (one of {', '.join(INTERPOLATIONS)})")
        if problems:
            raise ContractError(f"model contract {self.name!r} is not usable: " + "; ".join(problems))

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
            "interpolation": self.interpolation,
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
            return cls(
                name=params["dataset"],
                num_classes=int(params["num_classes"]),
                mean=mean,
                std=std,
                image_size=int(params["image_size"]),
                resize_size=int(params["resize_size"]),
                interpolation=params.get("interpolation", "bilinear"),
            )
        except ContractError as exc:
            raise ContractError(f"{source}: {exc}") from None
        except ValueError as exc:
            raise ContractError(f"{source} has a malformed preprocessing parameter ({exc})") from None

    def default_labels(self) -> list[str]:
        """CIFAR-10's names for a 10-class CIFAR-10 model, else class_0 .. class_<N-1>."""
        if self.name == "cifar10" and self.num_classes == len(CIFAR10_CLASSES):
            return list(CIFAR10_CLASSES)
        return [f"class_{i}" for i in range(self.num_classes)]


def read_labels(path: str | Path, num_classes: int) -> list[str]:
    """Label names from a file: text (one name per line), or JSON: a list of names, {"0": "name", ...},
    or an ImageNet-style class index {"0": ["n01440764", "tench"], ...}. Their count must be ``num_classes``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContractError(f"cannot read the labels file {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{path} is not valid JSON ({exc}); give a text file with one label per line") from None
        if isinstance(table, dict):
            try:
                entries = [table[str(i)] for i in range(len(table))]
            except KeyError as exc:
                raise ContractError(f"{path} maps class indices to names but lacks index {exc}") from None
        elif isinstance(table, list):
            entries = table
        else:
            raise ContractError(f"{path} holds a JSON {type(table).__name__}; expected a list or an index -> name map")
        names = [e[-1] if isinstance(e, list) and e else e for e in entries]
        if not all(isinstance(n, str) for n in names):
            raise ContractError(f"{path}: every label must be a string (or [id, name] pair)")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ContractError(f"{path} has {len(names)} labels; the model scores {num_classes} classes")
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
            return to_rgb(img, source)
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


def decode_jpeg_pixels(data: bytes, source: str = "image") -> np.ndarray | None:
    """A plain JPEG (YCbCr or grayscale) decoded to uint8 HWC RGB with libjpeg-turbo (simplejpeg), or
    None for anything else, which ``decode_image`` (Pillow) then decodes or refuses with its reason.

    The same pixels as Pillow's decoder (same library, same default IDCT and upsampling; checked on
    every image of the CIFAR-10 test split and the ImageNet samples) at a fraction of its per-image
    cost (~8 vs ~60 us for a 32x32 file). simplejpeg treats libjpeg warnings (a truncated or damaged
    file) as errors where Pillow may still accept the file, so those go to Pillow as well: what is
    accepted or refused, and why, is Pillow's decision."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):  # CMYK / YCCK: Pillow converts those
            return None
        check_size(width, height, source=source)  # from the header, before decoding any pixels
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None


def check_size(width: int, height: int, *, source: str = "image") -> None:
    """Refuse images too small to classify, too large to decode safely, or too elongated to resize safely
    (checked from the header, before any pixel is decoded)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{source}: declares {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb or an oversized photo); resize the image before sending it"
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"{source}: is {width}x{height} pixels; images need at least {MIN_IMAGE_SIDE} pixels on each side"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"{source}: is {width}x{height} pixels, more than {MAX_ASPECT_RATIO}:1; crop it to the subject "
            "before sending it"
        )


def to_rgb(img: Image.Image, source: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; float images with NaN or infinite pixels are refused."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit and float grayscale: scale to 8 bits instead of clipping
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageError(f"{source}: has NaN or infinite pixel values; send an image with finite pixels")
        arr = np.clip(arr, 0, None)
        peak = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / peak)).round().astype(np.uint8), mode="L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return img.convert("RGB")


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` rule for an int size: the shorter side becomes ``size``, the longer
    ``int(size * long / short)`` (truncated, not rounded)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_center_crop(img: Image.Image, spec: DatasetSpec) -> np.ndarray:
    """Resize the shorter side to ``spec.resize_size`` and center-crop ``spec.image_size``.

    Returns uint8 HWC RGB. Exactly torchvision's ``Resize(resize_size)`` + ``CenterCrop(image_size)``
    on PIL images (Pillow's antialiased resampling, its size and crop-offset rules). A CIFAR-sized
    32x32 image passes unchanged.
    """
    width, height = img.size
    new_w, new_h = resized_size(width, height, spec.resize_size)
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), INTERPOLATIONS[spec.interpolation])
        width, height = new_w, new_h
    left = int(round((width - spec.image_size) / 2.0))
    top = int(round((height - spec.image_size) / 2.0))
    img = img.crop((left, top, left + spec.image_size, top + spec.image_size))
    return np.asarray(img, dtype=np.uint8)


def normalize(pixels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """uint8 pixels, HWC or NHWC, to float32 normalised CHW / NCHW: ``(x / 255 - mean) / std``.

    Channels first before the arithmetic, so each step runs over whole planes (broadcasting over a
    last axis of 3 is ~10x slower in numpy); the same float32 operations in the same order as
    computing it in HWC, so the values are identical."""
    *lead, height, width, channels = pixels.shape
    planes = np.moveaxis(pixels, -1, -3).reshape(*lead, channels, height * width)
    x = np.empty(planes.shape, np.float32)
    np.copyto(x, planes, casting="unsafe")
    x *= np.float32(1.0 / 255.0)
    x -= np.asarray(spec.mean, np.float32)[:, None]
    x /= np.asarray(spec.std, np.float32)[:, None]
    return x.reshape(*lead, channels, height, width)


def preprocess(image: ImageLike, spec: DatasetSpec, *, source: str = "image") -> np.ndarray:
    """One image (PIL, encoded bytes, or uint8 HWC RGB array) to the float32 CHW model input."""
    return normalize(preprocess_pixels(image, spec, source=source), spec)


def preprocess_pixels(image: ImageLike, spec: DatasetSpec, *, source: str = "image") -> np.ndarray:
    """One image to the uint8 HWC crop the network sees, before normalisation."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        pixels = decode_jpeg_pixels(data, source)
        if pixels is not None and pixels.shape[:2] == (spec.image_size, spec.image_size) == (spec.resize_size,) * 2:
            return pixels  # already the crop (CIFAR-sized): nothing to resize or cut
        image = Image.fromarray(pixels, "RGB") if pixels is not None else decode_image(data, source=source)
    elif isinstance(image, np.ndarray):
        image = array_to_image(image, source=source)
    elif isinstance(image, Image.Image):
        check_size(*image.size, source=source)
        image = to_rgb(image, source)
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
