"""Where data, exported engines and the model repository live: one place decides, for every command.

Each location is resolved as: the command-line flag, else one environment variable, else a default
relative to the working directory (never relative to where the code is installed):

    data root          RESNET_SERVE_DATA          ../shared/data if it exists, else data
    build directory    RESNET_SERVE_BUILD         build
    model repository   RESNET_SERVE_REPOSITORY    model_repository
    server API key     RESNET_SERVE_API_KEY_FILE  build/server.key (read by the client where it exists)

Inside the data root: ``cifar-10-jpg`` (an ImageFolder copy) or ``cifar-10`` (the official release,
downloaded there when asked), and ``imagenet-sample``.

The server's address (``normalize_url``) is checked here too, once for the client and the health probe.
"""

from __future__ import annotations

import os
from pathlib import Path

from resnet_serve.errors import UsageError

DATA_ENV, BUILD_ENV, REPOSITORY_ENV = "RESNET_SERVE_DATA", "RESNET_SERVE_BUILD", "RESNET_SERVE_REPOSITORY"
KEY_FILE_ENV = "RESNET_SERVE_API_KEY_FILE"
API_KEY_HEADER = "resnet-serve-key"  # the header Triton's restricted APIs check
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}  # the server's, as `python -m server` starts it


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


def normalize_url(url: str | None, protocol: str) -> str:
    """host:port as tritonclient wants it; a missing port gets the protocol's default, an IPv6 address goes
    in brackets ([::1]:8001). Anything else is a UsageError: tritonclient's HTTP client fails on a port it
    cannot read with an AttributeError, and gRPC takes port 99999 as 99999 - 65536 = 34463."""
    default = DEFAULT_PORTS[protocol]
    given = url
    url = url or f"localhost:{default}"
    for prefix in ("grpc://", "http://", "https://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    url = url.rstrip("/")
    if url.startswith("["):  # [IPv6] or [IPv6]:port
        end = url.find("]") + 1
        host, rest = (url[:end], url[end:]) if end else ("", "")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "")
    else:
        host, _, port = url.partition(":") if ":" in url else (url, "", None)
    port = str(default) if port is None else port
    bad_host = host in ("", "[]") or any(c.isspace() or c in "/@" for c in host)
    if bad_host or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(
            f"--url {given!r} is not HOST:PORT with a port from 1 to 65535 (an IPv6 address in brackets); "
            f"e.g. localhost:{default} or [::1]:{default}"
        )
    return f"{host}:{port}"
