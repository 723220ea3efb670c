"""Model repository generation (configs, warmup data, labels), docker-compose and the TensorRT build script."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from resnet_serve.export.repository import write_repository

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def openvino_has_bf16() -> bool:
    from resnet_serve.engines.openvino import cpu_capabilities

    return "BF16" in cpu_capabilities()


def test_cpu_repository_configs(default_repository):
    models = default_repository / "models"
    names = sorted(p.name for p in models.iterdir() if p.is_dir())
    resnet50 = [f"{e}_{p}" for e in ("onnxruntime", "openvino") for p in ("fp32", "int8")]
    resnet50 += ["openvino_bf16"] if openvino_has_bf16() else []  # built only where the CPU runs bf16
    assert names == sorted(
        [
            "preprocess_cifar10",
            "preprocess_imagenet",
            "resnet20",
            "resnet50",
            *[
                f"resnet20_{e}_{p}{s}"
                for e in ("onnxruntime", "openvino")
                for p in ("fp32", "int8")
                for s in ("", "_classifier")
            ],
            *[f"resnet50_{engine}{s}" for engine in resnet50 for s in ("", "_classifier")],
        ]
    )
    for name in names:
        config = parse_config(models / name / "config.pbtxt")
        assert config.name == name and (models / name / "1").is_dir()
        if name.endswith("_classifier"):
            assert config.backend == "python" and config.dynamic_batching.preferred_batch_size
            assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
            assert (models / name / "1" / "engine" / "engine.json").is_file()
            classes = 10 if name.startswith("resnet20") else 1000
            assert len((models / name / "labels.txt").read_text().splitlines()) == classes
            warmup = (models / name / "warmup" / "sample").read_bytes()
            itemsize = 1 if config.input[0].data_type == model_config_pb2.TYPE_UINT8 else 4
            assert len(warmup) == itemsize * int(np.prod(config.input[0].dims))  # one real preprocessed image
            assert {w.batch_size for w in config.model_warmup} >= {1}
        elif name.startswith("preprocess"):
            sample = (models / name / "warmup" / "sample").read_bytes()
            (length,) = struct.unpack("<I", sample[:4])
            assert length == len(sample) - 4 and sample[4:6] == b"\xff\xd8"  # a length-prefixed real JPEG
        else:
            assert config.platform == "ensemble" and len(config.ensemble_scheduling.step) == 2
            assert config.output[0].label_filename == "labels.txt" and (models / name / "labels.txt").is_file()
    assert parse_config(models / "resnet20" / "config.pbtxt").ensemble_scheduling.step[1].model_name == (
        "resnet20_openvino_int8_classifier"
    )


def test_gpu_profile_uses_kind_gpu_and_writes_tensorrt_models(default_repository, tmp_path):
    written = write_repository(tmp_path / "gpu", default_repository / "build" / "resnet20", profile="gpu")
    assert written.default == "tensorrt-int8"
    assert "openvino-fp32" not in [e.key for e in written.engines]  # CPU-only engine
    ort = parse_config(tmp_path / "gpu" / "resnet20_onnxruntime_fp32_classifier" / "config.pbtxt")
    assert ort.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    trt = parse_config(tmp_path / "gpu" / "resnet20_tensorrt_int8_classifier" / "config.pbtxt")
    assert trt.platform == "tensorrt_plan" and list(trt.instance_group[0].profile) == ["0"]
    assert trt.max_batch_size == 256  # = the plan's optimization-profile maximum (export --max-batch)
    engine = (tmp_path / "gpu" / "resnet20_onnxruntime_fp32_classifier" / "1" / "engine" / "engine.json").read_text()
    assert '"device": "cuda"' in engine


def test_docker_compose_file_is_valid_and_its_mounts_exist():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"trt-build", "triton", "benchmark"}
    assert services["triton"]["build"]["dockerfile"] == "server/Dockerfile"
    assert all(port.startswith("127.0.0.1:") for port in services["triton"]["ports"])  # loopback by default
    assert services["triton"]["command"][:3] == ["python3", "-m", "resnet_serve.server"]  # supervised, locked
    assert services["triton"]["shm_size"] and "resnet_serve.server.health" in services["triton"]["healthcheck"]["test"]
    for name in ("trt-build", "triton"):
        device = services[name]["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["trt-build"]["image"].startswith("nvcr.io/nvidia/tensorrt:")
    assert (REPO_ROOT / services["trt-build"]["command"][1]).is_file()
    # the benchmark service runs in the server image: the torch-free served suite (run for real in
    # test_benchmarks.py::test_docker_compose_benchmark_service_runs_without_torch)
    assert services["benchmark"]["image"] == services["triton"]["image"]
    assert services["benchmark"]["command"][:5] == ["python3", "-m", "resnet_serve.benchmarks", "--suite", "served"]
    if shutil.which("docker-compose") is None:
        pytest.skip(
            "Debian's docker-compose is not installed (scripts/setup.sh installs it as root); "
            "the structural checks above passed"
        )
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    for name, service in yaml.safe_load(result.stdout)["services"].items():  # paths and variables resolved
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if Path(host) == REPO_ROOT / "build" / "keys":
                continue  # the server's API key folder: docker creates it, the launcher writes the key there
            assert Path(host).exists(), f"{name} mounts {host}, which does not exist"


def test_the_server_image_installs_every_package_folder():
    """server/Dockerfile copies each folder pyproject.toml installs, and installs the package itself."""
    import tomllib

    dockerfile = (REPO_ROOT / "server" / "Dockerfile").read_text()
    folders = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for folder in folders:
        assert f"COPY {folder} ./{folder}" in dockerfile, f"server/Dockerfile does not copy {folder}/"
    installs = " ".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert "pip install --no-cache-dir --no-deps ." in installs and "torch" not in installs


def test_trt_build_script_installs_plans(default_repository, tmp_path):
    """scripts/trt_build.sh with a stand-in trtexec that writes the --saveEngine file."""
    work = tmp_path / "work"
    shutil.copytree(REPO_ROOT / "scripts", work / "scripts")
    shutil.copytree(default_repository / "build" / "resnet20" / "tensorrt", work / "build" / "resnet20" / "tensorrt")
    summary_dir = default_repository / "build" / "resnet20"
    write_repository(work / "model_repository", summary_dir, profile="gpu")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text(
        '#!/usr/bin/env bash\nfor a in "$@"; do case $a in --saveEngine=*) echo plan > "${a#--saveEngine=}";; '
        'esac; done\necho "trtexec $*" >> "$TRTEXEC_LOG"\n'
    )
    (bin_dir / "trtexec").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TRTEXEC_LOG": str(tmp_path / "calls.log")}
    result = subprocess.run(
        ["bash", "scripts/trt_build.sh", "model_repository"], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for precision in ("fp16", "int8"):
        assert (work / "model_repository" / f"resnet20_tensorrt_{precision}_classifier" / "1" / "model.plan").is_file()
    calls = (tmp_path / "calls.log").read_text()
    assert "--stronglyTyped" in calls and "--maxShapes=input:256x3x32x32" in calls


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_write_replaces_each_model_whole_and_leaves_no_staging_folder(default_repository, tmp_path):
    export_dir = default_repository / "build" / "resnet20"
    repo = tmp_path / "repo"
    write_repository(repo, export_dir, engines=("onnxruntime-fp32",))
    classifier = repo / "resnet20_onnxruntime_fp32_classifier"
    before = classifier.stat().st_ino
    (tmp_path / ".repo-staging-999999999-left").mkdir()  # left by a killed write (no such process)
    (tmp_path / ".repo-staging-1-live").mkdir()  # a running process's: kept
    written = write_repository(repo, export_dir, engines=("onnxruntime-fp32",))
    assert classifier.stat().st_ino != before  # a new folder took its place
    assert (classifier / "1" / "engine" / "engine.json").is_file() and written.default == "onnxruntime-fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".repo-staging-1-live", "repo"]
    assert sorted(p.name for p in repo.iterdir()) == [
        "index.json",
        "preprocess_cifar10",
        "resnet20",
        "resnet20_onnxruntime_fp32",
        "resnet20_onnxruntime_fp32_classifier",
    ]


def test_a_write_stopped_midway_leaves_the_repository_as_it_was(default_repository, tmp_path, monkeypatch):
    """Models are written beside the repository and moved in when all are written: before, a Ctrl-C while an
    engine was copied left its model without the engine (and the ensembles before it rewritten)."""
    from resnet_serve.export.repository import ServedModelFiles

    export_dir = default_repository / "build" / "resnet20"
    repo = tmp_path / "repo"
    engines = ("onnxruntime-fp32", "onnxruntime-int8")
    write_repository(repo, export_dir, engines=engines, default_engine="onnxruntime-int8")
    before = _snapshot(repo)
    copy = ServedModelFiles.copy_engine
    calls = []

    def interrupted(self, key, directory, device="cpu"):
        calls.append(key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        copy(self, key, directory, device)

    monkeypatch.setattr(ServedModelFiles, "copy_engine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_repository(repo, export_dir, engines=engines, default_engine="onnxruntime-fp32")
    assert calls == ["onnxruntime-fp32", "onnxruntime-int8"]
    assert _snapshot(repo) == before  # the default still onnxruntime-int8, every engine file in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # the staging folder removed


def test_a_repository_whose_parent_cannot_take_the_staging_folder_is_written_in_place(
    default_repository, tmp_path, monkeypatch, caplog
):
    from resnet_serve.export import repository as repository_module

    monkeypatch.setattr(repository_module.os, "access", lambda path, mode: False)  # as a read-only parent
    repo = tmp_path / "repo"
    write_repository(repo, default_repository / "build" / "resnet20", engines=("onnxruntime-fp32",))
    assert (repo / "resnet20_onnxruntime_fp32_classifier" / "1" / "engine" / "engine.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    assert "is a mount point or its parent is not writable: writing its models in place" in caplog.text
