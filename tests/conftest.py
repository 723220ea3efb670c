"""Shared fixtures: the ../shared data beside the checkout (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from resnet_serve import settings

# Triton-lang kernels (the GPU engine) run in Triton's interpreter where there is no CUDA GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
# the one data-root setting, pinned for this session (and the commands tests start) wherever pytest runs from
if (REPO_ROOT.parent / "shared" / "data").is_dir():
    os.environ.setdefault(settings.DATA_ENV, str(REPO_ROOT.parent / "shared" / "data"))
SHARED_DATA = settings.data_root()
CIFAR_JPG = SHARED_DATA / "cifar-10-jpg"
CIFAR_EXACT = SHARED_DATA / "cifar-10-exact-subset"
IMAGENET_SAMPLE = SHARED_DATA / "imagenet-sample"
CHECKPOINTS = REPO_ROOT / "checkpoints"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"{path} is absent (the shared data set lives in ../shared/data beside the checkout; "
            f"set {settings.DATA_ENV} to point elsewhere)"
        )
    return path


@pytest.fixture(scope="session")
def cifar_jpg() -> Path:
    return _require(CIFAR_JPG)


@pytest.fixture(scope="session")
def cifar_exact() -> Path:
    return _require(CIFAR_EXACT)


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    return _require(IMAGENET_SAMPLE)


def cifar_test_files(cifar_jpg: Path, per_class: int) -> list[Path]:
    """The first ``per_class`` JPEGs of every class of the cifar-10-jpg test split, in a fixed order."""
    return [p for cls in sorted((cifar_jpg / "test").iterdir()) for p in sorted(cls.glob("*.jpg"))[:per_class]]


@pytest.fixture(scope="session")
def cifar_test_set(cifar_jpg):
    """The whole cifar-10-jpg test split, decoded once per test session."""
    from resnet_serve.resnets.data import load_cifar10

    return load_cifar10(cifar_jpg, "test")


def committed_checkpoint(arch: str) -> Path:
    """A trained checkpoint committed in checkpoints/ (a failure, not a skip, when it is missing)."""
    path = CHECKPOINTS / f"{arch}.pt"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the trained {arch} checkpoint is committed with the project")
    return path


@pytest.fixture(scope="session")
def resnet20_checkpoint() -> Path:
    return committed_checkpoint("resnet20")


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need a CUDA GPU: skip them, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def default_repository(tmp_path_factory, resnet20_checkpoint, cifar_jpg) -> Path:
    """The default model repository (ResNet-20 FP32/INT8 on ORT and OpenVINO, random ResNet-50), built
    once per test session; ``<root>/models`` is the repository, ``<root>/build`` the exported engines."""
    from resnet_serve.export.default_repository import build_default_repository

    root = tmp_path_factory.mktemp("default-repository")
    build_default_repository(
        root / "models",
        root / "build",
        resnet20_checkpoint=resnet20_checkpoint,
        cifar_dir=cifar_jpg,
        imagenet_dir=IMAGENET_SAMPLE if IMAGENET_SAMPLE.is_dir() else None,
    )
    return root


@pytest.fixture(scope="session")
def triton(default_repository):
    """The real Triton server on free loopback ports, serving the default repository."""
    from resnet_serve.server import running

    with running(default_repository / "models", http_port=0, grpc_port=0, metrics_port=0) as server:
        yield server


@pytest.fixture
def small_repository(default_repository, tmp_path) -> Path:
    """A repository with one ensemble (ResNet-20 on ONNX Runtime FP32): for tests that start their own server."""
    import shutil

    repo = tmp_path / "small-repository"
    for name in ("preprocess_cifar10", "resnet20_onnxruntime_fp32_classifier", "resnet20_onnxruntime_fp32"):
        shutil.copytree(default_repository / "models" / name, repo / name)
    return repo
