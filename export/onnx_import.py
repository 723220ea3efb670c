"""ONNX in: a classifier exported elsewhere, checked and normalised so every engine, report and the
server treat it like one of ours.

Checks: one float32 input [N, 3, H, W] with a square H = W, one float32 output [N, classes]. Then the
input and output are renamed to this project's tensor names, the batch dimension is made dynamic
(a fixed batch of 1 is common), stale intermediate shapes are dropped, and ONNX Runtime proves the
result: every image of a batch of 3 must get the logits it gets alone, which fails on graphs that
hard-code the batch (e.g. a Reshape to [1, -1]).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine
from resnet_serve.export.onnx_export import ExportError, describe_io
from resnet_serve.resnets.spec import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)


@dataclass
class ImportedOnnx:
    path: Path  # the normalised graph (OUT/model.onnx)
    image_size: int
    num_classes: int
    info: dict


def _dims(value) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]


def _rename(graph, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def import_onnx(source: Path, out: Path, threads: int | None = None) -> ImportedOnnx:
    if not Path(source).is_file():
        raise ExportError(f"ONNX model {source} not found")
    try:
        model = onnx.load(str(source))
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, DecodeError, OSError, ValueError) as exc:
        raise ExportError(f"{source} is not a valid ONNX model ({exc})") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(
            f"{source} has {len(inputs)} inputs and {len(graph.output)} outputs; a classifier here takes one image "
            "batch [N, 3, H, W] and returns one logits tensor [N, classes]"
        )
    inp, out_value = inputs[0], graph.output[0]
    in_dims, out_dims = _dims(inp), _dims(out_value)
    for value, dims, rank in ((inp, in_dims, 4), (out_value, out_dims, 2)):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            raise ExportError(f"{source}: {value.name!r} is {dtype}; float32 inputs and outputs are expected")
        if len(dims) != rank:
            raise ExportError(f"{source}: {value.name!r} has shape {dims}; expected rank {rank}")
    _, channels, height, width = in_dims
    if channels != 3 or not isinstance(height, int) or height != width:
        raise ExportError(
            f"{source}: input {inp.name!r} has shape {in_dims}; expected [N, 3, S, S] with a fixed square size S "
            "(RGB, channels first)"
        )
    if not isinstance(out_dims[1], int):
        raise ExportError(f"{source}: output {out_value.name!r} has shape {out_dims}; the class count must be fixed")
    fixed_batch = in_dims[0] if isinstance(in_dims[0], int) else None
    as_given = f"{inp.name} {in_dims} -> {out_value.name} {out_dims}"
    _rename(graph, inp.name, INPUT_NAME)
    _rename(graph, out_value.name, OUTPUT_NAME)
    inp.name, out_value.name = INPUT_NAME, OUTPUT_NAME
    for value in (inp, out_value):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del graph.value_info[:]  # intermediate shapes may carry the old fixed batch
    path = out / "model.onnx"
    onnx.save(model, str(path))
    engine = OnnxRuntimeEngine(path, threads=threads)
    images = np.random.default_rng(0).standard_normal((3, 3, height, height), dtype=np.float32)
    try:
        together = engine.infer(images)
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types; the reason is kept
        raise ExportError(
            f"{source} does not run with a batch of 3 ({exc}); the graph hard-codes its batch size "
            "(e.g. a Reshape to [1, -1]): export it again with a dynamic batch dimension"
        ) from None
    alone = np.concatenate([engine.infer(images[i : i + 1]) for i in range(3)])
    if together.shape != alone.shape or not np.allclose(together, alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max()):
        raise ExportError(
            f"{source} gives different logits to an image alone and in a batch; the graph mixes images across the "
            "batch dimension: export it again with a dynamic batch dimension"
        )
    info = {
        "source": str(source),
        "path": str(path),
        "io_as_given": as_given,
        "io": describe_io(onnx.load(str(path))),
        "fixed_batch_made_dynamic": fixed_batch,
        "opset": model.opset_import[0].version if model.opset_import else None,
    }
    log.info("imported %s: %s", source, info["io"])
    return ImportedOnnx(path, height, int(out_dims[1]), info)
