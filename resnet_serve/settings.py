"""Where data, exported engines and the model repository live: one place decides, for every command.

Each location is resolved as: the command-line flag, else one environment variable, else a default
relative to the working directory (never relative to where the code is installed):

    data root          RESNET_SERVE_DATA          ../shared/data if it exists, else data
    build directory    RESNET_SERVE_BUILD         build
    model repository   RESNET_SERVE_REPOSITORY    model_repository
    server API key     RESNET_SERVE_API_KEY_FILE  build/server.key (read by the client where it exists)

Inside the data root: ``cifar-10-jpg`` (an ImageFolder copy) or ``cifar-10`` (the official release,
downloaded there when asked), and ``imagenet-sample``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV, BUILD_ENV, REPOSITORY_ENV = "RESNET_SERVE_DATA", "RESNET_SERVE_BUILD", "RESNET_SERVE_REPOSITORY"
KEY_FILE_ENV = "RESNET_SERVE_API_KEY_FILE"
API_KEY_HEADER = "resnet-serve-key"  # the header Triton's restricted APIs check


def _resolve(flag: str | Path | None, env: str, default: Path) -> Path:
    if flag:
        return Path(flag)
    if os.environ.get(env):
        return Path(os.environ[env])
    return default


def data_root(flag: str | Path | None = None) -> Path:
    shared = Path("..") / "shared" / "data"
    return _resolve(flag, DATA_ENV, shared if shared.is_dir() else Path("data"))


def cifar_dir(flag: str | Path | None = None) -> Path:
    """A given folder as it is; else the data root's ImageFolder copy, or where the official release goes."""
    if flag:
        return Path(flag)
    root = data_root()
    jpg = root / "cifar-10-jpg"
    return jpg if jpg.is_dir() else root / "cifar-10"


def imagenet_sample_dir(flag: str | Path | None = None) -> Path:
    return Path(flag) if flag else data_root() / "imagenet-sample"


def build_dir(flag: str | Path | None = None) -> Path:
    return _resolve(flag, BUILD_ENV, Path("build"))


def repository_dir(flag: str | Path | None = None) -> Path:
    return _resolve(flag, REPOSITORY_ENV, Path("model_repository"))


def api_key_file(flag: str | Path | None = None) -> Path:
    """Where the server's API key lives (the server generates it there; the client reads it)."""
    return _resolve(flag, KEY_FILE_ENV, build_dir() / "server.key")
