"""Training-side tensors: uint8 image arrays on the device, the paper's augmentation, shuffled batches.

CIFAR-10 lives in memory as uint8, so training reads batches straight from tensors and augments them
on the tensor (pad 4, random 32x32 crop, horizontal flip, as in the paper) on whatever device
trains: no loader workers, no per-image Python in the training loop. Larger ImageFolder datasets
are read lazily (``ImageFolderDataset``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from resnet_serve.resnets.data import load_image_file, scan_image_folder
from resnet_serve.resnets.spec import DatasetSpec, normalize


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
