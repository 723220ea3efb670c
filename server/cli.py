"""python -m server [--model-repository model_repository] [--host 127.0.0.1] [--http-port 8000] ...

Starts the Triton Inference Server binary from the nvidia-pytriton wheel on a model repository,
waits until it is ready, streams its log, and shuts it down cleanly on Ctrl-C / SIGTERM. Exits
non-zero with Triton's own message when the server cannot start (for example a model that fails
to load).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from resnet_serve import cli, settings
from resnet_serve.errors import ExitCode
from resnet_serve.server.triton import ServerConfig, TritonServer

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--model-repository", type=Path, help=f"default: ${settings.REPOSITORY_ENV} or model_repository")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--model-control-mode", choices=("none", "explicit"), default="none")
    p.add_argument("--load-model", action="append", default=[], help="with explicit mode: a model to load at start")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    return p


def serve(args) -> int:
    repository = settings.repository_dir(args.model_repository)
    server = TritonServer(
        ServerConfig(
            model_repository=repository,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            log_verbose=args.log_verbose,
            model_control_mode=args.model_control_mode,
            load_models=tuple(args.load_model),
            startup_timeout_s=args.startup_timeout,
        )
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()  # a ServerError (with Triton's own words) exits 1
    print(
        f"Triton is serving {repository}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
        f"metrics {server.metrics_url} (Ctrl-C stops it)",
        flush=True,
    )
    while not stop.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            code = server.process.returncode if server.process else None
            log.error("Triton exited unexpectedly with code %s", code)
            server.stop()
            return ExitCode.FAILED
    log.info("shutting down")
    code = server.stop()
    log.info("Triton stopped (exit code %s)", code)
    return ExitCode.OK


def main(argv=None) -> int:
    return cli.run(build_parser(), serve, argv)
