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
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from resnet_serve.errors import ExitCode, ResnetServeError
from resnet_serve.scratch import scratch_dir
from resnet_serve.settings import API_KEY_HEADER

log = logging.getLogger(__name__)

READY_PATH = "/v2/health/ready"
SHM_GLOB = "triton_python_backend_shm_region_*"  # the Python backend's regions in /dev/shm


class ServerError(ResnetServeError):
    """The server could not start or stopped unexpectedly; the message carries Triton's own words."""

    exit_code = ExitCode.FAILED


class ServerSetupError(ServerError):
    """The server cannot start as given (a missing repository, install or certificate, models that cannot
    load, a port in use): found before Triton is started, and a usage error (exit 2) like any other."""

    exit_code = ExitCode.USAGE


class StartupInterrupted(ServerError):
    """SIGTERM or Ctrl-C arrived while the server was starting; it was stopped."""

    exit_code = ExitCode.OK


def check_listen_address(host: str) -> None:
    """ServerSetupError unless this machine can listen on ``host`` (an IPv4 address or a name of one): a
    failed bind there would otherwise read as "port in use", or end in a traceback where a port is 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            raise ServerSetupError(
                f"cannot listen on host {host!r} ({exc.strerror or exc}); pass an IPv4 address of this machine, "
                "e.g. 127.0.0.1 (loopback only, the default) or 0.0.0.0 (every interface)"
            ) from None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (from /proc; None where it cannot be told)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [state, parent pid, ...] (OSError if gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def stub_args(pid: int | str) -> list[str] | None:
    """A Python-backend stub's arguments (model.py, its region, sizes, its server's pid, ...), None for any
    other process."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return args[1:] if len(args) > 5 and args[0].endswith("triton_python_backend_stub") else None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents.setdefault(int(proc_stat(proc.name)[1]), []).append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stub_pids(server_pid: int, model: str) -> list[int]:
    """The Python-backend stub processes of ``model`` under the server ``server_pid`` (a stub's first
    argument is its ``<repository>/<model>/<version>/model.py``)."""
    return [
        pid
        for pid in descendants(server_pid)
        if (args := stub_args(pid)) is not None and Path(args[0]).parent.parent.name == model
    ]


def remove_orphan_stubs(wait_s: float = 5.0) -> list[int]:
    """SIGKILL this user's Python-backend stubs whose Triton is gone; returns their pids.

    A stub is started by a tritonserver, which passes its own pid as the stub's sixth argument; a stub whose
    parent is no longer that process was orphaned and no server can reach it again. Stubs normally exit
    when their server dies, but one caught mid-request when the server and its launcher are killed (the
    launcher SIGKILLed under load) hangs for ever, holding its engine's memory and its /dev/shm region."""
    orphans = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = stub_args(proc.name) if proc.stat().st_uid == os.getuid() else None
            if args is None or not args[4].isdigit():
                continue
            state, parent = proc_stat(proc.name)[:2]
            if state != "Z" and int(parent) != int(args[4]):
                os.kill(int(proc.name), signal.SIGKILL)
                orphans.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    deadline = time.monotonic() + wait_s  # gone (or a zombie) before their regions count as unused
    while time.monotonic() < deadline and any(_running(pid) for pid in orphans):
        time.sleep(0.05)
    return orphans


def _running(pid: int) -> bool:
    try:
        return proc_stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def remove_stale_shm(directory: Path = Path("/dev/shm")) -> list[str]:
    """Delete Python-backend shared-memory regions that no live process has open or mapped (left by a
    server that crashed or was killed); returns their names."""
    regions = {p.name: p for p in directory.glob(SHM_GLOB) if p.stat().st_uid == os.getuid()}
    if not regions:
        return []
    in_use = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            in_use.update(Path(os.readlink(fd)).name for fd in (proc / "fd").iterdir())
            in_use.update(
                line.rsplit("/", 1)[-1] for line in (proc / "maps").read_text().splitlines() if SHM_GLOB[:-1] in line
            )
        except OSError:
            continue
    removed = []
    for name, path in regions.items():
        if name not in in_use:
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed


