"""Where a result came from: hardware, library versions and the git commit, recorded with every result.

torch-free: the GPU is named by torch only if the process already imported it, else by nvidia-smi.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import resnet_serve

# the code's own folder: a checkout has git history there, an installed copy has only its version
CODE_DIR = Path(resnet_serve.__file__).resolve().parent

PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "nvidia-pytriton", "tritonclient", "pillow")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow), not the
    machine's total."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_flags() -> list[str]:
    """The instruction-set flags the OS reports for this CPU (empty where /proc/cpuinfo is absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


# the instruction-set extensions that decide which precisions run natively (names as /proc/cpuinfo gives them)
CAPABILITY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def host_capabilities() -> dict:
    """What the tune step needs to know about this machine, from the OS: the CPU, the cores this process
    may use, the precision-relevant instruction sets, and the GPU if any."""
    flags = set(cpu_flags())
    present = [f for f in CAPABILITY_FLAGS if f in flags]
    return {
        "cpu_model": cpu_model(),
        "cores": available_cores(),
        "flags": present,
        "int8_dot_product": bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),  # VNNI or AMX
        "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "gpu": gpu_name(),
    }


def git_commit() -> str:
    """The commit of the running code (with -dirty for local changes), or the package version outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=CODE_DIR, capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            return f"resnet-serve {resnet_serve.__version__} (not a git checkout)"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=CODE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def gpu_name() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except RuntimeError:  # a broken CUDA setup means "no usable GPU" here
            return None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
            )
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def environment() -> dict:
    """Hardware, versions and commit, for results files and model cards."""
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": available_cores(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "versions": versions(),
        "git_commit": git_commit(),
    }
