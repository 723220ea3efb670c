"""OpenVINO IR from the exported ONNX: FP32 (weights kept in f32) and INT8 through nncf."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError("the openvino engine needs the openvino package: pip install openvino") from exc
    return ov


def convert_ir(onnx_path: Path, xml_path: Path) -> Path:
    """ONNX -> OpenVINO IR. ``compress_to_fp16=False``: OpenVINO would otherwise store f16 weights."""
    ov = _openvino()
    model = ov.convert_model(str(onnx_path))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_ir(onnx_path: Path, xml_path: Path, calibration: np.ndarray, *, preset: str = "mixed") -> Path:
    """INT8 IR with nncf post-training quantization (per-channel weights; ``preset`` mixed = asymmetric
    activations, performance = symmetric), calibrated on the given images one at a time."""
    ov = _openvino()
    try:
        import nncf
    except ImportError as exc:
        raise ImportError("OpenVINO INT8 needs nncf: pip install nncf") from exc
    model = ov.convert_model(str(onnx_path))
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    quantized = nncf.quantize(model, dataset, preset=presets[preset], subset_size=len(calibration))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    return xml_path


def cpu_capabilities() -> list[str]:
    return list(_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
