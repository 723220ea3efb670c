"""The prepared GPU check runs every section's code on the CPU (Triton's interpreter, tiny models), so a call
on a GPU host cannot fail on a typo; and what it carries fits one device call."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_serve.benchmarks import gpu_check


@pytest.fixture(scope="module")
def pack(tmp_path_factory, cifar_jpg, imagenet_sample):
    folder = tmp_path_factory.mktemp("gpu") / ".gpu"
    assert gpu_check.main(["pack", "--out", str(folder), "--no-server", "--no-wheels"]) == 0
    return folder


def test_the_data_pack_holds_the_test_split_in_one_small_file(pack):
    data = np.load(pack / gpu_check.DATA_FILE)
    assert len(data["test_labels"]) == 10_000 and np.bincount(data["test_labels"]).tolist() == [1000] * 10
    assert len(data["train_labels"]) == 512 and len(data["imagenet_offsets"]) == 65
    size_mib = (pack / gpu_check.DATA_FILE).stat().st_size / 2**20
    assert 5 < size_mib < 20, size_mib  # JPEG bytes as they are: the whole split in ~10 MiB
    first = gpu_check._split(data["test_jpeg"], data["test_offsets"])[0]
    assert first[:2] == b"\xff\xd8"  # a JPEG, byte for byte


@pytest.mark.slow
def test_every_section_runs_on_the_cpu(pack, tmp_path):
    out = tmp_path / "out"
    assert gpu_check.main(["run", str(out), "--pack", str(pack), "--tiny", "--budget-s", "900"]) == 0
    results = json.loads((out / "gpu_check.json").read_text())
    sections = results["sections"]
    for name in ("environment", "build", "parity", "speed", "latency", "layers"):
        assert sections[name]["status"] == "ok", (name, sections[name])
    for name in ("served", "compile"):  # they need the GPU and the server image
        assert sections[name] == {"status": "skipped", "reason": "needs a CUDA GPU"}
    parity = sections["parity"]["results"]
    assert set(parity) == {"pytorch-fp32", "gpu-fp16", "gpu-int8"} and parity["gpu-fp16"]["top1_agreement_pct"] == 100.0
    build = sections["build"]
    assert build["cifar"]["arch"] == "resnet20" and set(build["imagenet"]["engines"]) == {"gpu-fp16", "gpu-int8"}
    assert any(f["step"] == "gpu-fp16 autotune" for f in build["cifar"]["fallbacks"])  # no GPU to tune on, said so
    layers = sections["layers"]
    assert len(layers["rows"]) == 20 and all(r["ms"] > 0 and r["tflop_s"] > 0 for r in layers["rows"])  # ResNet-18
    report = (out / "gpu_check.md").read_text()
    assert "## Parity: resnet20" in report and "## resnet18 FP16 per convolution" in report
