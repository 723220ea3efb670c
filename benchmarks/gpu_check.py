"""The prepared GPU check: one call on a CUDA host measures the GPU engine against cuDNN, CUDA graphs and
torch.compile, checks its accuracy, and serves it through Triton. Writes OUT/gpu_check.json and
OUT/gpu_check.md (after every section, so a call cut short still returns what it measured).

    # here, once: pack what the GPU host lacks into .gpu/ (git-ignored; under the 64 MiB a call carries)
    python -m resnet_serve.benchmarks.gpu_check pack --out .gpu
    # on the GPU host (the device tool: carry .gpu, timeout 540 s)
    bash scripts/gpu_check.sh "$OUT"

Sections, in order of importance, each timed and skipped with the reason when the time budget runs out:
environment; build (GPU engine FP16 + INT8 for ResNet-56, the committed checkpoint, and ResNet-50,
random weights, autotuned); parity (ResNet-56 on the full cifar-10-jpg test split against PyTorch FP32);
speed (ResNet-50 at batch 256, ResNet-56 at 1024: the GPU engine beside PyTorch eager FP16
channels_last and eager + CUDA graph); latency (ResNet-50 at batch 1, p50/p99); layers (ResNet-50
FP16, every convolution's time and TFLOP/s beside cuDNN's); served (the GPU repository under the
real Triton binary, ResNet-50 with 64 images per request at concurrency 4); compile (torch.compile
peers, their compile time stated). ``--tiny`` runs every section's code on a CPU in Triton's
interpreter with ResNet-20, a 32 px ResNet-18 and a few images (a test runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve import cli, settings
from resnet_serve.errors import UsageError
from resnet_serve.resnets.data import scan_image_folder
from resnet_serve.resnets.env import environment

log = logging.getLogger(__name__)

PACK_LIMIT_BYTES = 64 * 1024 * 1024  # what one device call carries: the working tree and .gpu together
DATA_FILE, SERVER_ARCHIVE, WHEELS = "data.npz", "server.tar.xz", "wheels"
FP16_TOP1_POINTS, INT8_TOP1_POINTS = 0.1, 0.5  # the accuracy the GPU engine must keep (ResNet-56, test split)


@dataclass(frozen=True)
class Setup:
    """The models and sizes one run measures (full on a GPU, tiny for the CPU test)."""

    cifar_arch: str
    cifar_batch: int
    imagenet_arch: str
    imagenet_size: int
    imagenet_batch: int
    test_images: int | None  # None: the whole test split
    calibration_images: int
    latency_iters: int
    tune: str


FULL = Setup("resnet56", 1024, "resnet50", 224, 256, None, 256, 200, "quick")
# the CPU run: the same code on small nets (ResNet-18 takes ResNet-50's stem, max-pool and projection paths)
TINY = Setup("resnet20", 2, "resnet18", 32, 1, 2, 16, 1, "quick")
# in Triton's CPU interpreter every program is slow: big tiles mean few programs (tiny runs only)
INTERPRETER_TILES = {"BM": 64, "BN": 128, "BK": 128, "num_warps": 4, "num_stages": 1}


# ---- the pack ------------------------------------------------------------------------------------------


def _concat(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), np.uint8).copy(), offsets


def _split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    return [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]


def make_pack(out: Path, *, server: bool, wheels: bool, test_limit: int | None = None) -> dict:
    """Write the GPU host's missing pieces into ``out``: the cifar-10-jpg test split (JPEG bytes as they are)
    with 512 training images for calibration and 64 ImageNet samples in one npz; the Triton server and its
    libraries (only the Python 3.12 stub) as one archive; the tritonclient wheels for Python 3.12."""
    out.mkdir(parents=True, exist_ok=True)
    cifar = settings.cifar_dir()
    classes, test = scan_image_folder(cifar / "test")
    _, train = scan_image_folder(cifar / "train")
    test = test[:test_limit] if test_limit else test
    pick = np.random.default_rng(0).permutation(len(train))[:512]
    imagenet = sorted(settings.imagenet_sample_dir().glob("*.JPEG"))[:64]
    arrays = {}
    for name, files in (("test", test), ("train", [train[i] for i in pick])):
        arrays[f"{name}_jpeg"], arrays[f"{name}_offsets"] = _concat([p.read_bytes() for p, _ in files])
        arrays[f"{name}_labels"] = np.array([label for _, label in files], np.int64)
    arrays["imagenet_jpeg"], arrays["imagenet_offsets"] = _concat([p.read_bytes() for p in imagenet])
    arrays["classes"] = np.array(classes)
    np.savez(out / DATA_FILE, **arrays)
    notes = {}
    if server:
        import pytriton

        root = Path(pytriton.__file__).resolve().parent
        with tarfile.open(out / SERVER_ARCHIVE, "w:xz", preset=6) as tar:
            tar.add(root.parent / "nvidia_pytriton.libs", "nvidia_pytriton.libs", filter=_only_needed_libs)
            for part in ("bin", "backends/python", "python_backend_stubs/3.12"):
                tar.add(root / "tritonserver" / part, f"pytriton/tritonserver/{part}")
    if wheels:
        (out / WHEELS).mkdir(exist_ok=True)
        import importlib.metadata

        wanted = [f"tritonclient=={importlib.metadata.version('tritonclient')}", "python-rapidjson"]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "--platform",
             "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64", "-d", str(out / WHEELS), *wanted],
            check=True,
        )  # fmt: skip
    sizes = {p.name: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    total = sum(sizes.values())
    if total > PACK_LIMIT_BYTES:
        notes["over_limit"] = f"{total / 2**20:.1f} MiB is above one call's {PACK_LIMIT_BYTES / 2**20:.0f} MiB"
    return {"folder": str(out), "files": sizes, "total_mib": round(total / 2**20, 2), **notes}


def _only_needed_libs(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """The GPU host runs Python 3.12: the bundled libpython 3.13 (for the 3.13 stub) is left out."""
    return None if "libpython3" in info.name else info


def working_tree_bytes() -> int:
    """The bytes one device call sends besides .gpu: the tracked and untracked-not-ignored files."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], capture_output=True, text=True, check=True
    ).stdout.split()
    return sum(Path(f).stat().st_size for f in files if Path(f).is_file())


