"""python -m server [--model-repository model_repository] [--host 127.0.0.1] [--http-port 8000] ...

Starts the Triton Inference Server binary from the nvidia-pytriton wheel on a model repository,
waits until it is ready, and supervises it: every few seconds each model answers a real inference, a
model that does not is reloaded, a server that died or cannot be healed is restarted (each step is
logged). Ctrl-C / SIGTERM stop it cleanly, during startup too. Exits non-zero with Triton's own
message when the server cannot start (for example a model that fails to load).

Off loopback (--host 0.0.0.0) the control plane is locked by default: shared memory, model loading,
logging, trace and statistics need the API key (in --api-key-file, generated 0600 when absent), and
HTTP is served through nginx with request-size limits; gRPC can use TLS or mutual TLS.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import stat
import threading
from pathlib import Path

from resnet_serve import cli, settings
from resnet_serve.errors import ExitCode, UsageError
from resnet_serve.server.supervisor import Supervisor, SupervisorPolicy
from resnet_serve.server.triton import (
    LOCKED_APIS,
    GrpcTls,
    ServerConfig,
    TritonServer,
    resolve_security,
)

log = logging.getLogger(__name__)


def load_or_create_key(path: Path) -> str:
    """The API key in ``path`` (which must be readable by its owner only), or a new one written there 0600."""
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"API key file {path} is readable by others (mode {stat.filemode(mode)}); chmod 600 it")
        key = path.read_text().strip()
        if len(key) < 16 or any(c.isspace() or c in ",:=" for c in key):
            raise UsageError(
                f"API key file {path} must hold one key of at least 16 characters, without spaces, ',', ':' or '='"
            )
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    log.info("generated an API key in %s (mode 600)", path)
    return key


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m server",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog=__doc__.split("\n\n")[2].replace("\n", " "),
    )
    p.add_argument("--model-repository", type=Path, help=f"default: ${settings.REPOSITORY_ENV} or model_repository")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--http-port", type=cli.port, default=8000, help="0 picks a free port")
    p.add_argument("--grpc-port", type=cli.port, default=8001)
    p.add_argument("--metrics-port", type=cli.port, default=8002)
    p.add_argument("--log-verbose", type=cli.non_negative_int, default=0)
    p.add_argument("--model-control-mode", choices=("none", "explicit"), help="default: explicit when supervising")
    p.add_argument("--load-model", action="append", default=[], help="with explicit mode: a model to load at start")
    p.add_argument("--startup-timeout", type=cli.positive_float, default=300.0, help="seconds to wait for readiness")
    p.add_argument(
        "--triton-root",
        type=Path,
        help="another Triton install, e.g. /opt/tritonserver in NVIDIA's container (default: the wheel's)",
    )

    s = p.add_argument_group("supervision")
    s.add_argument(
        "--supervise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="probe every model with a real inference and heal what does not answer (default: on)",
    )
    s.add_argument(
        "--probe-interval", type=cli.positive_float, default=5.0, help="seconds between probe rounds (default 5)"
    )
    s.add_argument(
        "--probe-timeout", type=cli.positive_float, default=10.0, help="seconds a probe may take (default 10)"
    )

    c = p.add_argument_group("control plane")
    c.add_argument(
        "--restrict",
        choices=("auto", "on", "off"),
        default="auto",
        help=f"require the API key for {', '.join(LOCKED_APIS)} (auto: on when --host is not loopback)",
    )
    c.add_argument(
        "--api-key-file",
        type=Path,
        help=f"the key (header {settings.API_KEY_HEADER}), generated 0600 if absent "
        f"(default: ${settings.KEY_FILE_ENV} or build/server.key)",
    )
    c.add_argument(
        "--http-exposure",
        choices=("auto", "direct", "proxy", "loopback"),
        default="auto",
        help="proxy: nginx with size limits and an API allow-list in front of Triton's HTTP; loopback: "
        "HTTP on 127.0.0.1 only; direct: Triton's own HTTP (auto: proxy when --host is not loopback)",
    )
    c.add_argument(
        "--max-body-mb", type=cli.positive_int, default=64, help="the proxy's limit on one request body (default 64)"
    )
    c.add_argument("--grpc-tls-cert", type=Path, help="serve gRPC over TLS with this certificate (PEM)...")
    c.add_argument("--grpc-tls-key", type=Path, help="...and this private key (PEM)")
    c.add_argument("--grpc-tls-client-ca", type=Path, help="mutual TLS: clients need a certificate this CA signed")
    return p


def server_config(args) -> tuple[ServerConfig, bool]:
    """The ServerConfig these arguments ask for, and whether it carries a key."""
    locked, exposure = resolve_security(args.host, args.restrict, args.http_exposure)
    mode = args.model_control_mode or ("explicit" if args.supervise else "none")
    load_models = tuple(args.load_model) or (("*",) if mode == "explicit" else ())
    # model loading executes the repository's code: it always needs the key
    apis = LOCKED_APIS if locked else (("model-repository",) if mode == "explicit" else ())
    key = load_or_create_key(settings.api_key_file(args.api_key_file)) if apis else None
    if bool(args.grpc_tls_cert) != bool(args.grpc_tls_key):
        raise UsageError("gRPC TLS needs both --grpc-tls-cert and --grpc-tls-key")
    if args.grpc_tls_client_ca and not args.grpc_tls_cert:
        raise UsageError("--grpc-tls-client-ca (mutual TLS) needs --grpc-tls-cert and --grpc-tls-key")
    tls = GrpcTls(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca) if args.grpc_tls_cert else None
    config = ServerConfig(
        model_repository=settings.repository_dir(args.model_repository),
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_verbose=args.log_verbose,
        model_control_mode=mode,
        load_models=load_models,
        startup_timeout_s=args.startup_timeout,
        http_exposure=exposure,
        restricted_apis=apis,
        api_key=key,
        grpc_tls=tls,
        max_body_mb=args.max_body_mb,
        triton_root=args.triton_root,
    )
    return config, key is not None


def serve(args) -> int:
    config, keyed = server_config(args)
    repository = config.model_repository
    if (
        repository.is_dir()
        and args.model_control_mode != "explicit"
        and not any(p.is_dir() for p in repository.iterdir())
    ):
        # Triton would start and answer every request with "unknown model"
        raise UsageError(
            f"{repository} holds no models; build the default repository with `resnet-serve repository` (or "
            f"`python -m export ... --repository {repository}`), or pass --model-control-mode explicit to start "
            "empty and load models through the repository API"
        )
    server = TritonServer(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start(stop)  # exits 2 when it cannot start as given, 1 when Triton failed (its words), 0 on Ctrl-C
    locked = ", ".join(config.restricted_apis) if keyed else "nothing"
    print(
        f"Triton is serving {config.model_repository}: HTTP {server.http_url} ({config.http_exposure}), "
        f"gRPC {server.grpc_url}{' (TLS)' if config.grpc_tls else ''}, metrics {server.metrics_url}; "
        f"behind the API key: {locked}; supervision {'on' if args.supervise else 'off'} (Ctrl-C stops it)",
        flush=True,
    )
    try:
        if args.supervise:
            policy = SupervisorPolicy(interval_s=args.probe_interval, probe_timeout_s=args.probe_timeout)
            code = Supervisor(server, policy, key=config.api_key).run(stop)
        else:
            code = watch(server, stop)
    finally:
        log.info("shutting down")
        exit_code = server.stop()
        log.info("Triton stopped (exit code %s)", exit_code)
    return code


def watch(server: TritonServer, stop: threading.Event) -> int:
    """Without supervision: report a server that exits on its own, and exit 1."""
    while not stop.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            code = server.process.returncode if server.process else None
            log.error("Triton exited unexpectedly with code %s", code)
            return ExitCode.FAILED
    return ExitCode.OK


def main(argv=None) -> int:
    return cli.run(build_parser(), serve, argv)
