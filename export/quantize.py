"""INT8 and FP16 ONNX graphs.

* ``quantize_onnx``: ONNX Runtime post-training static quantization in QDQ form, per-channel
  symmetric INT8 weights. For the CPU engine the activations are asymmetric **uint8**: measured
  here, ORT then runs QLinearConv + QLinearAdd (residual adds stay quantized; ReLU disappears into
  the uint8 range), while int8 activations leave the adds and ReLUs in float, 3-4x slower.
  Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's u8s8 kernels
  add pairs of u8 x s8 products in int16 (``pmaddubsw``), which saturates for full-range weights
  against large activations. Measured on the committed ResNet-20: 86.59% top-1 with 8-bit weights
  (the stem convolution, fed full-range pixels, saturates), 88.08% with 7-bit ones (FP32: 88.05%).
* ``tensorrt_int8``: the explicit-quantization graph TensorRT wants: symmetric int8 activations
  (zero-point 0), per-channel weights, Q/DQ on both inputs of every residual Add, computed from the
  same calibration ranges (``calibrate`` writes them once to a cache) as the CPU INT8 engine.
* ``to_fp16``: weights and compute in float16, float32 input/output (Casts at the graph edges).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")


def _ort_quantization():
    from onnxruntime import quantization

    return quantization


class _Reader:
    """ORT CalibrationDataReader over an in-memory float32 array."""

    def __init__(self, data: np.ndarray, input_name: str, batch_size: int = 32) -> None:
        self.batches = [{input_name: data[i : i + batch_size]} for i in range(0, len(data), batch_size)]
        self.index = 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return self.batches[self.index - 1]

    def rewind(self) -> None:
        self.index = 0


def preprocess_for_quantization(src: Path, dst: Path) -> Path:
    """ORT's recommended pre-processing: shape inference and graph clean-up before QDQ insertion."""
    _ort_quantization().shape_inference.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


# Histogram settings: ORT's quantize_static would run the entropy calibrator with 128 histogram bins
# for 128 quantized bins, which leaves it a single candidate threshold (= min/max). Calibrating here
# with 2048 bins (as TensorRT's entropy calibrator does) gives entropy and percentile real choices.
CALIBRATOR_OPTIONS = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}


def _method(q, method: str):
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[method]


def calibrate(
    src: Path, calibration: np.ndarray, method: str, cache: Path, *, input_name: str, chunk: int = 64
) -> Path:
    """Collect activation ranges of ``src`` over ``calibration`` and save them as an ORT calibration cache.

    Images go through in chunks, so the calibrator never holds every activation of every image
    (ResNet-50 at 224x224 would need tens of GB).
    """
    q = _ort_quantization()
    with tempfile.TemporaryDirectory(prefix="calibrate.") as tmp:
        calibrator = q.create_calibrator(
            Path(src),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(q, method),
            extra_options=CALIBRATOR_OPTIONS[method],
        )
        for start in range(0, len(calibration), chunk):
            calibrator.collect_data(_Reader(calibration[start : start + chunk], input_name))
        ranges = calibrator.compute_data()
        del calibrator
    q.save_tensors_data(ranges, cache)
    return cache


def quantize_onnx(src: Path, dst: Path, method: str, cache: Path, *, symmetric_activations: bool = False) -> Path:
    """Static INT8 QDQ quantization of ``src`` (already pre-processed) with the ranges in ``cache``."""
    q = _ort_quantization()
    extra = {"WeightSymmetric": True, "ActivationSymmetric": symmetric_activations}
    q.quantize_static(
        str(src),
        str(dst),
        None,
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        reduce_range=not symmetric_activations,  # 7-bit weights for the CPU's u8s8 kernels (see above)
        activation_type=q.QuantType.QInt8 if symmetric_activations else q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=_method(q, method),
        extra_options=extra,
        calibration_cache_path=str(cache),
    )
    return dst


def check_tensorrt_qdq(model_path: Path) -> dict:
    """Facts about an explicit-quantization graph: zero-points, per-channel weights, Q/DQ at the adds."""
    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    zero_points = [
        inits[n.input[2]]
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits
    ]
    # activations are what QuantizeLinear nodes quantize at run time (weights and biases are constants)
    activation_dtypes = sorted(
        {
            str(inits[n.input[2]].dtype)
            for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and len(n.input) > 2 and n.input[2] in inits
        }
    )
    per_channel = sum(
        1
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].ndim == 4
        and inits[n.input[1]].size > 1
    )
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    adds_with_dq = sum(
        all(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input) for n in adds
    )
    return {
        "all_zero_points_zero": bool(zero_points) and all(np.all(z == 0) for z in zero_points),
        "activation_dtype": activation_dtypes[0] if len(activation_dtypes) == 1 else activation_dtypes or None,
        "per_channel_conv_weights": per_channel,
        "convs": sum(n.op_type == "Conv" for n in model.graph.node),
        "residual_adds": len(adds),
        "residual_adds_with_qdq_inputs": adds_with_dq,
    }


def to_fp16(src: Path, dst: Path) -> Path:
    """Float16 weights and compute, float32 input and output (one Cast at each end)."""
    model = onnx.load(str(src))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    inp, out = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.input[:] = [f"{inp}_fp16" if name == inp else name for name in node.input]
        node.output[:] = [f"{out}_fp16" if name == out else name for name in node.output]
    graph.node.insert(0, helper.make_node("Cast", [inp], [f"{inp}_fp16"], to=TensorProto.FLOAT16, name="cast_in"))
    graph.node.append(helper.make_node("Cast", [f"{out}_fp16"], [out], to=TensorProto.FLOAT, name="cast_out"))
    for node in graph.node:  # constants inside Constant nodes (e.g. Reshape shapes are int64 and stay)
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst
