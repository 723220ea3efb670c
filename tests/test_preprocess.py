"""ImageNet preprocessing is exactly torchvision's Resize(256) + CenterCrop(224) on PIL images.

The reference below is written from torchvision's documented rules, independently of resnets/spec.py:
Resize(int) scales the shorter side to ``size`` and the longer to ``int(size * long / short)``
(truncated) with PIL's antialiased bilinear resampling; CenterCrop takes ``int(round((side - crop) /
2.0))`` from the top and the left.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnet_serve.resnets.spec import IMAGENET, DatasetSpec, decode_image, preprocess_pixels, resize_center_crop

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
