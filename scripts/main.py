"""The main job: committed checkpoint -> engines and model repository -> tuned for this host -> Triton -> classify
samples -> quick benchmark.

bash scripts/run.sh            # sets up .venv first, then runs this
.venv/bin/python scripts/main.py [--skip-benchmark] [--repository model_repository] [--build-dir build]
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from pathlib import Path

from resnet_serve import cli, settings
from resnet_serve.benchmarks import cli as benchmark
from resnet_serve.benchmarks.tune import tune_default_repository
from resnet_serve.client import Classifier
from resnet_serve.client.cli import print_table
from resnet_serve.export.default_repository import build_default_repository
from resnet_serve.resnets.data import DataLayoutError, download_cifar10, load_cifar10
from resnet_serve.server import running

log = logging.getLogger("main")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def cifar_data(directory: Path) -> Path:
    """The CIFAR-10 data to use; downloads the official release (md5-checked) when none is found."""
    try:
        load_cifar10(directory, "test")
    except DataLayoutError:
        log.info("no CIFAR-10 data in %s: downloading the official release", directory)
        download_cifar10(directory)
    return directory


def sample_images(cifar_dir: Path) -> tuple[list, list[Path]]:
    """One CIFAR-10 test image per class (files, or arrays from the official batches), three ImageNet samples."""
    if (cifar_dir / "test").is_dir():
        cifar = [sorted(d.glob("*.jpg"))[0] for d in sorted((cifar_dir / "test").iterdir()) if d.is_dir()]
    else:
        test = load_cifar10(cifar_dir, "test")
        cifar = [test.images[list(test.labels).index(c)] for c in range(10)]
    imagenet_dir = settings.imagenet_sample_dir()
    imagenet = sorted(imagenet_dir.glob("*.JPEG"))[:3] if imagenet_dir.is_dir() else []
    return cifar, imagenet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, help=f"default: ${settings.REPOSITORY_ENV} or model_repository")
    p.add_argument("--build-dir", type=cli.out_dir, help=f"default: ${settings.BUILD_ENV} or build")
    p.add_argument("--skip-export", action="store_true", help="serve the repository as it is")
    p.add_argument("--skip-benchmark", action="store_true")
    p.add_argument("--out", type=cli.out_dir, default=Path("benchmarks") / "results" / "quick")
    return p


def run(args) -> int:
    start = time.perf_counter()
    repository, build_dir = settings.repository_dir(args.repository), settings.build_dir(args.build_dir)
    cifar_dir = cifar_data(settings.cifar_dir())
    if not args.skip_export:
        log.info(
            "1/4 exporting checkpoints/resnet20.pt (ONNX Runtime + OpenVINO, FP32 + INT8) and a random-weight "
            "ImageNet ResNet-50 into %s",
            repository,
        )
        build_default_repository(repository, build_dir, cifar_dir=cifar_dir)
        log.info("    tuning each network's default model for this host (quick mode) -> %s", build_dir / "tune")
        for arch, verdict in tune_default_repository(repository, build_dir).items():
            log.info("    %s: %s", arch, verdict)
    ports = (8000, 8001, 8002) if all(port_free(p) for p in (8000, 8001, 8002)) else (0, 0, 0)
    log.info("2/4 starting the Triton Inference Server on %s", repository)
    with running(repository, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]) as server:
        log.info("Triton is ready: HTTP %s, gRPC %s, metrics %s", server.http_url, server.grpc_url, server.metrics_url)
        cifar, imagenet = sample_images(cifar_dir)
        log.info("3/4 classifying sample images over gRPC")
        with Classifier(server.grpc_url, "grpc", "resnet20") as clf:
            print("\nresnet20 (CIFAR-10, committed checkpoint, the engine and path the tune step chose):")
            print_table(clf.classify_detailed(cifar, top_k=3), top_k=3)
        if imagenet:
            with Classifier(server.grpc_url, "grpc", "resnet50") as clf:
                print(
                    "\nresnet50 (ImageNet preprocessing; RANDOM weights unless you exported torchvision ones, "
                    "so these labels mean nothing):"
                )
                print_table(clf.classify_detailed(imagenet, top_k=1), top_k=1)
        print(flush=True)
        if not args.skip_benchmark:
            log.info("4/4 quick benchmark (offline engines, served load, accuracy) -> %s", args.out)
            code = benchmark.main(
                ["--suite", "quick", "--url", server.grpc_url, "--http-url", server.http_url]
                + ["--repository", str(repository), "--build-dir", str(build_dir)]
                + ["--data-dir", str(cifar_dir), "--out", str(args.out)]
            )
            if code:
                return code
    log.info("done in %.0f s; report: %s", time.perf_counter() - start, args.out / "report.md")
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), run, argv, quiet=("resnet_serve.server", "resnet_serve.export"))


if __name__ == "__main__":
    sys.exit(main())
