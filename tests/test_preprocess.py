"""ImageNet preprocessing is exactly torchvision's Resize(256) + CenterCrop(224) on PIL images.

The reference below is written from torchvision's documented rules, independently of resnets/spec.py:
Resize(int) scales the shorter side to ``size`` and the longer to ``int(size * long / short)``
(truncated) with PIL's antialiased bilinear resampling; CenterCrop takes ``int(round((side - crop) /
2.0))`` from the top and the left.

The JPEG fast path (libjpeg-turbo through simplejpeg) gives Pillow's pixels and leaves every
accept/refuse decision to Pillow; normalisation equals the plain HWC formula bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import cifar_test_files
from PIL import Image

from resnet_serve.resnets.spec import (
    CIFAR10,
    IMAGENET,
    DatasetSpec,
    ImageError,
    decode_image,
    decode_jpeg_pixels,
    normalize,
    preprocess_pixels,
    resize_center_crop,
)

ODD_SIZES = [
    (500, 375), (375, 500), (333, 500), (640, 427), (427, 640), (301, 257), (257, 301), (1000, 257),
    (257, 1000), (517, 383), (383, 517), (299, 299), (256, 256), (255, 300), (311, 511), (800, 601),
    (601, 800), (1024, 683), (683, 1024), (359, 1280), (1280, 359), (224, 224), (400, 299), (299, 400),
]  # fmt: skip


def torchvision_resize_center_crop(img: Image.Image, size: int, crop: int, resample=Image.BILINEAR) -> np.ndarray:
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


def gradient(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (3 * x + 5 * y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("size", ODD_SIZES, ids=[f"{w}x{h}" for w, h in ODD_SIZES])
def test_odd_sizes_match_torchvision(size):
    img = gradient(*size)
    ours = resize_center_crop(img, IMAGENET)
    assert ours.shape == (224, 224, 3)
    assert np.array_equal(ours, torchvision_resize_center_crop(img, 256, 224))


def test_the_imagenet_samples_match_torchvision(imagenet_sample):
    files = sorted(imagenet_sample.glob("*.JPEG"))
    assert len(files) == 100
    rounding_would_differ = 0
    for path in files:
        img = decode_image(path.read_bytes(), source=str(path))
        w, h = img.size
        short, long = min(w, h), max(w, h)
        rounding_would_differ += round(256 * long / short) != int(256 * long / short)
        assert np.array_equal(
            preprocess_pixels(path.read_bytes(), IMAGENET), torchvision_resize_center_crop(img, 256, 224)
        )
    # rounding instead of truncating (what this code did before) changes the resized size of 26 of them
    assert rounding_would_differ >= 20, rounding_would_differ


@pytest.mark.parametrize("interpolation, resample", [("bicubic", Image.BICUBIC), ("nearest", Image.NEAREST)])
def test_the_contract_chooses_the_interpolation(interpolation, resample):
    spec = DatasetSpec("custom", 5, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 96, 112, interpolation)
    img = gradient(301, 257)
    assert np.array_equal(resize_center_crop(img, spec), torchvision_resize_center_crop(img, 112, 96, resample))


def jpeg(img: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def pillow_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_jpeg_fast_path_gives_pillows_pixels(cifar_jpg):
    files = [p.read_bytes() for p in cifar_test_files(cifar_jpg, per_class=30)]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 47, 3), np.uint8))
    variants = [
        jpeg(img, subsampling=0),  # 4:4:4
        jpeg(img, subsampling=1),  # 4:2:2
        jpeg(img, subsampling=2),  # 4:2:0
        jpeg(img, progressive=True),
        jpeg(img, quality=95, optimize=True),
        jpeg(img.convert("L")),  # grayscale: the three channels repeat it
    ]
    for data in files + variants:
        fast = decode_jpeg_pixels(data)
        assert fast is not None, "a plain JPEG should take the fast path"
        assert np.array_equal(fast, pillow_pixels(data))
    for data in variants:
        for spec in (CIFAR10, IMAGENET):
            assert np.array_equal(preprocess_pixels(data, spec), resize_center_crop(decode_image(data), spec))


def test_jpegs_the_fast_path_does_not_take_are_pillows_decision(cifar_jpg):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), np.uint8))
    cmyk = jpeg(img.convert("CMYK"))
    assert decode_jpeg_pixels(cmyk) is None  # Pillow converts CMYK
    assert np.array_equal(preprocess_pixels(cmyk, CIFAR10), resize_center_crop(decode_image(cmyk), CIFAR10))
    good = cifar_test_files(cifar_jpg, per_class=1)[0].read_bytes()
    # stray bytes inside the file: libjpeg warns, simplejpeg refuses, Pillow decodes it as before
    damaged = good[:200] + bytes(50) + good[250:]
    assert decode_jpeg_pixels(damaged) is None
    assert np.array_equal(preprocess_pixels(damaged, CIFAR10), pillow_pixels(damaged))
    # truncated: refused with Pillow's reason, as before
    with pytest.raises(ImageError, match="broken image data.*truncated"):
        preprocess_pixels(good[:-2], CIFAR10, source="upload")
    # too small, from the header, before any decoding
    with pytest.raises(ImageError, match="at least 8 pixels on each side"):
        preprocess_pixels(jpeg(img.resize((4, 40))), CIFAR10)


@pytest.mark.parametrize("shape", [(32, 32, 3), (16, 32, 32, 3), (2, 224, 200, 3)])
def test_normalize_is_the_hwc_formula_bit_for_bit(shape):
    pixels = np.random.default_rng(2).integers(0, 256, shape, np.uint8)
    for spec in (CIFAR10, IMAGENET):
        x = pixels.astype(np.float32) * np.float32(1.0 / 255.0)
        expected = np.moveaxis((x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32), -1, -3)
        ours = normalize(pixels, spec)
        assert ours.dtype == np.float32 and ours.flags.c_contiguous
        assert np.array_equal(ours, expected)
