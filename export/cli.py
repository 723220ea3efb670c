"""python -m export --checkpoint checkpoints/resnet20.pt --out build/resnet20 [options]

Exports a checkpoint to ONNX, builds the engines, writes TensorRT-ready artifacts, and checks parity,
accuracy and fusion; prints a JSON summary (the whole summary is written to OUT/export.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnet_serve import cli
from resnet_serve.export.config import ENGINE_PRECISIONS, PRECISIONS, ExportConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--checkpoint", type=Path, help="resnet-serve checkpoint or torchvision state_dict (.pt/.pth)")
    p.add_argument("--arch", help="architecture (required for a bare state_dict or --random-weights)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="export an untrained --arch (serving/speed tests only; marked as random everywhere)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. build/resnet20")
    p.add_argument(
        "--engines",
        type=cli.csv,
        default=("onnxruntime", "openvino"),
        help=f"comma list from {', '.join(sorted(ENGINE_PRECISIONS))} (default onnxruntime,openvino)",
    )
    p.add_argument(
        "--precisions",
        type=cli.csv,
        default=("fp32", "int8"),
        help=f"comma list from {', '.join(PRECISIONS)} (default fp32,int8)",
    )
    p.add_argument(
        "--calibration-data", type=Path, help="folder of training images for INT8 (default: the CIFAR-10 train split)"
    )
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument(
        "--calibration-method",
        default="minmax",
        help="minmax, entropy, percentile, or auto "
        "(try all three, keep the best agreement with FP32 on held-out training images)",
    )
    p.add_argument("--openvino-preset", choices=("mixed", "performance"), default="mixed")
    p.add_argument(
        "--no-tensorrt-ready",
        dest="tensorrt_ready",
        action="store_false",
        help="skip the TensorRT-ready FP16/INT8 ONNX and trtexec recipe",
    )
    p.add_argument("--eval-data", type=Path, help="evaluation data (default: the CIFAR-10 test split if present)")
    p.add_argument("--eval-limit", type=int, help="evaluate on a seeded random subset of N images")
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip parity and accuracy")
    p.add_argument("--labels", type=Path, help="ImageNet class index JSON (imagenet_class_index.json)")
    p.add_argument("--threads", type=int, help="CPU threads per engine (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (onnxruntime-gpu: CUDA/TensorRT providers)")
    p.add_argument("--max-batch", type=int, default=256, help="largest batch of the TensorRT profile")
    p.add_argument("--repository", type=Path, help="also write Triton models for these engines into this repository")
    p.add_argument(
        "--gpu",
        dest="profile",
        action="store_const",
        const="gpu",
        default="cpu",
        help="repository profile for GPU hosts (KIND_GPU instances, CUDA providers, larger batches)",
    )
    p.add_argument("--sample-image", type=Path, help="image used for model warmup (default: a calibration image)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def export(args) -> int:
    from resnet_serve.export.calibration import warmup_image
    from resnet_serve.export.pipeline import run_export

    config = ExportConfig(
        checkpoint=args.checkpoint,
        out=args.out,
        arch=args.arch,
        random_weights=args.random_weights,
        engines=args.engines,
        precisions=args.precisions,
        calibration_data=args.calibration_data,
        calibration_size=args.calibration_size,
        calibration_method=args.calibration_method,
        openvino_preset=args.openvino_preset,
        tensorrt_ready=args.tensorrt_ready,
        eval_data=args.eval_data,
        eval_limit=args.eval_limit,
        evaluate=args.evaluate,
        labels=args.labels,
        threads=args.threads,
        device=args.device,
        max_batch=args.max_batch,
    )
    summary = run_export(config)
    if args.repository:
        from resnet_serve.export.repository import write_repository

        sample = args.sample_image or warmup_image(config, summary.model.spec)
        served = write_repository(args.repository, args.out, profile=args.profile, sample_image=sample)
        summary.repository = {
            "path": str(args.repository),
            "default": served.default,
            "engines": [e.key for e in served.engines],
        }
        summary.save()
    accuracy = summary.accuracy
    if isinstance(accuracy, dict):
        accuracy = {
            name: {k: r[k] for k in ("top1", "top5", "top1_delta") if k in r} for name, r in accuracy["results"].items()
        }
    print(
        json.dumps(
            {
                "model": summary.model.arch,
                "artifacts": [{"name": a.name, "path": a.path, "runs": a.runs} for a in summary.artifacts],
                "skipped": summary.skipped,
                "fallbacks": summary.fallbacks,
                "accuracy": accuracy,
                "out": str(args.out),
            },
            indent=2,
        )
    )
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), export, argv)
