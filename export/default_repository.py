"""Build the default model repository: the committed ResNet-20 (FP32 + INT8 on ONNX Runtime and
OpenVINO) and an ImageNet ResNet-50 (torchvision-format weights if given, else random, marked so).

    python -m export.default_repository [--repository model_repository] [--resnet50-weights resnet50.pth]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from resnet_serve.export.build import ExportBuilder, ExportConfig
from resnet_serve.export.repository import PROFILES, write_repository
from resnet_serve.resnets.data import default_cifar_dir
from resnet_serve.resnets.env import REPO_ROOT

log = logging.getLogger("export")

RESNET20_CHECKPOINT = REPO_ROOT / "checkpoints" / "resnet20.pt"
IMAGENET_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"


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
) -> dict:
    cifar_dir = cifar_dir or default_cifar_dir()
    batches = PROFILES[profile].max_batch_size  # TensorRT profiles cover the repository's largest batch
    imagenet_dir = imagenet_dir or (IMAGENET_SAMPLE if IMAGENET_SAMPLE.is_dir() else None)
    written = {}
    r20 = ExportBuilder(
        ExportConfig(
            checkpoint=resnet20_checkpoint,
            out=build_dir / "resnet20",
            calibration_data=cifar_dir,
            engines=("onnxruntime", "openvino"),
            precisions=("fp32", "int8"),
            tensorrt_ready=True,
            evaluate=evaluate,
            threads=threads,
            max_batch=batches["cifar10"],
        )
    )
    r20.run()
    written["resnet20"] = write_repository(
        repository, build_dir / "resnet20", profile=profile, sample_image=r20.sample_image()
    )
    labels = imagenet_dir / "imagenet_class_index.json" if imagenet_dir else None
    r50 = ExportBuilder(
        ExportConfig(
            checkpoint=resnet50_weights,
            arch="resnet50",
            random_weights=resnet50_weights is None,
            out=build_dir / "resnet50",
            engines=("onnxruntime", "openvino"),
            precisions=("fp32",),
            tensorrt_ready=profile == "gpu",
            evaluate=False,
            threads=threads,
            max_batch=batches["imagenet"],
            calibration_data=imagenet_dir if profile == "gpu" else None,
            labels=labels if labels and labels.is_file() else None,
        )
    )
    r50.run()
    sample = next(iter(sorted(imagenet_dir.glob("*.JPEG"))), None) if imagenet_dir else None
    written["resnet50"] = write_repository(repository, build_dir / "resnet50", profile=profile, sample_image=sample)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.default_repository", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--build-dir", type=Path, default=Path("build"))
    p.add_argument("--resnet50-weights", type=Path, help="torchvision resnet50 state_dict (.pth); else random")
    p.add_argument("--gpu", dest="profile", action="store_const", const="gpu", default="cpu")
    p.add_argument("--evaluate", action="store_true", help="also measure every engine's accuracy")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    written = build_default_repository(
        args.repository,
        args.build_dir,
        resnet50_weights=args.resnet50_weights,
        evaluate=args.evaluate,
        profile=args.profile,
    )
    print(json.dumps(written, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
