"""Build the default model repository: the committed ResNet-20 (FP32 + INT8 on ONNX Runtime and
OpenVINO) and an ImageNet ResNet-50 (torchvision-format weights if given, else random, marked so; FP32,
INT8 calibrated on part of the ImageNet sample, and bf16 where the CPU has it). Which engine and request
path each network's default model uses is chosen on the host by the tune step (``benchmarks.tune``).

    python -m export.default_repository [--repository model_repository] [--build-dir build]
        [--resnet20-checkpoint checkpoints/resnet20.pt] [--resnet50-weights resnet50.pth]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_serve import cli, settings
from resnet_serve.export.calibration import warmup_image
from resnet_serve.export.config import ExportConfig
from resnet_serve.export.pipeline import run_export
from resnet_serve.export.repository import PROFILES, writable_repository, write_repository
from resnet_serve.server.index import ServedNetwork

NETWORKS = ("resnet20", "resnet50")  # what build_default_repository exports and serves
RESNET20_CHECKPOINT = Path("checkpoints") / "resnet20.pt"  # relative to the working directory (a checkout)
IMAGENET_CALIBRATION_IMAGES = 50  # of the 100 ImageNet sample images; the rest are held out


def build_default_repository(
    repository: Path,
    build_dir: Path,
    *,
    resnet20_checkpoint: Path = RESNET20_CHECKPOINT,
    resnet50_weights: Path | None = None,
    cifar_dir: Path | None = None,
    imagenet_dir: Path | None = None,
    evaluate: bool = False,
    profile: str = "cpu",
    threads: int | None = None,
) -> dict[str, ServedNetwork]:
    writable_repository(repository)  # one the models cannot go into fails now, not after the exports
    cifar_dir = settings.cifar_dir(cifar_dir)
    batches = PROFILES[profile].max_batch_size  # TensorRT profiles cover the repository's largest batch, by input size
    if imagenet_dir is None and settings.imagenet_sample_dir().is_dir():
        imagenet_dir = settings.imagenet_sample_dir()
    written = {}
    r20 = ExportConfig(
        checkpoint=resnet20_checkpoint,
        out=build_dir / "resnet20",
        calibration_data=cifar_dir,
        engines=("onnxruntime", "openvino"),
        precisions=("fp32", "int8"),
        tensorrt_ready=True,
        evaluate=evaluate,
        threads=threads,
        max_batch=batches["small"],
    )
    summary = run_export(r20)
    written["resnet20"] = write_repository(
        repository, r20.out, profile=profile, sample_image=warmup_image(r20, summary.model.spec)
    )
    labels = imagenet_dir / "imagenet_class_index.json" if imagenet_dir else None
    # INT8 calibrates on a seeded half of the ImageNet sample; the tune step measures agreement on the other
    # half (export.calibration.calibration_split). bf16 is built only where OpenVINO reports the CPU runs it.
    precisions = ("fp32", "int8", "bf16") if imagenet_dir and profile == "cpu" else ("fp32",)
    r50 = ExportConfig(
        checkpoint=resnet50_weights,
        arch="resnet50",
        random_weights=resnet50_weights is None,
        out=build_dir / "resnet50",
        engines=("onnxruntime", "openvino"),
        precisions=precisions,
        tensorrt_ready=profile == "gpu",
        evaluate=False,
        threads=threads,
        max_batch=batches["large"],
        calibration_data=imagenet_dir,
        calibration_size=IMAGENET_CALIBRATION_IMAGES,
        labels=labels if labels and labels.is_file() else None,
    )
    run_export(r50)
    sample = next(iter(sorted(imagenet_dir.glob("*.JPEG"))), None) if imagenet_dir else None
    written["resnet50"] = write_repository(repository, r50.out, profile=profile, sample_image=sample)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.default_repository", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, help=f"default: ${settings.REPOSITORY_ENV} or model_repository")
    p.add_argument("--build-dir", type=cli.out_dir, help=f"default: ${settings.BUILD_ENV} or build")
    p.add_argument("--resnet20-checkpoint", type=Path, default=RESNET20_CHECKPOINT)
    p.add_argument("--resnet50-weights", type=Path, help="torchvision resnet50 state_dict (.pth); else random")
    p.add_argument("--data-dir", type=Path, help="CIFAR-10 data (calibration); default from the data root")
    p.add_argument("--gpu", dest="profile", action="store_const", const="gpu", default="cpu")
    p.add_argument("--evaluate", action="store_true", help="also measure every engine's accuracy")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build(args) -> int:
    written = build_default_repository(
        settings.repository_dir(args.repository),
        settings.build_dir(args.build_dir),
        resnet20_checkpoint=args.resnet20_checkpoint,
        resnet50_weights=args.resnet50_weights,
        cifar_dir=args.data_dir,
        evaluate=args.evaluate,
        profile=args.profile,
    )
    print(
        json.dumps(
            {arch: {"default": n.default, "engines": [e.key for e in n.engines]} for arch, n in written.items()},
            indent=2,
        )
    )
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
