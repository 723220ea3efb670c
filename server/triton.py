"""Run the real Triton Inference Server binary that ships in the ``nvidia-pytriton`` wheel.

The wheel carries ``tritonserver`` (2.51), its shared libraries (``nvidia_pytriton.libs``), the
Python backend and per-Python-version backend stubs. Running it on a plain model repository
needs three things, all set up here:

* ``LD_LIBRARY_PATH`` with the wheel's ``nvidia_pytriton.libs``;
* a backend directory ``<dir>/python/`` holding ``libtriton_python.so``, the backend utils and
  the ``triton_python_backend_stub`` built for this Python version;
* this environment's ``bin`` first on ``PATH`` (and its ``site-packages`` on ``PYTHONPATH``), so
  the stubs import this environment's numpy, onnxruntime, openvino and resnet-serve.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from resnet_serve.errors import ExitCode, ResnetServeError

log = logging.getLogger(__name__)

READY_PATH = "/v2/health/ready"


class ServerError(ResnetServeError):
    """The server could not start or stopped unexpectedly; the message carries Triton's own words."""

    exit_code = ExitCode.FAILED


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    libs: Path
    backend_dir: Path  # .../tritonserver/backends (contains python/)
    stub: Path

    @classmethod
    def find(cls, root: Path | None = None) -> TritonInstall:
        """The server in the installed nvidia-pytriton wheel, or at ``root`` (a ``tritonserver`` folder laid
        out as in that wheel, with ``nvidia_pytriton.libs`` two levels up, e.g. one unpacked on a GPU host)."""
        if root is None:
            try:
                import pytriton
            except ImportError:
                raise ServerError(
                    "the Triton server binary comes with nvidia-pytriton: pip install nvidia-pytriton "
                    "(or run scripts/setup.sh)"
                ) from None
            root = Path(pytriton.__file__).resolve().parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            libs=root.parent.parent / "nvidia_pytriton.libs",
            backend_dir=root / "backends",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        )
        for path in (install.binary, install.libs, install.backend_dir / "python" / "libtriton_python.so"):
            if not path.exists():
                raise ServerError(f"{path} is missing from the nvidia-pytriton install; reinstall it")
        if not install.stub.exists():
            raise ServerError(f"nvidia-pytriton has no Python backend stub for Python {version} ({install.stub})")
        return install


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServerConfig:
    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000  # 0: pick a free port
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_verbose: int = 0
    model_control_mode: str = "none"  # or "explicit"
    load_models: tuple[str, ...] = ()  # with explicit mode: models to load at start ("*" for all)
    startup_timeout_s: float = 300.0
    exit_timeout_s: int = 30
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    triton_root: Path | None = None  # a tritonserver folder other than the nvidia-pytriton wheel's

    def resolve_ports(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            if getattr(self, name) == 0:
                setattr(self, name, free_port(self.host))


class TritonServer:
    """One ``tritonserver`` process. Use ``start()``/``stop()`` or the ``running()`` context manager."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    # URLs in the form tritonclient expects (host:port, no scheme)
    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.config.metrics_port}/metrics"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host

    def command(self, backend_dir: Path, install: TritonInstall) -> list[str]:
        cfg = self.config
        cmd = [
            str(install.binary),
            f"--model-repository={Path(cfg.model_repository).resolve()}",
            f"--backend-directory={backend_dir}",
            f"--http-address={cfg.host}",
            f"--http-port={cfg.http_port}",
            f"--grpc-address={cfg.host}",
            f"--grpc-port={cfg.grpc_port}",
            f"--metrics-address={cfg.host}",
            f"--metrics-port={cfg.metrics_port}",
            f"--model-control-mode={cfg.model_control_mode}",
            f"--log-verbose={cfg.log_verbose}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={cfg.exit_timeout_s}",
        ]
        cmd += [f"--load-model={name}" for name in cfg.load_models]
        return cmd + list(cfg.extra_args)

    def environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        # the stub links this Python's libpython: where it is outside the linker's default path (a Python
        # built under /opt, say), this interpreter's LIBDIR holds it
        libdir = sysconfig.get_config_var("LIBDIR")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(install.libs), libdir, env.get("LD_LIBRARY_PATH")]))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # the stub embeds the system libpython; point it at this environment's packages
        site = sysconfig.get_paths()["purelib"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")]))
        env.setdefault("OMP_NUM_THREADS", "1")  # engines set their own thread counts
        env.update(self.config.env)
        return env

    def start(self) -> TritonServer:
        cfg = self.config
        repo = Path(cfg.model_repository)
        if not repo.is_dir():
            raise ServerError(
                f"model repository {repo} does not exist; create one with "
                "`python -m export --checkpoint ... --out ... --repository model_repository`"
            )
        install = TritonInstall.find(cfg.triton_root)
        cfg.resolve_ports()
        self._workdir = tempfile.TemporaryDirectory(prefix="tritonserver-")
        backend_dir = Path(self._workdir.name) / "backends"
        python_dir = backend_dir / "python"
        python_dir.mkdir(parents=True)
        for item in (install.backend_dir / "python").iterdir():
            if item.is_file():
                (python_dir / item.name).symlink_to(item)
        shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
        command = self.command(backend_dir, install)
        log.info("starting %s", " ".join(command))
        self.process = subprocess.Popen(
            command,
            env=self.environment(install),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._pump_log, name="triton-log", daemon=True)
        self._reader.start()
        try:
            self.wait_ready(cfg.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("Triton ready: HTTP %s, gRPC %s, metrics %s", self.http_url, self.grpc_url, self.metrics_url)
        return self

    def _pump_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self.log_tail.append(line)
            log.info("triton: %s", line)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{READY_PATH}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)
                raise ServerError(self.failure_message())
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(
            f"Triton did not become ready within {timeout_s:.0f} s; last log lines:\n"
            + "\n".join(list(self.log_tail)[-15:])
        )

    def failure_message(self) -> str:
        code = self.process.returncode if self.process else None
        lines = list(self.log_tail)
        errors = [line for line in lines if line.startswith("E") or "error" in line.lower() or "failed" in line.lower()]
        detail = "\n".join((errors or lines)[-15:])
        return f"Triton exited with code {code} before it was ready:\n{detail}"

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL of the whole process group."""
        timeout_s = timeout_s if timeout_s is not None else self.config.exit_timeout_s + 15
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("Triton did not exit within %.0f s of SIGTERM; killing it", timeout_s)
            # the Python backend stubs share the process group: make sure none is left behind
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = self.process.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
            self.process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code


@contextmanager
def running(model_repository: str | Path, **kwargs):
    """``with running("model_repository", http_port=0, grpc_port=0, metrics_port=0) as server: ...``"""
    server = TritonServer(ServerConfig(model_repository=Path(model_repository), **kwargs))
    server.start()
    try:
        yield server
    finally:
        server.stop()
