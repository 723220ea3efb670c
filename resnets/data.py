"""Datasets: CIFAR-10 (ImageFolder tree or the official python pickles) and any ImageFolder.

CIFAR-10 is small enough to hold in memory as uint8 (50,000 x 32 x 32 x 3 = 150 MB), so training
reads batches straight from tensors and augments them on the tensor (pad 4, random 32x32 crop,
horizontal flip, as in the paper) on whatever device trains: no loader workers, no per-image
Python in the training loop. Larger ImageFolder datasets are read lazily (``ImageFolderDataset``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_serve.resnets.console import progress
from resnet_serve.resnets.env import REPO_ROOT
from resnet_serve.resnets.spec import CIFAR10, CIFAR10_CLASSES, DatasetSpec, decode_image, normalize, resize_center_crop

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

CIFAR_LAYOUTS = """\
expected one of these CIFAR-10 layouts:
  1. an ImageFolder tree: DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg with the 10 class
     folders airplane, automobile, ..., truck (e.g. ../shared/data/cifar-10-jpg);
  2. the official python version: DIR/cifar-10-batches-py/{data_batch_1..5,test_batch}
     (or those files directly in DIR); pass --download to fetch it (163 MB, md5-checked)."""


def default_cifar_dir() -> Path:
    """$RESNET_SERVE_CIFAR_DIR, else ../shared/data/cifar-10-jpg beside the checkout, else data/cifar-10."""
    if os.environ.get("RESNET_SERVE_CIFAR_DIR"):
        return Path(os.environ["RESNET_SERVE_CIFAR_DIR"])
    shared = REPO_ROOT.parent / "shared" / "data" / "cifar-10-jpg"
    return shared if shared.is_dir() else Path("data/cifar-10")


class DataLayoutError(ValueError):
    """A data directory that does not have the layout the loader needs."""


@dataclass
class ArrayDataset:
    """Decoded images in memory: uint8 NHWC RGB plus int64 labels."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scan_image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """List an ImageFolder tree ``root/<class>/<image>``: sorted class names and (path, index)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"{root} is not a directory; expected ROOT/<class>/<image files>")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in root.iterdir() if p.is_file()][:3]
        hint = f" (found files such as {', '.join(loose)} directly in it)" if loose else ""
        raise DataLayoutError(
            f"{root} has no class sub-directories{hint}; expected ROOT/<class>/<image files>, one folder per class"
        )
    samples = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and is_image_file(p))
        samples += [(path, index) for path in files]
    if not samples:
        raise DataLayoutError(
            f"{root} has class folders ({', '.join(classes[:5])}...) but no image files "
            f"with extensions {', '.join(IMAGE_EXTENSIONS)}"
        )
    return classes, samples


def load_image_file(path: Path, spec: DatasetSpec) -> np.ndarray:
    """Decode one file to the uint8 HWC crop of ``spec`` (errors name the file)."""
    return resize_center_crop(decode_image(path.read_bytes(), source=str(path)), spec)


def load_image_folder_arrays(root: str | Path, spec: DatasetSpec = CIFAR10) -> ArrayDataset:
    """Decode a whole ImageFolder tree into memory (for small images such as CIFAR)."""
    classes, samples = scan_image_folder(root)
    side = spec.image_size
    images = np.empty((len(samples), side, side, 3), np.uint8)
    for i, (path, _) in enumerate(progress(samples, f"decoding {root}")):
        images[i] = load_image_file(path, spec)
    labels = np.fromiter((label for _, label in samples), np.int64, len(samples))
    return ArrayDataset(images, labels, classes, str(root))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_cifar10(root: str | Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download and extract the official CIFAR-10 python version into ``root`` (md5-checked)."""
    root = Path(root)
    target = root / "cifar-10-batches-py"
    if all((target / name).is_file() for names in CIFAR10_BATCHES.values() for name in names):
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    if not archive.is_file() or md5sum(archive) != md5:
        log.info("downloading %s", url)
        with tempfile.NamedTemporaryFile(dir=root, delete=False) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, tmp)
            except OSError as exc:
                Path(tmp.name).unlink(missing_ok=True)
                raise DataLayoutError(
                    f"could not download {url}: {exc}. Without internet, use an ImageFolder "
                    "copy such as ../shared/data/cifar-10-jpg"
                ) from None
        got = md5sum(Path(tmp.name))
        if got != md5:
            Path(tmp.name).unlink()
            raise DataLayoutError(
                f"downloaded {url} has md5 {got}, expected {md5}; the download is "
                "corrupt or not the official file: try again"
            )
        Path(tmp.name).replace(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return target


def find_cifar_batches(root: Path) -> Path | None:
    """The folder holding the official python batches under ``root``, if any."""
    for candidate in (root / "cifar-10-batches-py", root):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _load_cifar_batches(folder: Path, split: str) -> ArrayDataset:
    images, labels = [], []
    for name in CIFAR10_BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise DataLayoutError(f"{path} is missing; {CIFAR_LAYOUTS}")
        with open(path, "rb") as f:
            try:
                batch = pickle.load(f, encoding="bytes")  # the official files are Python 2 pickles
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
                raise DataLayoutError(f"{path} is not a readable CIFAR-10 batch ({exc}); re-download it") from None
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return ArrayDataset(np.concatenate(images), np.concatenate(labels), list(CIFAR10_CLASSES), str(folder))


def load_cifar10(data_dir: str | Path, split: str = "train", download: bool = False) -> ArrayDataset:
    """CIFAR-10 ``split`` ("train" or "test") from any supported layout, as uint8 NHWC arrays."""
    if split not in CIFAR10_BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data_dir)
    if download:
        download_cifar10(root)
    if (root / split).is_dir():
        data = load_image_folder_arrays(root / split, CIFAR10)
        if data.classes != list(CIFAR10_CLASSES):
            raise DataLayoutError(
                f"{root / split} has class folders {data.classes}, expected the CIFAR-10 classes "
                f"{list(CIFAR10_CLASSES)}"
            )
        return data
    batches = find_cifar_batches(root)
    if batches is not None:
        return _load_cifar_batches(batches, split)
    if not root.exists():
        raise DataLayoutError(f"{root} does not exist; {CIFAR_LAYOUTS}")
    raise DataLayoutError(f"{root} has no CIFAR-10 {split} split; {CIFAR_LAYOUTS}")


class ImageFolderDataset(torch.utils.data.Dataset):
    """Lazy ImageFolder for ImageNet-style data: ``root/<class>/<image>`` -> (CHW float, label)."""

    def __init__(self, root: str | Path, spec: DatasetSpec) -> None:
        self.root, self.spec = Path(root), spec
        self.classes, self.samples = scan_image_folder(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return torch.from_numpy(normalize(load_image_file(path, self.spec), self.spec)), label


# ---- tensor-side batching and augmentation --------------------------------------------------


def to_tensor_nchw(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on ``device`` (kept uint8 to save memory)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)


class Normalizer:
    """uint8 NCHW -> float normalised NCHW, on the tensor's device."""

    def __init__(self, spec: DatasetSpec, device: torch.device | str = "cpu") -> None:
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.inv_std


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's augmentation on a uint8 NCHW batch: zero-pad, random crop back, random h-flip.

    (Zero padding is applied to raw pixels, i.e. black borders, as the paper's
    "4 pixels are padded on each side".)
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    rows = (oy + torch.arange(h, device=dev)).view(n, 1, h, 1)
    cols = (ox + torch.arange(w, device=dev)).view(n, 1, 1, w)
    flip = torch.rand(n, device=dev, generator=generator) < 0.5
    cols = torch.where(flip.view(n, 1, 1, 1), (2 * ox + w - 1).view(n, 1, 1, 1) - cols, cols)
    batch_index = torch.arange(n, device=dev).view(n, 1, 1, 1)
    channel_index = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
    return padded[batch_index, channel_index, rows, cols]


class TensorBatches:
    """Shuffled mini-batches from in-memory uint8 tensors, augmented on the fly."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.train = batch_size, train
        self.generator, self.drop_last = generator, drop_last

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=self.generator).to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if self.train:
                x = random_crop_flip(x, generator=self.generator if x.device.type == "cpu" else None)
            yield x, self.labels[idx]