def repository_problems(repository: Path) -> list[str]:
    """What would keep models of this repository from loading, found before Triton starts (Triton 2.51 waits
    forever on a Python model without its model.py)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    problems, names = [], {p.name for p in repository.iterdir() if p.is_dir()}
    for model in sorted(p for p in repository.iterdir() if p.is_dir()):
        config_path = model / "config.pbtxt"
        try:
            config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        except (OSError, text_format.ParseError) as exc:
            problems.append(f"{model.name}: config.pbtxt cannot be read ({exc})")
            continue
        versions = [v for v in model.iterdir() if v.is_dir() and v.name.isdigit()]
        if not versions and config.platform != "ensemble":
            problems.append(f"{model.name}: no version folder (e.g. {model.name}/1/)")
        if config.backend == "python":
            problems += [
                f"{model.name}: {v.name}/model.py is missing" for v in versions if not (v / "model.py").is_file()
            ]
        for step in config.ensemble_scheduling.step:
            if step.model_name not in names:
                problems.append(
                    f"{model.name}: its ensemble step names {step.model_name!r}, which is not in the repository"
                )
    return problems


def die_with_launcher() -> list[str]:
    """A command prefix that has the kernel SIGKILL the server when the launcher dies, however it dies
    (util-linux setpriv: PR_SET_PDEATHSIG, kept across exec); empty where setpriv is absent. Its stubs
    exit when they see their server gone; one that cannot is killed at the next start (remove_orphan_stubs)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    libs: Path
    backend_dir: Path  # .../tritonserver/backends (contains python/)
    stub: Path
    bundled: bool = True  # the wheel's layout; False: a Triton release's own tree, its backends used as they are

    @classmethod
    def find(cls, root: Path | None = None) -> TritonInstall:
        """The server in the installed nvidia-pytriton wheel, or at ``root``: a ``tritonserver`` folder laid
        out as in that wheel (``nvidia_pytriton.libs`` two levels up, e.g. one unpacked on a GPU host), or a
        Triton release's tree such as ``/opt/tritonserver`` in NVIDIA's container (bin/, lib/, backends/)."""
        if root is not None and (Path(root) / "backends" / "python" / "triton_python_backend_stub").is_file():
            root = Path(root)
            if not (root / "bin" / "tritonserver").is_file():
                raise ServerSetupError(f"{root}/bin/tritonserver is missing; pass the Triton install's root folder")
            return cls(
                binary=root / "bin" / "tritonserver",
                libs=root / "lib",
                backend_dir=root / "backends",
                stub=root / "backends" / "python" / "triton_python_backend_stub",
                bundled=False,
            )
        if root is None:
            try:
                import pytriton
            except ImportError:
                raise ServerSetupError(
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
                raise ServerSetupError(f"{path} is missing from the nvidia-pytriton install; reinstall it")
        if not install.stub.exists():
            raise ServerSetupError(f"nvidia-pytriton has no Python backend stub for Python {version} ({install.stub})")
        return install


def free_ports(count: int, host: str = "127.0.0.1", avoid: Iterable[int] = ()) -> list[int]:
    """``count`` distinct ports free on ``host`` now, none of them in ``avoid``. The sockets stay bound until
    all are picked: a port whose socket was closed can be handed out again at once, and a server told one
    port for two listeners fails to start ("cannot listen to HTTP requests and GRPC requests at the same address")."""
    avoid = set(avoid)
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:  # each bound socket takes a new port: at most len(avoid) extra turns
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


RESTRICTABLE = ("shared-memory", "model-repository", "logging", "trace", "statistics", "model-config", "metadata")
LOCKED_APIS = ("shared-memory", "model-repository", "logging", "trace", "statistics")  # locked off loopback
EXPOSURES = ("direct", "proxy", "loopback")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: resolve it
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def resolve_security(host: str, restrict: str = "auto", http_exposure: str = "auto") -> tuple[bool, str]:
    """(lock the control plane?, how HTTP is exposed) for ``--restrict`` and ``--http-exposure`` ("auto":
    locked and behind the proxy when the server binds beyond loopback; open and direct on loopback)."""
    beyond = not is_loopback(host)
    if restrict not in ("auto", "on", "off"):
        raise ValueError(f"restrict must be auto, on or off, got {restrict!r}")
    if http_exposure not in ("auto", *EXPOSURES):
        raise ValueError(f"http_exposure must be auto or one of {', '.join(EXPOSURES)}, got {http_exposure!r}")
    locked = restrict == "on" or (restrict == "auto" and beyond)
    exposure = http_exposure if http_exposure != "auto" else ("proxy" if beyond else "direct")
    return locked, exposure


@dataclass(frozen=True)
class GrpcTls:
    """gRPC over TLS: the server's certificate and key; with ``client_ca``, clients must present a certificate
    it signed (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def check(self) -> None:
        for label, path in (("certificate", self.cert), ("key", self.key), ("client CA", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise ServerSetupError(f"gRPC TLS {label} {path} does not exist")

    def args(self) -> list[str]:
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.client_ca is not None:
            args += [f"--grpc-root-cert={self.client_ca}", "--grpc-use-ssl-mutual=true"]
        return args


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
    # the control plane (see resolve_security and README "Security"):
    http_exposure: str = "direct"  # direct | proxy (nginx on host:http_port) | loopback (HTTP on 127.0.0.1 only)
    restricted_apis: tuple[str, ...] = ()  # Triton API groups that answer only requests carrying the key
    api_key: str | None = field(default=None, repr=False)
    grpc_tls: GrpcTls | None = None
    max_body_mb: int = 64  # the proxy's limit on one request body

    def resolve_ports(self) -> None:
        """Free ports for those asked as 0, distinct from each other and from the ports given."""
        names = ("http_port", "grpc_port", "metrics_port")
        unset = [name for name in names if getattr(self, name) == 0]
        given = [getattr(self, name) for name in names if name not in unset]
        for name, port in zip(unset, free_ports(len(unset), self.host, avoid=given), strict=True):
            setattr(self, name, port)


class TritonServer:
    """One ``tritonserver`` process. Use ``start()``/``stop()`` or the ``running()`` context manager."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self.proxy = None  # the nginx HttpProxy where config.http_exposure == "proxy"
        self.triton_http_port: int | None = None  # where Triton itself serves HTTP (loopback behind the proxy)

    # URLs in the form tritonclient expects (host:port, no scheme)
    @property
    def http_url(self) -> str:
        """Where clients send HTTP (the proxy, where there is one)."""
        host = "127.0.0.1" if self.config.http_exposure == "loopback" else self._client_host
        return f"{host}:{self.config.http_port}"

    @property
    def internal_http_url(self) -> str:
        """Triton's own HTTP endpoint, for the launcher's probes and repairs."""
        if self.config.http_exposure == "proxy" and self.triton_http_port:
            return f"127.0.0.1:{self.triton_http_port}"
        return self.http_url

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
            f"--http-address={cfg.host if cfg.http_exposure == 'direct' else '127.0.0.1'}",
            f"--http-port={self.triton_http_port or cfg.http_port}",
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
        if cfg.restricted_apis:
            if not cfg.api_key:
                raise ServerSetupError("restricted APIs need a key; pass --api-key-file")
            apis = ",".join(cfg.restricted_apis)
            cmd += [
                f"--http-restricted-api={apis}:{API_KEY_HEADER}={cfg.api_key}",
                f"--grpc-restricted-protocol={apis}:{API_KEY_HEADER}={cfg.api_key}",
            ]
        if cfg.grpc_tls is not None:
            cmd += cfg.grpc_tls.args()
        return cmd + list(cfg.extra_args)

    def _printable(self, command: list[str]) -> str:
        text = " ".join(command)
        return text.replace(self.config.api_key, "<key>") if self.config.api_key else text

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

    def start(self, stop: threading.Event | None = None) -> TritonServer:
        """Start and wait until ready. ``stop``: set (by a signal handler) to abandon the start."""
        cfg = self.config
        repo = Path(cfg.model_repository)
        if not repo.is_dir():
            raise ServerSetupError(
                f"model repository {repo} {'is not a folder' if repo.exists() else 'does not exist'}; create one with "
                "`python -m export --checkpoint ... --out ... --repository model_repository`"
            )
        problems = repository_problems(repo)
        if problems:
            raise ServerSetupError(f"{repo} has models that cannot load:\n  " + "\n  ".join(problems))
        install = TritonInstall.find(cfg.triton_root)
        if cfg.http_exposure not in EXPOSURES:
            raise ServerSetupError(f"http_exposure must be one of {', '.join(EXPOSURES)}, got {cfg.http_exposure!r}")
        if cfg.grpc_tls is not None:
            cfg.grpc_tls.check()
        if cfg.http_exposure == "proxy":
            from resnet_serve.server.proxy import nginx_binary

            nginx_binary()  # missing: say so before anything starts
        check_listen_address(cfg.host)
        given = [p for p in (cfg.http_port, cfg.grpc_port, cfg.metrics_port) if p]
        if len(set(given)) < len(given):
            raise ServerSetupError(
                f"the HTTP, gRPC and metrics ports must differ (got {cfg.http_port}, {cfg.grpc_port}, "
                f"{cfg.metrics_port}); pass other ports (0 picks a free one)"
            )
        cfg.resolve_ports()
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(cfg, name)
            host = "127.0.0.1" if name == "http_port" and cfg.http_exposure == "loopback" else cfg.host
            if port_in_use(host, port):
                owner = listening_pid(port)
                raise ServerSetupError(
                    f"{name.replace('_', ' ')} {port} on {host} is in use"
                    + (f" by process {owner} ({_command_of(owner)})" if owner else "")
                    + "; stop that server or pass another port (0 picks a free one)"
                )
        if cfg.http_exposure == "proxy" and (
            self.triton_http_port is None or port_in_use("127.0.0.1", self.triton_http_port)
        ):
            public = (cfg.http_port, cfg.grpc_port, cfg.metrics_port)  # Triton's own HTTP port, behind nginx
            (self.triton_http_port,) = free_ports(1, "127.0.0.1", avoid=public)
        orphans = remove_orphan_stubs()
        if orphans:
            log.warning(
                "killed %d Python-backend stub(s) left running by a server that is gone (pids %s)",
                len(orphans),
                ", ".join(map(str, orphans)),
            )
        stale = remove_stale_shm()
        if stale:
            log.info("removed %d shared-memory regions left by a server that is gone", len(stale))
        self._workdir = scratch_dir("tritonserver-")
        backend_dir = install.backend_dir
        if install.bundled:  # the wheel keeps one stub per Python version: put this Python's in place
            backend_dir = Path(self._workdir.name) / "backends"
            python_dir = backend_dir / "python"
            python_dir.mkdir(parents=True)
            for item in (install.backend_dir / "python").iterdir():
                if item.is_file():
                    (python_dir / item.name).symlink_to(item)
            shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
        command = self.command(backend_dir, install)
        log.info("starting %s", self._printable(command))
        self.process = subprocess.Popen(
            die_with_launcher() + command,
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
            self.wait_ready(cfg.startup_timeout_s, stop)
            port = self.triton_http_port or cfg.http_port
            owner = listening_pid(port)
            if owner is not None and owner != self.process.pid:
                raise ServerError(
                    f"HTTP port {port} is answered by process {owner} ({_command_of(owner)}), not by the "
                    "server this launcher started"
                )
            if cfg.http_exposure == "proxy":
                self.start_proxy()
        except BaseException:
            self.stop()
            raise
        log.info("Triton ready: HTTP %s, gRPC %s, metrics %s", self.http_url, self.grpc_url, self.metrics_url)
        return self

    def start_proxy(self) -> None:
        """nginx on host:http_port in front of Triton's loopback HTTP port (again after it died)."""
        from resnet_serve.server.proxy import HttpProxy

        if self.proxy is not None:
            self.proxy.stop()
        self.proxy = HttpProxy(
            self.config.host, self.config.http_port, self.triton_http_port, max_body_mb=self.config.max_body_mb
        )
        try:
            self.proxy.start(Path(self._workdir.name) / "nginx", die_with_launcher())
        except OSError as exc:
            raise ServerError(f"the HTTP proxy could not start: {exc}") from None

    def _pump_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self.log_tail.append(line)
            log.info("triton: %s", line)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.internal_http_url}{READY_PATH}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float, stop: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise StartupInterrupted("stopped while the server was starting")
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
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
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
        removed = remove_stale_shm()
        if removed:
            log.info("removed %d shared-memory regions the stopped server left", len(removed))
        return code


def _command_of(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "unknown command"


@contextmanager
def running(model_repository: str | Path, **kwargs):
    """``with running("model_repository", http_port=0, grpc_port=0, metrics_port=0) as server: ...``"""
    server = TritonServer(ServerConfig(model_repository=Path(model_repository), **kwargs))
    server.start()
    try:
        yield server
    finally:
        server.stop()
