"""Measure serving settings side by side: the data behind ``export.repository.CPU_PROFILE``.

    python -m resnet_serve.benchmarks.profile_sweep --engine onnxruntime-int8 --out benchmarks/results/sweep

For each variant (instances x engine threads, classifier input dtype, batching window) a repository
with just that model is written, the real server is started on it, and the JPEG ensemble is driven
in closed loop at each concurrency. Prints one JSON object and writes OUT/sweep.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from resnet_serve import cli, settings
from resnet_serve.benchmarks.load import Payload, run_load
from resnet_serve.export.repository import CPU_PROFILE, write_repository
from resnet_serve.resnets.data import scan_image_folder
from resnet_serve.resnets.env import environment
from resnet_serve.server import running

log = logging.getLogger(__name__)

# Each variant states every setting it uses, so the sweep means the same whatever CPU_PROFILE holds.
BASE = {
    "classifier_instances": 1,
    "classifier_threads": 2,
    "preprocess_instances": 1,
    "input_dtype": "TYPE_FP32",
    "max_queue_delay_us": 2000,
}
VARIANTS = {
    "1x2 threads, fp32, delay 2000 us": {},
    "1x2 threads, fp32, delay 0 us": {"max_queue_delay_us": 0},
    "1x2 threads, uint8, delay 0 us": {"input_dtype": "TYPE_UINT8", "max_queue_delay_us": 0},
    "1x2 threads, uint8, delay 500 us": {"input_dtype": "TYPE_UINT8", "max_queue_delay_us": 500},
    "2x1 thread, uint8, delay 0 us": {
        "classifier_instances": 2,
        "classifier_threads": 1,
        "input_dtype": "TYPE_UINT8",
        "max_queue_delay_us": 0,
    },
    "1x2 threads, uint8, delay 0 us, 2 preprocess": {
        "input_dtype": "TYPE_UINT8",
        "max_queue_delay_us": 0,
        "preprocess_instances": 2,
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resnet_serve.benchmarks.profile_sweep", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--build-dir", type=Path, help=f"exported engines (default: ${settings.BUILD_ENV} or build)")
    p.add_argument("--data-dir", type=Path, help="CIFAR-10 data (default: cifar-10-jpg under the data root)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--engine", default="onnxruntime-int8")
    p.add_argument("--concurrency", type=cli.csv_ints, default=(1, 16, 64))
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--variants", type=cli.csv_ints, help="variant numbers (1-based) to run (default: all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "sweep")
    return p


def sweep(args) -> int:
    _, samples = scan_image_folder(settings.cifar_dir(args.data_dir) / "test")
    encoded = [path.read_bytes() for path, _ in samples[::40]]  # 250 real test JPEGs across the classes
    export_dir = settings.build_dir(args.build_dir) / args.model
    payload_images = [np.array([[b]], dtype=np.object_) for b in encoded]
    results = {"environment": environment(), "model": args.model, "engine": args.engine, "variants": []}
    for number, (name, change) in enumerate(VARIANTS.items(), start=1):
        if args.variants and number not in args.variants:
            continue
        profile = replace(CPU_PROFILE, **{**BASE, **change})
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            network = write_repository(repo, export_dir, profile=profile, default_alias=False, engines=(args.engine,))
            served = network.engine(args.engine)
            payload = Payload(served.ensemble, "image", "BYTES", payload_images, "jpeg")
            with running(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
                for c in args.concurrency:
                    stats = [served.ensemble, network.preprocess, served.classifier]
                    r = asyncio.run(
                        run_load(
                            server.grpc_url,
                            "grpc",
                            payload,
                            stats_models=stats,
                            concurrency=c,
                            duration_s=args.duration,
                        )
                    )
                    clf = r["server"].get(served.classifier, {})
                    row = {
                        "variant": name,
                        "concurrency": c,
                        "throughput_img_s": r["throughput_img_s"],
                        "latency_ms_p50": r.get("latency_ms_p50"),
                        "latency_ms_p99": r.get("latency_ms_p99"),
                        "errors": r["errors"],
                        "classifier_avg_batch": clf.get("avg_batch_size"),
                        "classifier_queue_ms": clf.get("queue_ms"),
                        "server": r["server"],
                    }
                    results["variants"].append(row)
                    log.info(
                        "%-48s c=%-3d %8.1f img/s  p50 %6.2f ms  p99 %6.2f ms  batch %s",
                        name,
                        c,
                        row["throughput_img_s"],
                        row["latency_ms_p50"] or 0,
                        row["latency_ms_p99"] or 0,
                        row["classifier_avg_batch"],
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps([{k: v for k, v in r.items() if k != "server"} for r in results["variants"]], indent=1))
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), sweep, argv, quiet=("resnet_serve.server",))


if __name__ == "__main__":
    sys.exit(main())
