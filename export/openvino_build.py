"""OpenVINO IR from the exported ONNX: FP32 (weights kept in f32) and INT8 through nncf."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from resnet_serve.engines.base import require
from resnet_serve.engines.openvino import openvino

log = logging.getLogger(__name__)


def convert_ir(onnx_path: Path, xml_path: Path) -> Path:
    """ONNX -> OpenVINO IR. ``compress_to_fp16=False``: OpenVINO would otherwise store f16 weights."""
    ov = openvino()
    model = ov.convert_model(str(onnx_path))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_ir(onnx_path: Path, xml_path: Path, calibration: np.ndarray, *, preset: str = "mixed") -> Path:
    """INT8 IR with nncf post-training quantization (per-channel weights; ``preset`` mixed = asymmetric
    activations, performance = symmetric), calibrated on the given images one at a time."""
    ov = openvino()
    nncf = require("nncf", "pip install nncf (OpenVINO INT8 quantization)")
    model = ov.convert_model(str(onnx_path))
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    quantized = nncf.quantize(model, dataset, preset=presets[preset], subset_size=len(calibration))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    return xml_path
