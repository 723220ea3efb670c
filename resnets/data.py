"""Datasets on disk: CIFAR-10 (ImageFolder tree or the official python pickles) and any ImageFolder.

numpy and Pillow only (the client and the served benchmark path use it without torch). CIFAR-10 is
small enough to hold in memory as uint8 (50,000 x 32 x 32 x 3 = 150 MB); ``resnets.tensors`` turns
it into training batches, and reads larger ImageFolder datasets lazily.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve.errors import ResnetServeError, UsageError
from resnet_serve.resnets.console import progress
from resnet_serve.resnets.spec import CIFAR10, CIFAR10_CLASSES, DatasetSpec, decode_image, resize_center_crop

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


class DataLayoutError(ResnetServeError):
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


def check_class_folders(root: str | Path, classes: Sequence[str], expected: Sequence[str]) -> None:
    """``root``'s class folders are exactly ``expected`` (a dataset whose labels are its folder names, e.g.
    CIFAR-10 as JPEG files), or an error that names the missing and the unexpected ones."""
    if sorted(classes) == sorted(expected):
        return
    missing = sorted(set(expected) - set(classes))
    extra = sorted(set(classes) - set(expected))
    problems = ([f"missing {missing}"] if missing else []) + ([f"not expected {extra}"] if extra else [])
    raise DataLayoutError(
        f"{root} has class folders {sorted(classes)} ({'; '.join(problems)}): labels are read from the folder "
        f"names, so each class needs its folder, named as the class is ({', '.join(expected)}); rename or add "
        "the folders"
    )


SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


def scan_labelled_folder(root: str | Path, labels: Sequence[str]) -> tuple[list[str], list[tuple[Path, int]]]:
    """An ImageFolder tree of labelled images for a model whose classes are ``labels``: (``labels``, and each
    image with its class index in them). Folders named as labels are matched by name (in any order; a subset
    of the classes is fine). Where no folder is named as a label (ImageNet's wnid folders beside a class index
    of names, or labels class_0 ..), the folders in sorted order are classes 0, 1, ..., as torchvision's
    ImageFolder numbers them. Folders of which only some are labels are refused: the rest would be guessed."""
    folders, samples = scan_image_folder(root)
    index: dict[str, int] = {}
    for i, name in enumerate(labels):
        index.setdefault(name, i)
    unknown = [f for f in folders if f not in index]
    if len(unknown) < len(folders):  # some folders are named as labels: all must be
        if unknown:
            raise DataLayoutError(
                f"{root}: class folders {unknown} are not among the model's {len(labels)} labels, while "
                f"{len(folders) - len(unknown)} other folders are; name each folder as the label of the images "
                "it holds (the model's labels are in labels.txt beside its export), or move it out"
            )
        return list(labels), [(path, index[folders[k]]) for path, k in samples]
    splits = sorted(set(folders) & SPLIT_NAMES)
    if splits:
        raise DataLayoutError(
            f"{root} holds split folders ({', '.join(splits)}), not class folders; pass the split to use, e.g. "
            f"{Path(root) / splits[0]}"
        )
    if len(folders) > len(labels):
        raise DataLayoutError(
            f"{root} has {len(folders)} class folders but the model scores {len(labels)} classes, and no folder is "
            f"named as one of its labels ({', '.join(labels[:3])}, ...); name each folder as the label of the "
            "images it holds"
        )
    log.info(
        "%s: no class folder is named as a label; folders in sorted order are classes 0..%d", root, len(folders) - 1
    )
    return list(labels), samples


def load_image_folder_arrays(
    root: str | Path,
    spec: DatasetSpec = CIFAR10,
    *,
    expected_classes: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> ArrayDataset:
    """Decode a whole ImageFolder tree into memory (for small images such as CIFAR). Its class folders are
    checked before anything is decoded: with ``expected_classes`` they must be those; with ``labels`` (a
    model's) they are matched to them (``scan_labelled_folder``); else they are the classes in sorted order."""
    if labels is not None:
        classes, samples = scan_labelled_folder(root, labels)
    else:
        classes, samples = scan_image_folder(root)
        if expected_classes is not None:
            check_class_folders(root, classes, expected_classes)
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
        raise UsageError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data_dir)
    if download:
        download_cifar10(root)
    if (root / split).is_dir():
        return load_image_folder_arrays(root / split, CIFAR10, expected_classes=CIFAR10_CLASSES)
    batches = find_cifar_batches(root)
    if batches is not None:
        return _load_cifar_batches(batches, split)
    if not root.exists():
        raise DataLayoutError(f"{root} does not exist; {CIFAR_LAYOUTS}")
    raise DataLayoutError(f"{root} has no CIFAR-10 {split} split; {CIFAR_LAYOUTS}")
