"""A non-editable install (a wheel in a fresh venv) works from outside the checkout, and owns one import name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cifar_test_files

pytestmark = pytest.mark.slow


def run(args, cwd, timeout=300, **kwargs):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with resnet-serve installed from a wheel (no checkout on any path). Its dependencies are
    this environment's, reached through a .pth line (no download); resnet_serve itself is the wheel's."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy, so the wheel build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for folder in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].values():
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "reports"))
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root / "wheel"),
            ".",
        ],
        source,
    )
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], root)
    site = Path(
        run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
        ).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((root / "wheel").glob("resnet_serve-*.whl"))
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], root)
    (root / "elsewhere").mkdir()
    return root


def test_the_wheel_is_the_package_that_runs(installed):
    python = installed / "venv" / "bin" / "python"
    where = run([str(python), "-c", "import resnet_serve.client as c; print(c.__file__)"], installed / "elsewhere")
    assert where.startswith(str(installed / "venv")), where
    # one import name: the generic ones stay unclaimed
    for name in ("client", "server", "export", "benchmarks", "engines", "resnets"):
        probe = subprocess.run([str(python), "-c", f"import {name}"], cwd=installed / "elsewhere", capture_output=True)
        assert probe.returncode != 0, f"the install claims the top-level name {name!r}"


@pytest.mark.parametrize(
    "command",
    [
        ["python", "-m", "resnet_serve.client", "--help"],
        ["python", "-m", "resnet_serve.server", "--help"],
        ["python", "-m", "resnet_serve.export", "--help"],
        ["python", "-m", "resnet_serve.benchmarks", "--help"],
        ["resnet-serve", "--help"],
        ["resnet-serve", "client", "classify", "--help"],
        ["resnet-serve", "serve", "--help"],
    ],
)
def test_commands_run_from_another_directory(installed, command):
    out = run([str(installed / "venv" / "bin" / command[0]), *command[1:]], installed / "elsewhere")
    assert "usage:" in out


def test_export_serve_and_classify_from_the_install(installed, cifar_jpg):
    """The installed console script exports a model and writes a repository; the installed server and
    client serve and classify it (the Triton stubs import the wheel's code)."""
    bin_dir, cwd = installed / "venv" / "bin", installed / "elsewhere"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(
        [str(bin_dir / "resnet-serve"), "export", "--checkpoint", str(REPO_ROOT / "checkpoints" / "resnet20.pt")]
        + ["--out", "build/resnet20", "--engines", "onnxruntime", "--precisions", "fp32", "--no-eval"]
        + ["--no-tensorrt-ready", "--repository", "repo"],
        cwd,
        env=env,
    )
    files = [str(f) for f in cifar_test_files(cifar_jpg, 1)]
    code = (
        "import sys; from resnet_serve.server import running; from resnet_serve.client import Classifier\n"
        "with running('repo', http_port=0, grpc_port=0, metrics_port=0) as server:\n"
        "    with Classifier(server.grpc_url, model='resnet20') as clf:\n"
        "        print([p[0].label for p in clf.classify(sys.argv[1:], top_k=1)])\n"
    )
    out = run([str(bin_dir / "python"), "-c", code, *files], cwd, env=env)
    assert out.strip().startswith("[") and out.count("'") == 2 * len(files)