# ---- the check -------------------------------------------------------------------------------------------


class Check:
    """Runs sections within a time budget and records each one's outcome, time and figures."""

    def __init__(self, out: Path, pack: Path, setup: Setup, budget_s: float, compile_peers: bool) -> None:
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.out, self.pack, self.setup = out, pack, setup
        self.deadline = time.monotonic() + budget_s
        self.compile_peers = compile_peers
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.results: dict = {"setup": setup.__dict__, "budget_s": budget_s, "sections": {}}
        self.data = np.load(pack / DATA_FILE)

    # bookkeeping

    def section(self, name: str, fn, *, cuda: bool = False, reserve_s: float = 0.0) -> None:
        record: dict
        left = self.deadline - time.monotonic()
        if cuda and not self.cuda:
            record = {"status": "skipped", "reason": "needs a CUDA GPU"}
        elif left < reserve_s:
            record = {"status": "skipped", "reason": f"time budget: {left:.0f} s left, needs about {reserve_s:.0f} s"}
        else:
            start = time.perf_counter()
            try:
                record = {"status": "ok", **fn()}
            except Exception as exc:  # noqa: BLE001 - one section failing must not lose the others' figures
                record = {
                    "status": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            record["seconds"] = round(time.perf_counter() - start, 1)
        self.results["sections"][name] = record
        log.info("section %s: %s (%s s)", name, record["status"], record.get("seconds", "-"))
        self.save()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(render(self.results))

    def ok(self, name: str) -> dict | None:
        record = self.results["sections"].get(name, {})
        return record if record.get("status") == "ok" else None

    # data

    def jpegs(self, name: str) -> list[bytes]:
        return _split(self.data[f"{name}_jpeg"], self.data[f"{name}_offsets"])

    def write_images(self, name: str, folder: Path, limit: int | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for i, blob in enumerate(self.jpegs(name)[:limit]):
            (folder / f"{name}_{i:05d}.jpg").write_bytes(blob)
        return folder

    # sections

    def environment(self) -> dict:
        torch = self.torch
        info = {"environment": environment(), "torch": torch.__version__, "cuda": self.cuda}
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            info.update(
                gpu=props.name, sm_count=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1)
            )
        return info

    def build(self) -> dict:
        from resnet_serve.export.config import ExportConfig
        from resnet_serve.export.pipeline import run_export
        from resnet_serve.resnets.contract import ContractFlags

        s = self.setup
        cifar_calib = self.write_images("train", self.work / "cifar-train", s.calibration_images)
        imagenet_calib = self.write_images("imagenet", self.work / "imagenet-calib", s.calibration_images)
        size = s.imagenet_size
        common = dict(
            engines=("gpu",),
            precisions=("fp16", "int8"),
            tensorrt_ready=False,
            evaluate=False,
            calibration_size=s.calibration_images,
            gpu_tune=s.tune,
        )
        configs = {
            "cifar": ExportConfig(
                checkpoint=Path("checkpoints") / f"{s.cifar_arch}.pt",
                out=self.work / "build" / s.cifar_arch,
                calibration_data=cifar_calib,
                max_batch=s.cifar_batch,
                **common,
            ),
            "imagenet": ExportConfig(
                checkpoint=None,
                arch=s.imagenet_arch,
                random_weights=True,
                out=self.work / "build" / s.imagenet_arch,
                calibration_data=imagenet_calib,
                max_batch=s.imagenet_batch,
                contract=ContractFlags(image_size=size, resize_size=max(size, round(size * 256 / 224))),
                **common,
            ),
        }
        built = {}
        for key, config in configs.items():
            start = time.perf_counter()
            summary = run_export(config)
            if not self.cuda:
                for artifact in summary.artifacts:
                    _interpreter_tiles(Path(artifact.path))
            built[key] = {
                "arch": summary.model.arch,
                "export_dir": str(config.out),
                "seconds": round(time.perf_counter() - start, 1),
                "engines": {
                    a.name: {"path": a.path, "autotuned": a.details.get("autotuned"), "runs": a.runs}
                    for a in summary.artifacts
                },
                "fallbacks": summary.fallbacks,
                "steps_s": summary.steps,
            }
        return built

    def engines(self, key: str) -> dict:
        from resnet_serve.engines import load_engine

        build = self.ok("build")
        if build is None:
            raise RuntimeError("the build section did not succeed")
        return {name: load_engine(e["path"]) for name, e in build[key]["engines"].items()}

    def model(self, key: str):
        from resnet_serve.resnets.checkpoint import load_checkpoint

        build = self.ok("build")
        summary = json.loads((Path(build[key]["export_dir"]) / "export.json").read_text())
        model, _ = load_checkpoint(summary["model"]["checkpoint"])
        return model

    def parity(self) -> dict:
        from resnet_serve.engines.pytorch import TorchEngine
        from resnet_serve.resnets.metrics import accuracy_report, top1_agreement_pct
        from resnet_serve.resnets.spec import CIFAR10, normalize, preprocess_pixels

        s = self.setup
        blobs = self.jpegs("test")[: s.test_images]
        labels = self.data["test_labels"][: len(blobs)]
        classes = [str(c) for c in self.data["classes"]]
        images = normalize(np.stack([preprocess_pixels(b, CIFAR10) for b in blobs]), CIFAR10)
        reference = TorchEngine(self.model("cifar"), s.cifar_arch, device=self.device).infer_all(
            images, batch_size=1000
        )
        base = accuracy_report(reference, labels, classes)
        rows = {"pytorch-fp32": {"top1": base["top1"], "top5": base["top5"]}}
        for name, engine in self.engines("cifar").items():
            logits = engine.infer_all(images, batch_size=min(1000, s.cifar_batch))
            report = accuracy_report(logits, labels, classes)
            limit = FP16_TOP1_POINTS if name.endswith("fp16") else INT8_TOP1_POINTS
            delta = round(report["top1"] - base["top1"], 2)
            rows[name] = {
                "top1": report["top1"],
                "top5": report["top5"],
                "top1_delta": delta,
                "top1_agreement_pct": top1_agreement_pct(logits, reference),
                "max_abs_logit_diff": float(np.abs(logits - reference).max()),
                "meets_target": abs(delta) <= limit,
                "target": f"|top-1 delta| <= {limit} points",
            }
        return {"model": s.cifar_arch, "images": len(labels), "results": rows}

    def _peers(self, key: str, modes: tuple[str, ...]) -> dict:
        from resnet_serve.engines.pytorch import CudaTorchEngine

        checkpoint = json.loads((Path(self.ok("build")[key]["export_dir"]) / "export.json").read_text())["model"][
            "checkpoint"
        ]
        return {f"pytorch-{mode} fp16": CudaTorchEngine(checkpoint, mode) for mode in modes}

    def _time(self, fn, x, iters: int | None = None) -> float:
        """Seconds per call, device-synchronised (CUDA events on a GPU), after warm-up."""
        torch = self.torch
        if not self.cuda:  # the CPU run checks the code, not the speed: one timed call
            start = time.perf_counter()
            fn(x)
            return time.perf_counter() - start
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        count, total = 0, 0.0
        while count < (iters or 5) or (iters is None and total < 1.0 and count < 200):
            begin.record()
            fn(x)
            end.record()
            end.synchronize()
            total += begin.elapsed_time(end) / 1000.0
            count += 1
        return total / count

    def speed(self) -> dict:
        torch = self.torch
        s = self.setup
        rows = {}
        for key, batch, side in (("imagenet", s.imagenet_batch, s.imagenet_size), ("cifar", s.cifar_batch, 32)):
            x = torch.randn(batch, 3, side, side, device=self.device)
            engines = {f"gpu-engine {name.split('-')[1]}": e for name, e in self.engines(key).items()}
            if self.cuda:
                engines.update(self._peers(key, ("eager", "cuda-graph")))
            for name, engine in engines.items():
                seconds = self._time(engine.infer_torch, x)
                rows[f"{key} {name}"] = {
                    "model": self.ok("build")[key]["arch"],
                    "engine": name,
                    "batch": batch,
                    "img_s": round(batch / seconds, 1),
                    "ms": round(seconds * 1000, 3),
                }
        return {"rows": rows}

    def latency(self) -> dict:
        torch = self.torch
        s = self.setup
        x = torch.randn(1, 3, s.imagenet_size, s.imagenet_size, device=self.device)
        engines = {f"gpu-engine {name.split('-')[1]} (CUDA graph)": e for name, e in self.engines("imagenet").items()}
        if self.cuda:
            engines.update(self._peers("imagenet", ("cuda-graph", "eager")))
        rows = {}
        for name, engine in engines.items():
            times = [self._time(engine.infer_torch, x, iters=1) for _ in range(s.latency_iters)]
            ms = np.asarray(times) * 1000
            rows[name] = {
                "p50_ms": round(float(np.percentile(ms, 50)), 4),
                "p99_ms": round(float(np.percentile(ms, 99)), 4),
            }
        return {"model": s.imagenet_arch, "batch": 1, "iterations": s.latency_iters, "rows": rows}

    def layers(self) -> dict:
        torch = self.torch
        from resnet_serve.engines.gpu.engine import GpuEngine

        s = self.setup
        path = self.ok("build")["imagenet"]["engines"]["gpu-fp16"]["path"]
        engine = GpuEngine(path, use_cuda_graph=False, device=None if self.cuda else "cpu")
        batch = s.imagenet_batch
        bucket = engine.bucket(batch)
        bucket["input"].normal_()
        engine.forward(bucket)
        rows, total_ms, cudnn_total = [], 0.0, 0.0
        for op in engine.plan.convs:
            src, dst = engine.plan.tensors[op.src], engine.plan.tensors[op.dst]
            config = op.tiles[bucket["class"]].config
            ms = self._time(lambda _x, op=op, config=config: engine.conv(op, bucket, config), None) * 1000
            weight = torch.randn(
                dst.c, src.c, op.kh, op.kw, device=self.device, dtype=torch.float16 if self.cuda else torch.float32
            )
            x = torch.randn(bucket["size"], src.c, src.h, src.w, device=self.device, dtype=weight.dtype).contiguous(
                memory_format=torch.channels_last
            )
            cudnn_ms = (
                self._time(
                    lambda inp, w=weight, op=op: torch.nn.functional.conv2d(inp, w, stride=op.stride, padding=op.pad), x
                )
                * 1000
            )
            flops = 2.0 * bucket["size"] * dst.h * dst.w * dst.c * op.kh * op.kw * src.c
            total_ms += ms
            cudnn_total += cudnn_ms
            rows.append(
                {
                    "layer": op.name,
                    "shape": f"{src.c}->{dst.c} {op.kh}x{op.kw}/{op.stride} out {dst.h}x{dst.w}",
                    "residual": op.residual is not None,
                    "ms": round(ms, 4),
                    "tflop_s": float(f"{flops / (ms / 1000) / 1e12:.3g}"),
                    "cudnn_ms": round(cudnn_ms, 4),
                    "vs_cudnn": round(ms / cudnn_ms, 2) if cudnn_ms else None,
                    "tiles": config,
                    "tuned": op.tiles[bucket["class"]].tuned,
                }
            )
        worst = sorted(rows, key=lambda r: -(r["ms"] - r["cudnn_ms"]))[:5]
        return {
            "model": s.imagenet_arch,
            "precision": "fp16",
            "batch": bucket["size"],
            "convs_ms": round(total_ms, 3),
            "cudnn_convs_ms": round(cudnn_total, 3),
            "most_behind_cudnn": [r["layer"] for r in worst],
            "rows": rows,
        }

    def served(self) -> dict:
        archive = self.pack / SERVER_ARCHIVE
        if not archive.is_file():
            return {"measured": False, "reason": f"the Triton server was not packed ({archive} absent)"}
        try:
            import tritonclient.grpc  # noqa: F401
        except ImportError as exc:
            return {"measured": False, "reason": f"tritonclient is not importable here ({exc})"}
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        libpython = f"libpython{version}.so.1.0"
        libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
        ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
        known = (
            subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout if Path(ldconfig).exists() else ""
        )
        if not (libdir / libpython).exists() and libpython not in known:
            return {
                "measured": False,
                "reason": f"the Python {version} backend stub needs {libpython}, which this host lacks",
            }
        from resnet_serve.benchmarks.load import Payload, run_load
        from resnet_serve.export.repository import write_repository
        from resnet_serve.server.triton import running

        root = self.work / "triton"
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        build = self.ok("build")["imagenet"]
        sample = self.write_images("imagenet", self.work / "imagenet-sample", 1) / "imagenet_00000.jpg"
        network = write_repository(self.work / "repo", build["export_dir"], profile="gpu", sample_image=sample)
        served = network.engine("gpu-fp16")
        blobs = self.jpegs("imagenet")
        batches = [np.array([[blobs[(i + j) % len(blobs)]] for j in range(64)], dtype=np.object_) for i in range(4)]
        payload = Payload(served.ensemble, "image", "BYTES", batches, "jpeg x64")
        with running(
            self.work / "repo",
            http_port=0,
            grpc_port=0,
            metrics_port=0,
            triton_root=root / "pytriton" / "tritonserver",
            startup_timeout_s=240,
        ) as server:
            result = asyncio.run(
                run_load(
                    server.grpc_url,
                    "grpc",
                    payload,
                    stats_models=[served.ensemble, network.preprocess, served.classifier],
                    concurrency=4,
                    duration_s=10.0,
                )
            )
        offline = self.engines("imagenet")["gpu-fp16"]
        x = self.torch.randn(64, 3, self.setup.imagenet_size, self.setup.imagenet_size, device=self.device)
        offline_img_s = 64 / self._time(offline.infer_torch, x)
        return {
            "measured": True,
            "model": served.ensemble,
            "images_per_request": 64,
            "concurrency": 4,
            "img_s": result["throughput_img_s"],
            "latency_ms_p50": result.get("latency_ms_p50"),
            "latency_ms_p99": result.get("latency_ms_p99"),
            "errors": result["errors"],
            "error_examples": result["error_examples"],
            "offline_engine_img_s_batch64": round(offline_img_s, 1),
            "served_over_offline": round(result["throughput_img_s"] / offline_img_s, 3),
            "server_breakdown": result["server"],
        }

    def compile(self) -> dict:
        torch = self.torch
        s = self.setup
        rows = {}
        for key, batch, side in (("imagenet", s.imagenet_batch, s.imagenet_size), ("cifar", s.cifar_batch, 32)):
            engine = self._peers(key, ("compile",))["pytorch-compile fp16"]
            x = torch.randn(batch, 3, side, side, device=self.device)
            start = time.perf_counter()
            engine.infer_torch(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - start
            seconds = self._time(engine.infer_torch, x)
            rows[key] = {
                "model": self.ok("build")[key]["arch"],
                "batch": batch,
                "img_s": round(batch / seconds, 1),
                "compile_s": round(compile_s, 1),
            }
            if self.deadline - time.monotonic() < 60:
                break
        return {"rows": rows}

    def run(self) -> dict:
        self.section("environment", self.environment)
        self.section("build", self.build)
        self.section("parity", self.parity)
        self.section("speed", self.speed, reserve_s=20)
        self.section("latency", self.latency, reserve_s=15)
        self.section("layers", self.layers, reserve_s=20)
        self.section("served", self.served, cuda=True, reserve_s=60)
        if self.compile_peers:
            self.section("compile", self.compile, cuda=True, reserve_s=90)
        else:
            self.results["sections"]["compile"] = {"status": "skipped", "reason": "--no-compile"}
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.save()
        shutil.rmtree(self.work, ignore_errors=True)
        return self.results


def _interpreter_tiles(directory: Path) -> None:
    from resnet_serve.engines.gpu.plan import BATCH_CLASSES, Plan, Tiles

    plan = Plan.load(directory)
    for op in plan.convs:
        op.tiles = {label: Tiles(config=dict(INTERPRETER_TILES), tuned=False) for label in BATCH_CLASSES}
    plan.save(directory)


# ---- the summary -------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows
    ]


def render(results: dict) -> str:
    sections, setup = results["sections"], results["setup"]
    env = sections.get("environment", {})

    def ok(name: str) -> dict | None:
        return sections[name] if sections.get(name, {}).get("status") == "ok" else None

    lines = [
        "# GPU check",
        "",
        f"GPU: {env.get('gpu', 'none (CPU, Triton interpreter)')}; torch {env.get('torch')}, "
        f"triton {env.get('triton')}; {setup['cifar_arch']} and {setup['imagenet_arch']} at "
        f"{setup['imagenet_size']} px; "
        f"budget {results['budget_s']} s.",
        "",
        "| section | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, record in sections.items():
        note = str(record.get("reason") or record.get("error", ""))[:160]
        lines.append(f"| {name} | {record['status']} | {record.get('seconds', '-')} | {note} |")
    if parity := ok("parity"):
        lines += ["", f"## Parity: {parity['model']}, {parity['images']:,} test images", ""]
        rows = [
            [k, r["top1"], r["top5"], r.get("top1_delta"), r.get("top1_agreement_pct"), r.get("meets_target")]
            for k, r in parity["results"].items()
        ]
        lines += _table(["engine", "top-1 %", "top-5 %", "delta", "agreement %", "target met"], rows)
    if speed := ok("speed"):
        lines += ["", "## Throughput (device time, inputs on the GPU)", ""]
        rows = [[r["model"], r["engine"], r["batch"], r["img_s"], r["ms"]] for r in speed["rows"].values()]
        lines += _table(["model", "engine", "batch", "img/s", "ms"], rows)
    if compiled := ok("compile"):
        lines += ["", "## torch.compile", ""]
        rows = [[r["model"], r["batch"], r["img_s"], r["compile_s"]] for r in compiled["rows"].values()]
        lines += _table(["model", "batch", "img/s", "compile s"], rows)
    if latency := ok("latency"):
        lines += ["", f"## {latency['model']} batch-1 latency", ""]
        lines += _table(
            ["engine", "p50 ms", "p99 ms"], [[k, r["p50_ms"], r["p99_ms"]] for k, r in latency["rows"].items()]
        )
    if layers := ok("layers"):
        lines += [
            "",
            f"## {layers['model']} FP16 per convolution, batch {layers['batch']}: {layers['convs_ms']} ms "
            f"(cuDNN: {layers['cudnn_convs_ms']} ms)",
            "",
        ]
        rows = [
            [r["layer"], r["shape"], r["ms"], r["tflop_s"], r["cudnn_ms"], r["vs_cudnn"], r["tuned"]]
            for r in layers["rows"]
        ]
        lines += _table(["layer", "shape", "ms", "TFLOP/s", "cuDNN ms", "x cuDNN", "tuned"], rows)
    if served := ok("served"):
        lines += ["", "## Served through Triton", ""]
        if served.get("measured"):
            lines.append(
                f"{served['model']}, {served['images_per_request']} JPEGs per request, concurrency "
                f"{served['concurrency']}: {served['img_s']} img/s, p99 {served['latency_ms_p99']} ms, errors "
                f"{served['errors']}; served / offline engine at batch 64: {served['served_over_offline']}"
            )
        else:
            lines.append(f"not measured: {served['reason']}")
    return "\n".join(lines) + "\n"


# ---- command line ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resnet_serve.benchmarks.gpu_check", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the check (on a CUDA host; --tiny on a CPU)")
    run.add_argument("out", type=cli.out_dir, help="folder for gpu_check.json and gpu_check.md")
    run.add_argument("--pack", type=Path, default=Path(".gpu"), help="what `pack` wrote (default .gpu)")
    run.add_argument(
        "--budget-s", type=cli.positive_float, default=450.0, help="seconds for all sections (default 450)"
    )
    run.add_argument("--tiny", action="store_true", help="ResNet-20, a 32 px ResNet-18, a few images: the CPU test")
    run.add_argument("--no-compile", dest="compile_peers", action="store_false", help="skip the torch.compile peers")
    run.add_argument("-v", "--verbose", action="store_true")
    pack = sub.add_parser("pack", help="here: write the GPU host's missing pieces into one git-ignored folder")
    pack.add_argument("--out", type=cli.out_dir, default=Path(".gpu"))
    pack.add_argument("--no-server", dest="server", action="store_false", help="leave out the Triton server")
    pack.add_argument("--no-wheels", dest="wheels", action="store_false", help="leave out the tritonclient wheels")
    pack.add_argument("--test-limit", type=cli.positive_int, help="pack only the first N test images")
    return p


def main_job(args) -> int:
    if args.command == "pack":
        summary = make_pack(args.out, server=args.server, wheels=args.wheels, test_limit=args.test_limit)
        summary["working_tree_mib"] = round(working_tree_bytes() / 2**20, 2)
        summary["call_mib"] = round(summary["total_mib"] + summary["working_tree_mib"], 2)
        print(json.dumps(summary, indent=2))
        if summary["call_mib"] * 2**20 > PACK_LIMIT_BYTES:
            raise UsageError(
                f"one device call would carry {summary['call_mib']} MiB, above 64 MiB: pack with --no-server"
            )
        return 0
    if not (args.pack / DATA_FILE).is_file():
        raise UsageError(
            f"{args.pack / DATA_FILE} is missing: run `python -m resnet_serve.benchmarks.gpu_check pack` first"
        )
    check = Check(args.out, args.pack, TINY if args.tiny else FULL, args.budget_s, args.compile_peers)
    results = check.run()
    failed = [name for name, r in results["sections"].items() if r["status"] == "failed"]
    print(json.dumps({name: r["status"] for name, r in results["sections"].items()}, indent=1))
    return 1 if failed else 0


def main(argv=None) -> int:
    return cli.run(build_parser(), main_job, argv)


if __name__ == "__main__":
    sys.exit(main())
