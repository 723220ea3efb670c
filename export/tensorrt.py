"""TensorRT-ready artifacts and, where the ``tensorrt`` package imports, the plan itself.

TensorRT takes precision from the ONNX graph ("strongly typed" networks): the FP16 ONNX has
float16 weights, the INT8 ONNX has explicit symmetric Q/DQ nodes. The recipe written beside them
builds both with ``trtexec`` inside NVIDIA's TensorRT container (see docker-compose.yml).
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from resnet_serve.errors import MissingToolError, ResnetServeError

log = logging.getLogger(__name__)

TRT_IMAGE = "nvcr.io/nvidia/tensorrt:25.10-py3"


class TensorRTUnavailable(MissingToolError):
    """TensorRT does not import here: the message gives the trtexec command to run on a GPU host."""


class TensorRTBuildError(ResnetServeError):
    """TensorRT imported but could not parse or build the graph; its own messages are included."""


def shape_profile(input_name: str, input_shape: tuple[int, int, int], max_batch: int, opt_batch: int) -> dict:
    dims = "x".join(str(d) for d in input_shape)
    return {
        "min": f"{input_name}:1x{dims}",
        "opt": f"{input_name}:{opt_batch}x{dims}",
        "max": f"{input_name}:{max_batch}x{dims}",
    }


def trtexec_command(onnx_file: str, plan_file: str, profile: dict, timing_cache: str = "timing.cache") -> list[str]:
    return [
        "trtexec",
        f"--onnx={onnx_file}",
        f"--saveEngine={plan_file}",
        "--stronglyTyped",
        f"--minShapes={profile['min']}",
        f"--optShapes={profile['opt']}",
        f"--maxShapes={profile['max']}",
        f"--timingCacheFile={timing_cache}",
        "--skipInference",
    ]


def write_recipe(
    out_dir: Path,
    artifacts: dict[str, str],
    input_name: str,
    input_shape: tuple[int, int, int],
    *,
    max_batch: int,
    opt_batch: int,
) -> Path:
    """``trtexec.sh`` + ``recipe.json`` beside the TensorRT-ready ONNX files."""
    profile = shape_profile(input_name, input_shape, max_batch, opt_batch)
    commands = {
        precision: trtexec_command(onnx_file, f"model_{precision}.plan", profile)
        for precision, onnx_file in artifacts.items()
    }
    script = [
        "#!/usr/bin/env bash",
        "# Build TensorRT plans from the TensorRT-ready ONNX files in this folder. Run on a GPU host, e.g.",
        f'#   docker run --rm --gpus all -v "$PWD":/work -w /work {TRT_IMAGE} bash trtexec.sh',
        "# Precision comes from the ONNX types (--stronglyTyped): FP16 weights, explicit INT8 Q/DQ.",
        "# The timing cache makes rebuilds fast; plans are specific to the GPU and TensorRT version.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ] + [shlex.join(cmd) for cmd in commands.values()]
    (out_dir / "trtexec.sh").write_text("\n".join(script) + "\n")
    (out_dir / "trtexec.sh").chmod(0o755)
    recipe = {
        "container": TRT_IMAGE,
        "profile": profile,
        "commands": {k: shlex.join(v) for k, v in commands.items()},
        "timing_cache": "timing.cache",
        "artifacts": artifacts,
    }
    path = out_dir / "recipe.json"
    path.write_text(json.dumps(recipe, indent=2) + "\n")
    return path


def build_plan(onnx_path: Path, plan_path: Path, profile: dict, timing_cache: Path) -> Path:
    """Build a plan with the TensorRT Python API (strongly typed, one optimization profile)."""
    try:
        import tensorrt as trt
    except ImportError:
        command = shlex.join(trtexec_command(str(onnx_path), str(plan_path), profile))
        raise TensorRTUnavailable(
            "the tensorrt package is not importable here (TensorRT installs from NVIDIA's index and needs a "
            f"CUDA GPU). Build the plan on a GPU host instead:\n  {command}\n"
            "or run the `trt-build` service of docker-compose.yml"
        ) from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT failed to parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt = builder.create_optimization_profile()
    name = profile["min"].split(":")[0]
    shapes = [tuple(int(d) for d in profile[k].split(":")[1].split("x")) for k in ("min", "opt", "max")]
    opt.set_shape(name, *shapes)
    config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTBuildError(f"TensorRT could not build {onnx_path}; see the log above")
    plan_path.write_bytes(bytes(plan))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path
