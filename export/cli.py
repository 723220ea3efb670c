"""python -m export (--checkpoint FILE [--arch NAME] | --onnx FILE) --out DIR [options]

Exports a checkpoint (this project's, or a training checkpoint / state_dict from other code) or an
ONNX classifier, builds the engines, writes TensorRT-ready artifacts, and checks parity, accuracy and
fusion; prints a JSON summary (the whole summary is written to OUT/export.json). The model contract
(classes, input and resize size, interpolation, mean/std, labels) comes from the flags, else what the
checkpoint records, else the architecture's defaults; the summary says which for every field.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from resnet_serve import cli
from resnet_serve.export.config import ENGINE_PRECISIONS, PRECISIONS, ExportConfig
from resnet_serve.resnets.contract import ContractFlags
from resnet_serve.resnets.spec import INTERPOLATIONS


def floats3(value: str) -> tuple[float, float, float]:
    """argparse type: three comma-separated numbers (R,G,B)."""
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(math.isfinite(v) for v in parts):
        raise argparse.ArgumentTypeError(f"expected three comma-separated finite numbers R,G,B, got {value!r}")
    return parts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[1].replace("\n", " "))
    model = p.add_argument_group("the model")
    model.add_argument(
        "--checkpoint",
        type=Path,
        help="a resnet-serve checkpoint, a state_dict or a training checkpoint from other code (.pt/.pth)",
    )
    model.add_argument("--onnx", type=Path, help="an ONNX classifier exported elsewhere ([N, 3, S, S] -> [N, classes])")
    model.add_argument("--arch", help="architecture (required for checkpoints from other code and --random-weights)")
    model.add_argument(
        "--option-a",
        choices=("after", "split"),
        help="option-A shortcuts: zero channels after the identity (this project) or split before/after it "
        "(code that pads planes//4 on each side); required for other code's CIFAR ResNets",
    )
    model.add_argument("--weights-key", help="the entry of a training checkpoint that holds the weights, if several do")
    model.add_argument("--name", help="the served model's name (default: the architecture, or the ONNX file's name)")
    contract = p.add_argument_group(
        "the model contract (default: what the checkpoint records, else the architecture's)"
    )
    contract.add_argument("--preset", choices=("cifar10", "imagenet"), help="that dataset's sizes and mean/std")
    contract.add_argument("--dataset", help="a name for the data the model was trained on")
    contract.add_argument("--num-classes", type=cli.positive_int, help="checked against the model's head")
    contract.add_argument("--image-size", type=cli.positive_int, help="side of the square network input")
    contract.add_argument(
        "--resize-size", type=cli.positive_int, help="the shorter side is resized to this before the center crop"
    )
    contract.add_argument("--interpolation", choices=tuple(INTERPOLATIONS), help="resampling of the resize")
    contract.add_argument("--mean", type=floats3, help="per-channel mean on the 0..1 scale, R,G,B")
    contract.add_argument("--std", type=floats3, help="per-channel std on the 0..1 scale, R,G,B")
    contract.add_argument(
        "--labels",
        type=Path,
        help="label names: a text file (one per line) or JSON (a list, {index: name} or an ImageNet class index)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="export an untrained --arch (serving/speed tests only; marked as random everywhere)",
    )
    p.add_argument("--out", type=cli.out_dir, required=True, help="output folder, e.g. build/resnet20")
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
    p.add_argument("--calibration-size", type=cli.positive_int, default=512)
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
    p.add_argument("--eval-limit", type=cli.positive_int, help="evaluate on a seeded random subset of N images")
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip parity and accuracy")
    p.add_argument("--threads", type=cli.positive_int, help="CPU threads per engine (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (onnxruntime-gpu: CUDA/TensorRT providers)")
    p.add_argument("--max-batch", type=cli.positive_int, default=256, help="largest batch of the TensorRT profile")
    p.add_argument(
        "--gpu-tune",
        choices=("full", "quick"),
        default="full",
        help="GPU engine autotuning: every candidate tile configuration, or four (a build with little time)",
    )
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
        onnx=args.onnx,
        name=args.name,
        contract=ContractFlags(
            dataset=args.dataset,
            num_classes=args.num_classes,
            image_size=args.image_size,
            resize_size=args.resize_size,
            interpolation=args.interpolation,
            mean=args.mean,
            std=args.std,
        ),
        preset=args.preset,
        option_a=args.option_a,
        weights_key=args.weights_key,
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
        gpu_tune=args.gpu_tune,
    )
    if args.repository:  # one the models cannot go into fails now, not after the export
        from resnet_serve.export.repository import writable_repository

        writable_repository(args.repository)
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
                "model": summary.model.name,
                "source": f"{summary.model.source} ({summary.model.source_kind})",
                "contract": {
                    key: f"{value} (from {summary.model.contract_sources.get(key, '?')})"
                    for key, value in summary.model.contract.items()
                },
                "labels": summary.model.labels_source,
                "option_a": summary.model.option_a and f"{summary.model.option_a} ({summary.model.option_a_source})",
                "option_a_check": summary.option_a_check,
                "import": summary.model.import_report,
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
