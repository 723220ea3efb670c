"""Evaluate a checkpoint: top-1, top-5, per-class accuracy and throughput.

    python -m resnets.evaluate --checkpoint checkpoints/resnet20.pt --data-dir ../shared/data/cifar-10-jpg --json

``--json`` prints one JSON object with ``top1``, ``top5`` (percent, 0..100), ``n``, ``per_class``,
``img_s``. Scoring is ``resnets.metrics``, the path export and the benchmarks use too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from resnet_serve import cli, settings
from resnet_serve.resnets.checkpoint import load_checkpoint
from resnet_serve.resnets.data import load_cifar10
from resnet_serve.resnets.metrics import accuracy_report, predict_chunked
from resnet_serve.resnets.models import arch_spec
from resnet_serve.resnets.spec import DatasetSpec
from resnet_serve.resnets.tensors import ImageFolderDataset, Normalizer, to_tensor_nchw

log = logging.getLogger(__name__)


def torch_forward(
    model: torch.nn.Module, spec: DatasetSpec, device: str | torch.device = "cpu", *, normalize: bool = True
):
    """A batch (uint8 NCHW tensor, or normalized float32 NCHW array when ``normalize=False``) -> numpy logits."""
    model.eval()
    normalizer = Normalizer(spec, device)

    @torch.no_grad()
    def forward(batch) -> np.ndarray:
        x = torch.as_tensor(batch).to(device)
        x = (normalizer(x) if normalize else x).contiguous(memory_format=torch.channels_last)
        return model(x).float().cpu().numpy()

    return forward


def evaluate_model(
    model, images: torch.Tensor, labels: np.ndarray, classes: list[str], spec, *, batch_size: int = 500, device="cpu"
) -> dict:
    """Accuracy report plus throughput (img/s over the whole pass, normalization included), uint8 NCHW images."""
    start = time.perf_counter()
    logits = predict_chunked(torch_forward(model, spec, device), images, batch_size)
    seconds = time.perf_counter() - start
    report = accuracy_report(logits, labels, classes)
    report["seconds"] = round(seconds, 3)
    report["img_s"] = round(len(labels) / seconds, 1)
    return report


def evaluate_image_folder(model, root: Path, spec, *, batch_size: int, device: str, workers: int) -> dict:
    dataset = ImageFolderDataset(root, spec)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    forward = torch_forward(model, spec, device, normalize=False)
    start = time.perf_counter()
    logits, labels = [], []
    for x, y in loader:
        logits.append(forward(x))
        labels.append(y.numpy())
    seconds = time.perf_counter() - start
    report = accuracy_report(np.concatenate(logits), np.concatenate(labels), dataset.classes)
    report["seconds"] = round(seconds, 3)
    report["img_s"] = round(report["n"] / seconds, 1)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnets.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument(
        "--data-dir",
        type=Path,
        help="CIFAR-10 (ImageFolder tree or official pickles) or an ImageFolder for ImageNet nets "
        f"(default: the CIFAR-10 data under ${settings.DATA_ENV} or ../shared/data)",
    )
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--arch", help="architecture, required only for a bare state_dict")
    p.add_argument("--batch-size", type=cli.positive_int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=cli.non_negative_int, default=2, help="decoding workers for ImageFolder data")
    p.add_argument("--limit", type=cli.positive_int, help="evaluate only the first N images (CIFAR)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def evaluate(args) -> int:
    model, ckpt = load_checkpoint(args.checkpoint, args.arch)
    model.to(args.device).to(memory_format=torch.channels_last)
    spec = arch_spec(ckpt["arch"]).dataset
    data_dir = args.data_dir or settings.cifar_dir()
    if spec.name == "cifar10":
        data = load_cifar10(data_dir, args.split)
        images, labels = data.images, data.labels
        if args.limit:
            images, labels = images[: args.limit], labels[: args.limit]
        report = evaluate_model(
            model, to_tensor_nchw(images), labels, data.classes, spec, batch_size=args.batch_size, device=args.device
        )
    else:
        root = data_dir / args.split if (data_dir / args.split).is_dir() else data_dir
        report = evaluate_image_folder(
            model, root, spec, batch_size=args.batch_size, device=args.device, workers=args.workers
        )
    report = {"arch": ckpt["arch"], "checkpoint": str(args.checkpoint), "split": args.split, **report}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['arch']} on {data_dir} [{args.split}], {report['n']} images")
        print(f"  top-1 {report['top1']:.2f}%   top-5 {report['top5']:.2f}%   {report['img_s']:.0f} img/s")
        for name, acc in report["per_class"].items():
            print(f"  {name:>12s} {acc:6.2f}%")
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
