"""Benchmarks: engines side by side, served load against Triton, accuracy, and the CI accuracy gate.

    python benchmarks/run.py                       # quick suite (< 5 min on 2 cores)
    python benchmarks/run.py --suite full          # ResNet-20 and ResNet-50, all engines, longer runs
    python benchmarks/run.py --suite accuracy --check benchmarks/baselines.json

Without --url the embedded Triton server is started on the repository (built first if missing).
Writes OUT/results.json (every figure, units in the key names), OUT/report.md (built only from the
JSON) and PNG plots; prints a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from resnet_serve.benchmarks import accuracy as acc
from resnet_serve.benchmarks import gate, report
from resnet_serve.benchmarks.load import Payload, run_load
from resnet_serve.benchmarks.offline import time_engine
from resnet_serve.client.classifier import Connection
from resnet_serve.engines import Engine, EngineError, default_threads, load_engine
from resnet_serve.engines.pytorch import TorchEngine
from resnet_serve.resnets.checkpoint import file_sha256
from resnet_serve.resnets.console import progress
from resnet_serve.resnets.data import default_cifar_dir, load_cifar10, scan_image_folder
from resnet_serve.resnets.env import REPO_ROOT, environment
from resnet_serve.resnets.spec import CIFAR10, DATASETS, IMAGENET, encode_png, normalize, preprocess, preprocess_pixels

log = logging.getLogger("benchmarks")

SCHEMA_VERSION = 1
ENGINES = ("pytorch", "onnxruntime", "openvino", "gpu")


@dataclass
class Suite:
    name: str
    models: tuple[str, ...]
    batch_sizes: dict[str, tuple[int, ...]]
    offline_duration_s: float
    served_duration_s: float
    concurrency: tuple[int, ...]
    http_concurrency: tuple[int, ...]
    tensor_concurrency: tuple[int, ...]
    open_loop_fractions: tuple[float, ...]  # open-loop rates as fractions of the closed-loop peak
    served_engines: str  # "default" (the engine behind the plain <arch> ensemble) or "all"
    offline: bool = True
    served: bool = True
    accuracy: bool = True
    pytorch_bf16: bool = True
    transport: bool = False  # shared memory vs in-band tensors (benchmarks/transport.py)
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
    extra: dict = field(default_factory=dict)


SUITES = {
    "quick": Suite(
        "quick",
        ("resnet20",),
        {"resnet20": (1, 64), "resnet50": (1, 8)},
        1.5,
        4.0,
        (1, 16),
        (16,),
        (16,),
        (0.5,),
        "default",
    ),
    "full": Suite(
        "full",
        ("resnet20", "resnet50"),
        {"resnet20": (1, 8, 64, 256), "resnet50": (1, 8, 32)},
        4.0,
        8.0,
        (1, 4, 16, 64),
        (1, 16),
        (16, 64),
        (0.25, 0.5, 0.9),
        "all",
        transport=True,
    ),
    "accuracy": Suite(
        "accuracy",
        ("resnet20",),
        {},
        0.0,
        0.0,
        (),
        (),
        (),
        (),
        "all",
        offline=False,
        served=True,
        accuracy=True,
        pytorch_bf16=False,
    ),
}


def stale_export(summary_path: Path) -> str | None:
    """Why the engines an export summary describes cannot be used as they are, or None if they can."""
    if not summary_path.is_file():
        return "no exported engines"
    model = json.loads(summary_path.read_text())["model"]
    checkpoint = Path(model["checkpoint"])
    if not checkpoint.is_file():
        return f"its checkpoint {checkpoint} is gone"
    if model.get("checkpoint_sha256") != file_sha256(checkpoint):
        return f"{checkpoint} changed since the engines were exported"
    return None


def csv_ints(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in value.split(",") if v.strip())


def csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=tuple(SUITES), default="quick")
    p.add_argument("--models", type=csv, help="comma list (default: the suite's)")
    p.add_argument("--engines", type=csv, help=f"comma list from {', '.join(ENGINES)} (default: all)")
    p.add_argument("--precisions", type=csv, help="comma list from fp32, bf16, int8 (default: all)")
    p.add_argument("--batch-sizes", type=csv_ints, help="offline batch sizes, e.g. 1,8,64")
    p.add_argument("--concurrency", type=csv_ints, help="closed-loop concurrency levels, e.g. 1,4,16,64")
    p.add_argument("--duration", type=float, help="seconds per measurement (offline and served)")
    p.add_argument("--url", help="gRPC HOST:PORT of a running server (default: start the embedded one)")
    p.add_argument("--http-url", help="HTTP HOST:PORT of that server (default: gRPC port - 1)")
    p.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    p.add_argument(
        "--build-dir",
        type=Path,
        default=REPO_ROOT / "build",
        help="exported engines (python -m export.default_repository writes them)",
    )
    p.add_argument("--data-dir", type=Path, help="CIFAR-10 data (default: ../shared/data/cifar-10-jpg)")
    p.add_argument("--no-server", action="store_true", help="offline only: no served load or served accuracy")
    p.add_argument("--check", type=Path, help="baselines JSON: exit 1 naming every accuracy regression")
    p.add_argument("--write-baselines", type=Path, help="write the measured offline accuracy as baselines JSON")
    p.add_argument("--tolerance", type=float, default=0.3, help="points of top-1/top-5 a baseline allows (0.3)")
    p.add_argument("--threads", type=int, help="threads per engine (default: all cores)")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<suite>)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


class Benchmark:
    def __init__(self, args) -> None:
        self.args = args
        suite = SUITES[args.suite]
        overrides = {}
        if args.models:
            overrides["models"] = args.models
        if args.duration:
            overrides["offline_duration_s"] = overrides["served_duration_s"] = args.duration
        if args.concurrency:
            overrides["concurrency"] = args.concurrency
        if args.no_server:
            overrides["served"] = False
        self.suite = replace(suite, **overrides)
        self.engines = args.engines or ENGINES
        unknown = set(self.engines) - set(ENGINES)
        if unknown:
            raise SystemExit(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")
        self.precisions = args.precisions or self.suite.precisions
        self.threads = args.threads or default_threads()
        self.out = args.out or REPO_ROOT / "benchmarks" / "results" / self.suite.name
        self.cifar_dir = args.data_dir or default_cifar_dir()
        self.results: dict = {
            "schema_version": SCHEMA_VERSION,
            "suite": self.suite.name,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "environment": environment(),
            "config": {
                "suite": asdict(self.suite),
                "engines": list(self.engines),
                "precisions": list(self.precisions),
                "threads": self.threads,
                "server": args.url or "embedded (started by this run)",
                "build_dir": str(args.build_dir),
                "data_dir": str(self.cifar_dir),
            },
            "offline": [],
            "served": [],
            "accuracy": [],
            "ratios": {},
        }
        self._test_set = None

    # ---- engines -------------------------------------------------------------------------------------

    def ensure_engines(self) -> None:
        needed = {m: why for m in self.suite.models if (why := stale_export(self.args.build_dir / m / "export.json"))}
        if needed:
            from resnet_serve.export.default_repository import build_default_repository

            log.info(
                "building the default repository into %s: %s",
                self.args.build_dir,
                "; ".join(f"{m}: {why}" for m, why in needed.items()),
            )
            build_default_repository(self.args.repository, self.args.build_dir, cifar_dir=self.cifar_dir)

    def engine_dirs(self, model: str) -> list[tuple[str, str, Path]]:
        summary = json.loads((self.args.build_dir / model / "export.json").read_text())
        return [
            (a["engine"], a["precision"], Path(a["path"]))
            for a in summary["artifacts"]
            if a["engine"] in self.engines and a["precision"] in self.precisions
        ]

    def checkpoint(self, model: str) -> Path:
        summary = json.loads((self.args.build_dir / model / "export.json").read_text())
        return Path(summary["model"]["checkpoint"])

    def engines_for(self, model: str) -> list[tuple[str, str, Engine]]:
        engines = []
        if "pytorch" in self.engines:
            for precision in ("fp32", "bf16"):
                if precision in self.precisions and (precision == "fp32" or self.suite.pytorch_bf16):
                    engines.append(
                        (
                            "pytorch",
                            precision,
                            TorchEngine.from_checkpoint(
                                self.checkpoint(model), precision=precision, threads=self.threads
                            ),
                        )
                    )
        if "pytorch" in self.engines and torch_cuda_available():
            from resnet_serve.engines.pytorch import CUDA_MODES, CudaTorchEngine

            engines += [
                (f"pytorch-{mode}", "fp16", CudaTorchEngine(self.checkpoint(model), mode)) for mode in CUDA_MODES
            ]
        for engine, precision, path in self.engine_dirs(model):
            try:
                engines.append((engine, precision, load_engine(path, threads=self.threads)))
            except EngineError as exc:
                log.warning("skipping %s %s: %s", engine, precision, exc)
        return engines

    # ---- data ------------------------------------------------------------------------------------------

    def test_set(self):
        """The CIFAR-10 test split: encoded bytes, labels, class names, preprocessed floats (decoded once).

        From an ImageFolder tree the files are sent as they are; from the official batches each image
        is sent as lossless PNG, so the server decodes exactly the pixels evaluated offline."""
        if self._test_set is None:
            if (self.cifar_dir / "test").is_dir():
                classes, samples = scan_image_folder(self.cifar_dir / "test")
                encoded = [path.read_bytes() for path, _ in samples]
                labels = np.array([label for _, label in samples])
                pixels = np.stack(
                    [preprocess_pixels(b, CIFAR10, source=str(p)) for b, (p, _) in zip(encoded, samples, strict=True)]
                )
            else:
                data = load_cifar10(self.cifar_dir, "test")
                classes, labels, pixels = data.classes, data.labels, data.images
                encoded = [encode_png(image) for image in pixels]
            self._test_set = (encoded, labels, classes, normalize(pixels, CIFAR10))
        return self._test_set

    def sample_batch(self, model: str, batch_size: int) -> tuple[np.ndarray, list[bytes]]:
        """Real images of the model's dataset, repeated to ``batch_size``: (float input, JPEG bytes)."""
        dataset = DATASETS[json.loads((self.args.build_dir / model / "export.json").read_text())["model"]["dataset"]]
        if dataset is CIFAR10:
            encoded, _, _, images = self.test_set()
        else:
            folder = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"
            files = sorted(folder.glob("*.JPEG"))[:64] if folder.is_dir() else []
            if files:
                encoded = [f.read_bytes() for f in files]
                images = np.stack([preprocess(b, IMAGENET) for b in encoded])
            else:  # no sample images: random pixels still time the engines correctly
                rng = np.random.default_rng(0)
                images = rng.standard_normal((16, *IMAGENET.input_shape), dtype=np.float32)
                encoded = []
        index = np.arange(batch_size) % len(images)
        return np.ascontiguousarray(images[index]), encoded

    # ---- measurements ---------------------------------------------------------------------------------

    def run_offline(self) -> None:
        for model in self.suite.models:
            batch_sizes = self.args.batch_sizes or self.suite.batch_sizes[model]
            engines = self.engines_for(model)
            plan = [(e, b) for e in engines for b in batch_sizes]
            for (engine, precision, runner), batch_size in progress(plan, f"offline {model}"):
                batch, _ = self.sample_batch(model, batch_size)
                figures = time_engine(runner, batch, duration_s=self.suite.offline_duration_s)
                info = runner.info()
                record = {
                    "model": model,
                    "engine": engine,
                    "precision": info["precision"],
                    "requested_precision": precision,
                    "threads": info["threads"],
                    "device": info["device"],
                    **figures,
                }
                self.results["offline"].append(record)
                log.info(
                    "offline %-9s %-12s %-5s batch %4d: %9.1f img/s  p50 %.2f ms",
                    model,
                    engine,
                    info["precision"],
                    batch_size,
                    figures["throughput_img_s"],
                    figures["latency_ms_p50"],
                )
        for r in self.results["offline"]:
            ref = next(
                (
                    x
                    for x in self.results["offline"]
                    if x["model"] == r["model"]
                    and x["engine"] == "pytorch"
                    and x["precision"] == "fp32"
                    and x["batch_size"] == r["batch_size"]
                ),
                None,
            )
            if ref:
                r["vs_pytorch_fp32"] = round(r["throughput_img_s"] / ref["throughput_img_s"], 2)

    def served_models(self, model: str) -> list[tuple[str, str]]:
        """(engine-precision, ensemble name) pairs to load-test."""
        written = json.loads((self.args.repository / f".{model}.models.json").read_text())
        if self.suite.served_engines == "default":
            engine = written["default"]["engine"]
            return [(engine, f"{model}_{engine.replace('-', '_')}")]
        return [
            (e.removeprefix(f"{model}_").replace("_", "-", 1), e)
            for e in written["ensembles"]
            if e != model
            and e.removeprefix(f"{model}_").split("_")[0] in self.engines
            and e.rsplit("_", 1)[-1] in self.precisions
        ]

    def run_served(self, grpc_url: str, http_url: str) -> None:
        import asyncio

        for model in self.suite.models:
            for engine, ensemble in self.served_models(model):
                classifier = f"{ensemble}_classifier"
                _, encoded = self.sample_batch(model, 1)
                jpeg = Payload(
                    ensemble, "image", "BYTES", [np.array([[b]], dtype=np.object_) for b in encoded[:256]], "jpeg"
                )
                # the classifier's own input (uint8 pixels or float32), made as the client library makes it
                connection = Connection(grpc_url, "grpc", 60.0)
                info = connection.model_info(classifier)
                connection.close()
                tensors = info.prepare(encoded[:64])
                tensor = Payload(
                    classifier,
                    info.input_name,
                    info.input_datatype,
                    [tensors[i : i + 1] for i in range(len(tensors))],
                    "tensor",
                )
                stats = [ensemble, f"preprocess_{self.dataset(model)}", classifier]
                runs = [("grpc", jpeg, c) for c in self.suite.concurrency]
                runs += [("http", jpeg, c) for c in self.suite.http_concurrency]
                runs += [("grpc", tensor, c) for c in self.suite.tensor_concurrency]
                peak = None
                for protocol, payload, concurrency in progress(runs, f"served {ensemble}"):
                    url = grpc_url if protocol == "grpc" else http_url
                    result = asyncio.run(
                        run_load(
                            url,
                            protocol,
                            payload,
                            stats_models=stats if payload is jpeg else [classifier],
                            concurrency=concurrency,
                            duration_s=self.suite.served_duration_s,
                        )
                    )
                    self._add_served(model, engine, result)
                    if payload is jpeg and protocol == "grpc":
                        peak = max(peak or 0.0, result["throughput_rps"])
                for fraction in self.suite.open_loop_fractions if peak else ():
                    rate = round(max(1.0, peak * fraction), 1)
                    result = asyncio.run(
                        run_load(
                            grpc_url,
                            "grpc",
                            jpeg,
                            stats_models=stats,
                            rate_rps=rate,
                            duration_s=self.suite.served_duration_s,
                        )
                    )
                    self._add_served(model, engine, result)

    def run_transport(self, grpc_url: str) -> None:
        from resnet_serve.benchmarks import transport

        rows = []
        for model in self.suite.models:
            written = json.loads((self.args.repository / f".{model}.models.json").read_text())
            classifier = written["classifiers"][0]
            _, encoded = self.sample_batch(model, 1)
            batch = {"cifar10": 256, "imagenet": 32}[self.dataset(model)]
            images = [encoded[i % len(encoded)] for i in range(batch)]
            rows += transport.measure(
                grpc_url, classifier, images, batch_size=batch, duration_s=self.suite.served_duration_s
            )
        self.results["transport"] = rows
        for model, ratio in transport.summarize(rows).items():
            self.results["ratios"][f"{model} shared memory / in-band img/s"] = ratio
            log.info("transport %s: shared memory / in-band = %.3f", model, ratio)

    def _add_served(self, model: str, engine: str, result: dict) -> None:
        result = {"arch": model, "engine": engine, **result}
        self.results["served"].append(result)
        load = f"c={result['concurrency']}" if result["mode"] == "closed" else f"{result['rate_rps']} req/s"
        log.info(
            "served %-38s %-4s %-6s %-11s %9.1f img/s  p50 %s ms  p99 %s ms  errors %d",
            result["model"],
            result["protocol"],
            result["payload"],
            load,
            result["throughput_img_s"],
            result.get("latency_ms_p50"),
            result.get("latency_ms_p99"),
            result["errors"],
        )

    def dataset(self, model: str) -> str:
        return json.loads((self.args.build_dir / model / "export.json").read_text())["model"]["dataset"]

    def run_accuracy(self, grpc_url: str | None) -> None:
        encoded, labels, classes, images = self.test_set()
        for model in self.suite.models:
            if self.dataset(model) != "cifar10":
                log.info("accuracy: skipping %s (no labelled %s test set here)", model, self.dataset(model))
                continue
            reference = acc.engine_logits(
                TorchEngine.from_checkpoint(self.checkpoint(model), threads=self.threads), images
            )
            base = acc.summarize(reference, labels, classes)
            records = [{"model": model, "engine": "pytorch", "precision": "fp32", "where": "offline", **base}]
            served = dict(self.served_models(model)) if grpc_url and self.suite.served else {}
            plan = [(e, p, d) for e, p, d in self.engine_dirs(model)]
            for engine, precision, directory in progress(plan, f"accuracy {model}"):
                offline_logits = acc.engine_logits(load_engine(directory, threads=self.threads), images)
                records.append(
                    {
                        "model": model,
                        "engine": engine,
                        "precision": precision,
                        "where": "offline",
                        **acc.summarize(offline_logits, labels, classes),
                    }
                )
                ensemble = served.get(f"{engine}-{precision}")
                if ensemble:
                    served_logits = acc.served_logits(grpc_url, "grpc", ensemble, encoded)
                    records.append(
                        {
                            "model": model,
                            "engine": engine,
                            "precision": precision,
                            "where": "served",
                            "served_model": ensemble,
                            **acc.summarize(served_logits, labels, classes),
                            **acc.agreement(served_logits, offline_logits),
                        }
                    )
            for r in records:
                r["top1_delta_pct"] = round(r["top1_pct"] - base["top1_pct"], 2)
                r["top5_delta_pct"] = round(r["top5_pct"] - base["top5_pct"], 2)
                log.info(
                    "accuracy %-8s %-12s %-5s %-8s top-1 %.2f%% (%+.2f)  top-5 %.2f%%",
                    r["model"],
                    r["engine"],
                    r["precision"],
                    r["where"],
                    r["top1_pct"],
                    r["top1_delta_pct"],
                    r["top5_pct"],
                )
            self.results["accuracy"] += records

    def ratios(self) -> None:
        ratios = self.results["ratios"]
        offline = self.results["offline"]
        for model in self.suite.models:
            rows = [r for r in offline if r["model"] == model]
            if not rows:
                continue
            biggest = max(r["batch_size"] for r in rows)
            at = {(r["engine"], r["precision"]): r["throughput_img_s"] for r in rows if r["batch_size"] == biggest}
            cpu = {k: v for k, v in at.items() if k[0] != "pytorch"}
            if cpu and ("pytorch", "fp32") in at:
                best = max(cpu, key=cpu.get)
                ratios[f"{model} best engine at batch {biggest}"] = f"{best[0]} {best[1]}"
                ratios[f"{model} best engine / pytorch fp32 (batch {biggest})"] = round(
                    cpu[best] / at[("pytorch", "fp32")], 2
                )
                if ("openvino", "fp32") in at:
                    ratios[f"{model} best engine / openvino fp32 (batch {biggest})"] = round(
                        cpu[best] / at[("openvino", "fp32")], 2
                    )
            for r in self.results["served"]:
                if r["arch"] != model or r["mode"] != "closed":
                    continue
                engine, precision = r["engine"].rsplit("-", 1)
                ref = at.get((engine, precision))
                if ref:
                    key = (
                        f"{model} served/offline {r['engine']} ({r['protocol']} {r['payload']} c={r['concurrency']}"
                        f" vs offline batch {biggest})"
                    )
                    ratios[key] = round(r["throughput_img_s"] / ref, 3)

    # ---- orchestration ----------------------------------------------------------------------------

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.ensure_engines()
        if self.suite.offline:
            self.run_offline()
        needs_server = self.suite.served and (self.suite.concurrency or self.suite.accuracy)
        if needs_server and self.args.url:
            grpc_url = self.args.url
            http_url = self.args.http_url or _http_from_grpc(grpc_url)
            self._served_phase(grpc_url, http_url)
        elif needs_server:
            from resnet_serve.server import running

            with running(self.args.repository, http_port=0, grpc_port=0, metrics_port=0) as server:
                self._served_phase(server.grpc_url, server.http_url)
        elif self.suite.accuracy:
            self.run_accuracy(None)
        self.ratios()
        code = 0
        if self.args.check:
            regressions = gate.check(
                self.results["accuracy"],
                gate.load_baselines(self.args.check),
                require_all=not (self.args.engines or self.args.precisions or self.args.models or self.args.no_server),
            )
            self.results["gate"] = {"baselines": str(self.args.check), "regressions": regressions}
            for problem in regressions:
                log.error("accuracy regression: %s", problem)
            code = 1 if regressions else 0
        if self.args.write_baselines:
            self.write_baselines(self.args.write_baselines)
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        path = self.out / "results.json"
        path.write_text(json.dumps(self.results, indent=2) + "\n")
        self.results["plots"] = report.plot(self.results, self.out)
        path.write_text(json.dumps(self.results, indent=2) + "\n")
        (self.out / "report.md").write_text(report.render(self.results))
        print(
            json.dumps(
                {
                    "results": str(path),
                    "report": str(self.out / "report.md"),
                    "ratios": self.results["ratios"],
                    "gate": self.results.get("gate"),
                },
                indent=2,
            )
        )
        return code

    def write_baselines(self, path: Path) -> None:
        """Baselines from this run's offline accuracy (served figures must equal them to be trusted)."""
        entries = []
        for r in self.results["accuracy"]:
            if r["where"] != "offline":
                continue
            entries.append(
                {
                    "model": r["model"],
                    "engine": r["engine"],
                    "precision": r["precision"],
                    "top1": r["top1_pct"],
                    "top5": r["top5_pct"],
                    "tolerance_pct": self.args.tolerance,
                }
            )
        data = {
            "schema_version": SCHEMA_VERSION,
            "data": f"{self.cifar_dir.name} test split ({self.results['accuracy'][0]['n']:,} images)",
            "measured": {
                "git_commit": self.results["environment"]["git_commit"],
                "cpu_model": self.results["environment"]["cpu_model"],
                "started": self.results["started"],
            },
            "command": "python benchmarks/run.py --suite accuracy --write-baselines " + str(path),
            "entries": entries,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
        log.info("wrote %d baselines to %s", len(entries), path)

    def _served_phase(self, grpc_url: str, http_url: str) -> None:
        if self.suite.concurrency:
            self.run_served(grpc_url, http_url)
        if self.suite.transport:
            self.run_transport(grpc_url)
        if self.suite.accuracy:
            self.run_accuracy(grpc_url)


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _http_from_grpc(url: str) -> str:
    host, port = url.rsplit(":", 1)
    return f"{host}:{int(port) - 1}"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("server", "nncf", "export", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return Benchmark(args).run()


if __name__ == "__main__":
    sys.exit(main())
