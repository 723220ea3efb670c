"""The export pipeline as a builder with explicit steps.

checkpoint -> prepared PyTorch model (BN folded, option A as conv) -> model.onnx (dynamic batch)
  -> engines: onnxruntime-{fp32,int8}, openvino-{fp32,bf16,int8}  (one folder each, with engine.json)
  -> tensorrt/: FP16 ONNX, explicit-Q/DQ INT8 ONNX, trtexec recipe (and plans where tensorrt imports)
  -> reports/: parity.json, accuracy.json, fusion.json + fusion.txt;  export.json: the summary
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from resnet_serve.engines import Engine, EngineError, load_engine, write_manifest
from resnet_serve.engines.base import require
from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine
from resnet_serve.export import fusion
from resnet_serve.export.calibration import HELD_OUT, CalibrationError, calibration_files, load_calibration_set
from resnet_serve.export.onnx_export import describe_io, export_onnx, op_counts, prepare_for_export, torch_logits
from resnet_serve.export.quantize import (
    METHODS,
    calibrate,
    check_tensorrt_qdq,
    preprocess_for_quantization,
    quantize_onnx,
    to_fp16,
)
from resnet_serve.resnets.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from resnet_serve.resnets.data import default_cifar_dir, load_cifar10
from resnet_serve.resnets.env import environment
from resnet_serve.resnets.evaluate import accuracy_report
from resnet_serve.resnets.models import arch_spec, build
from resnet_serve.resnets.spec import INPUT_NAME, OUTPUT_NAME, normalize

log = logging.getLogger("export")

ENGINE_PRECISIONS = {
    "gpu": ("fp16", "int8"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "fp16", "int8"),
    "tensorrt": ("fp16", "int8"),
}
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class ExportConfigError(ValueError):
    """Bad export options; the message says which and what is allowed."""


@dataclass
class ExportConfig:
    checkpoint: Path | None
    out: Path
    arch: str | None = None
    random_weights: bool = False
    engines: tuple[str, ...] = ("onnxruntime", "openvino")
    precisions: tuple[str, ...] = ("fp32", "int8")
    calibration_data: Path | None = None
    calibration_size: int = 512
    calibration_method: str = "minmax"  # or "auto": pick by agreement with FP32 on held-out training images
    openvino_preset: str = "mixed"
    tensorrt_ready: bool = True
    eval_data: Path | None = None
    eval_limit: int | None = None
    evaluate: bool = True
    threads: int | None = None
    device: str = "cpu"
    max_batch: int = 256  # TensorRT optimization profile: batch 1..max_batch, tuned for max_batch // 4

    labels: Path | None = None  # ImageNet class index JSON
    seed: int = 0

    @property
    def opt_batch(self) -> int:
        return max(1, self.max_batch // 4)

    def validate(self) -> None:
        unknown = [e for e in self.engines if e not in ENGINE_PRECISIONS]
        if unknown:
            raise ExportConfigError(
                f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINE_PRECISIONS)}"
            )
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ExportConfigError(f"unknown precision(s) {', '.join(bad)}; choose from {', '.join(PRECISIONS)}")
        if self.calibration_method not in (*METHODS, "auto"):
            raise ExportConfigError(
                f"unknown calibration method {self.calibration_method!r}; choose from {', '.join(METHODS)} or auto"
            )
        if self.checkpoint is None and not (self.random_weights and self.arch):
            raise ExportConfigError("pass --checkpoint PATH, or --arch NAME --random-weights for an untrained model")
        if self.device not in ("cpu", "cuda"):
            raise ExportConfigError(f"--device must be cpu or cuda, got {self.device!r}")


@dataclass
class Artifact:
    engine: str
    precision: str
    directory: Path
    file: str
    details: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}"


def qdq_level(tensorrt_int8: bool) -> str:
    """ORT optimization level for checking a quantized graph on this CPU. The TensorRT-ready INT8 graph
    runs unfused ("disable": every Q/DQ pair executed as written, convolutions in float), which computes
    what TensorRT's int8 kernels do with int32 accumulation; ORT's fused CPU int8 kernels would add
    their own int16 saturation on CPUs without VNNI and blame it on the graph."""
    return "disable" if tensorrt_int8 else "all"


class ExportBuilder:
    def __init__(self, config: ExportConfig) -> None:
        config.validate()
        self.config = config
        self.out = config.out
        self.reports = self.out / "reports"
        self.artifacts: list[Artifact] = []
        self.skipped: list[dict] = []
        self.summary: dict = {"environment": environment(), "steps": {}}
        self._calibration: tuple[np.ndarray, np.ndarray] | None = None
        self._eval: tuple[np.ndarray, np.ndarray, list[str]] | None = None
        self._caches: set[Path] = set()
        self.calibration_candidates: dict[str, Path] = {}  # "<engine>[<method>]" -> quantized graph

    # ---- steps -------------------------------------------------------------------------------------

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(exist_ok=True)
        for step in (
            self.load_model,
            self.export_onnx,
            self.build_engines,
            self.build_tensorrt_ready,
            self.evaluate,
            self.fusion_report,
        ):
            start = time.perf_counter()
            step()
            self.summary["steps"][step.__name__] = round(time.perf_counter() - start, 2)
        self.summary["artifacts"] = [
            {"name": a.name, "engine": a.engine, "precision": a.precision, "path": str(a.directory), **a.details}
            for a in self.artifacts
        ]
        self.summary["skipped"] = self.skipped
        (self.out / "export.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        return self.summary

    def load_model(self) -> None:
        cfg = self.config
        if cfg.checkpoint is not None:
            self.model, ckpt = load_checkpoint(cfg.checkpoint, cfg.arch)
            self.arch, meta = ckpt["arch"], ckpt.get("meta", {})
            weights, checkpoint = "trained", cfg.checkpoint
        else:
            torch.manual_seed(cfg.seed)
            self.arch, meta, weights = cfg.arch, {}, "random (untrained: for serving and speed tests, not accuracy)"
            self.model = build(cfg.arch).eval()
            _calibrate_random_bn(self.model, arch_spec(cfg.arch).dataset.input_shape)
            # saved, so PyTorch peers in the benchmarks run the very same weights
            checkpoint = save_checkpoint(
                self.out / "random_weights.pt",
                self.model,
                cfg.arch,
                shortcut=arch_spec(cfg.arch).shortcut,
                meta={"weights": weights},
            )
        self.spec = arch_spec(self.arch).dataset
        self.labels = self.spec.labels(cfg.labels)
        (self.out / "labels.txt").write_text("\n".join(self.labels) + "\n")
        self.summary["model"] = {
            "arch": self.arch,
            "dataset": self.spec.name,
            "weights": weights,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint),
            "checkpoint_test_top1": meta.get("test", {}).get("top1"),
        }
        log.info(
            "model: %s (%s weights), input float32 [N, %s]",
            self.arch,
            weights.split(" ")[0],
            ", ".join(map(str, self.spec.input_shape)),
        )

    def export_onnx(self) -> None:
        self.prepared = prepare_for_export(self.model)
        probe = torch.randn(8, *self.spec.input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            rewrite_diff = (self.model(probe) - self.prepared(probe)).abs().max().item()
        self.onnx_path = export_onnx(self.prepared, self.out / "model.onnx", self.spec.input_shape)
        self.summary["onnx"] = {
            "path": str(self.onnx_path),
            "io": describe_io(onnx.load(str(self.onnx_path))),
            "ops": dict(op_counts(self.onnx_path)),
            "rewrite_max_abs_diff": rewrite_diff,  # BN folding + option-A-as-conv vs the original module
            "batchnorm_modules_in_pytorch": sum(isinstance(m, torch.nn.BatchNorm2d) for m in self.model.modules()),
        }

    def build_engines(self) -> None:
        for engine in self.config.engines:
            if engine == "tensorrt":
                continue  # built in build_tensorrt_ready
            for precision in self.config.precisions:
                if precision not in ENGINE_PRECISIONS[engine]:
                    self._skip(
                        engine,
                        precision,
                        f"{engine} has no {precision} engine here (it offers {', '.join(ENGINE_PRECISIONS[engine])})",
                    )
                    continue
                getattr(self, f"_build_{engine}")(precision)

    def _build_onnxruntime(self, precision: str) -> None:
        directory = self.out / f"onnxruntime-{precision}"
        directory.mkdir(exist_ok=True)
        details: dict = {}
        if precision == "fp32":
            shutil.copyfile(self.onnx_path, directory / "model.onnx")
        else:
            details = self._quantize_onnxruntime(directory)
        self._add(Artifact("onnxruntime", precision, directory, "model.onnx", details))

    def _quantize_onnxruntime(self, directory: Path) -> dict:
        calibration = self.calibration()[0]
        chosen = self.quantize_best(directory / "model.onnx", symmetric=False, label="onnxruntime-int8")
        return {
            "calibration": {
                "images": len(calibration),
                "source": str(self._calibration_dir()),
                "activations": "uint8 asymmetric",
                "weights": "int8 symmetric per-channel",
                **chosen,
            }
        }

    def quantize_best(self, target: Path, *, symmetric: bool, label: str) -> dict:
        """Quantize the pre-processed ONNX into ``target``. With --calibration-method auto every method is
        tried and the one whose top-1 agrees most with FP32 on held-out *training* images is kept (the
        test split never chooses); the others stay beside it as ``<name>.<method>.onnx`` for the report."""
        methods = METHODS if self.config.calibration_method == "auto" else (self.config.calibration_method,)
        pre = self.preprocessed_onnx()
        if len(methods) == 1:
            quantize_onnx(pre, target, methods[0], self.calibration_cache(methods[0]), symmetric_activations=symmetric)
            return {"method": methods[0]}
        held_out = self.calibration()[1]
        reference = self._fp32_reference(held_out)
        candidates = {}
        for method in methods:
            path = target.with_name(f"{target.stem}.{method}.onnx")
            quantize_onnx(pre, path, method, self.calibration_cache(method), symmetric_activations=symmetric)
            logits = OnnxRuntimeEngine(path, threads=self.config.threads, optimization=qdq_level(symmetric)).infer(
                held_out
            )
            agreement = round(100.0 * float((logits.argmax(1) == reference).mean()), 2)
            candidates[method] = {"held_out_agreement": agreement}
            self.calibration_candidates[f"{label}[{method}]"] = path
            log.info(
                "%s calibration %s: top-1 agreement with FP32 on %d held-out training images: %.2f%%",
                label,
                method,
                len(held_out),
                agreement,
            )
        best = max(candidates, key=lambda m: candidates[m]["held_out_agreement"])
        shutil.copyfile(target.with_name(f"{target.stem}.{best}.onnx"), target)
        return {"method": best, "candidates": candidates}

    def _build_openvino(self, precision: str) -> None:
        from resnet_serve.engines.openvino import cpu_capabilities
        from resnet_serve.export.openvino_build import convert_ir, quantize_ir

        capability = {"bf16": "BF16", "fp16": "FP16"}.get(precision)
        if capability and capability not in (caps := cpu_capabilities()):
            self._skip(
                "openvino",
                precision,
                f"this CPU has no {precision} support (OpenVINO capabilities: "
                f"{', '.join(caps)}); OpenVINO would silently run f32",
            )
            return
        directory = self.out / f"openvino-{precision}"
        details: dict = {}
        if precision == "int8":
            calibration, _ = self.calibration()
            quantize_ir(self.onnx_path, directory / "model.xml", calibration, preset=self.config.openvino_preset)
            details = {
                "calibration": {
                    "images": len(calibration),
                    "tool": "nncf.quantize",
                    "preset": self.config.openvino_preset,
                }
            }
        else:
            convert_ir(self.onnx_path, directory / "model.xml")
        self._add(Artifact("openvino", precision, directory, "model.xml", details))

    def _build_gpu(self, precision: str) -> None:
        require("triton", "pip install triton (the GPU engine's kernels are Triton-lang)")
        from resnet_serve.export.gpu_build import build_gpu_engine

        directory = self.out / f"gpu-{precision}"
        calibration = self.calibration()[0] if precision == "int8" else None
        method = (
            "minmax"
            if self.config.calibration_method not in ("minmax", "percentile")
            else (self.config.calibration_method)
        )
        build_gpu_engine(
            self.prepared,
            directory,
            precision=precision,
            input_shape=self.spec.input_shape,
            calibration=calibration,
            method=method,
            max_batch=self.config.max_batch,
        )
        details = {"calibration": {"images": len(calibration), "method": method}} if calibration is not None else {}
        self._add(Artifact("gpu", precision, directory, "plan.json", details), device="cuda")

    def build_tensorrt_ready(self) -> None:
        if not (self.config.tensorrt_ready or "tensorrt" in self.config.engines):
            return
        from resnet_serve.export import tensorrt

        directory = self.out / "tensorrt"
        directory.mkdir(exist_ok=True)
        fp16 = to_fp16(self.onnx_path, directory / "model_fp16.onnx")
        chosen = self.quantize_best(directory / "model_int8_qdq.onnx", symmetric=True, label="tensorrt-ready-int8")
        int8 = directory / "model_int8_qdq.onnx"
        recipe = tensorrt.write_recipe(
            directory,
            {"fp16": fp16.name, "int8": int8.name},
            INPUT_NAME,
            self.spec.input_shape,
            max_batch=self.config.max_batch,
            opt_batch=self.config.opt_batch,
        )
        self.tensorrt = {"fp16": fp16, "int8": int8}
        self.summary["tensorrt"] = {
            "dir": str(directory),
            "recipe": str(recipe),
            "calibration": chosen,
            "int8_qdq": check_tensorrt_qdq(int8),
        }
        if "tensorrt" in self.config.engines:
            profile = tensorrt.shape_profile(
                INPUT_NAME, self.spec.input_shape, self.config.max_batch, self.config.opt_batch
            )
            for precision, onnx_file in self.tensorrt.items():
                if precision in self.config.precisions:
                    tensorrt.build_plan(
                        onnx_file, directory / f"model_{precision}.plan", profile, directory / "timing.cache"
                    )

    def evaluate(self) -> None:
        """Parity and accuracy of every engine on the evaluation split, against PyTorch FP32."""
        if not self.config.evaluate:
            return
        data = self.eval_data()
        if data is None:
            self.summary["accuracy"] = "skipped: no evaluation data (pass --eval-data)"
            return
        images, labels, classes = data
        reference = torch_logits(self.model, images)
        results = {
            "pytorch-fp32": {**accuracy_report(reference, labels, classes), "engine": "pytorch", "precision": "fp32"}
        }
        base = results["pytorch-fp32"]
        parity = {}
        engines: list[tuple[str, Engine]] = [(a.name, self.load(a)) for a in self.runnable()]
        for name, path in self.calibration_candidates.items():
            level = qdq_level(name.startswith("tensorrt-ready"))
            engines.append((name, OnnxRuntimeEngine(path, threads=self.config.threads, optimization=level)))
        for name, path in getattr(self, "tensorrt", {}).items():
            level = qdq_level(name == "int8")
            engines.append(
                (
                    f"tensorrt-ready-{name} (on onnxruntime)",
                    OnnxRuntimeEngine(path, threads=self.config.threads, optimization=level),
                )
            )
        for name, engine in engines:
            start = time.perf_counter()
            logits = np.concatenate([engine.infer(images[i : i + 500]) for i in range(0, len(images), 500)])
            seconds = time.perf_counter() - start
            report = accuracy_report(logits, labels, classes)
            report.pop("per_class")
            info = engine.info()
            results[name] = {
                **report,
                "engine": info["engine"],
                "precision": info["precision"],
                "top1_delta": round(report["top1"] - base["top1"], 2),
                "top5_delta": round(report["top5"] - base["top5"], 2),
                "img_s": round(len(images) / seconds, 1),
            }
            parity[name] = {
                "max_abs_logit_diff": float(np.abs(logits - reference).max()),
                "top1_agreement_pct": round(100.0 * float((logits.argmax(1) == reference.argmax(1)).mean()), 3),
            }
            log.info(
                "%-40s top-1 %.2f%% (%+.2f)  top-5 %.2f%%  max |logit diff| %.2e",
                name,
                report["top1"],
                results[name]["top1_delta"],
                report["top5"],
                parity[name]["max_abs_logit_diff"],
            )
        self.summary["accuracy"] = {"n": int(len(labels)), "source": str(self._eval_dir), "results": results}
        self.summary["parity"] = parity
        (self.reports / "accuracy.json").write_text(json.dumps(self.summary["accuracy"], indent=2) + "\n")
        (self.reports / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")

    def fusion_report(self) -> None:
        source = fusion.source_graph(self.onnx_path)
        rows = [
            fusion.GraphCounts(
                "pytorch module (before export)",
                convs=sum(isinstance(m, torch.nn.Conv2d) for m in self.model.modules()),
                batchnorm=self.summary["onnx"]["batchnorm_modules_in_pytorch"],
                residual_adds_in_source=len(source["adds"]),
                is_source=True,
            )
        ]
        exported = fusion.onnx_graph_counts(self.onnx_path, "exported ONNX (unoptimized)", len(source["adds"]))
        exported.is_source = True
        rows.append(exported)
        for artifact in self.runnable():
            if artifact.engine == "onnxruntime":
                optimized = self.reports / f"{artifact.name}.optimized.onnx"
                OnnxRuntimeEngine(
                    artifact.directory / artifact.file, threads=self.config.threads, optimized_model_path=optimized
                )
                rows.append(
                    fusion.onnx_graph_counts(optimized, f"{artifact.name} (ORT_ENABLE_ALL)", len(source["adds"]))
                )
            elif artifact.engine == "openvino":
                engine = self.load(artifact)
                rows.append(
                    fusion.openvino_graph_counts(
                        engine.compiled, source, f"{artifact.name} (runtime graph, runs {engine.info()['precision']})"
                    )
                )
        for name, path in getattr(self, "tensorrt", {}).items():
            optimized = self.reports / f"tensorrt-ready-{name}.ort-optimized.onnx"
            OnnxRuntimeEngine(path, threads=self.config.threads, optimized_model_path=optimized)
            rows.append(
                fusion.onnx_graph_counts(
                    optimized, f"tensorrt-ready {name} on ORT (ORT_ENABLE_ALL)", len(source["adds"])
                )
            )
        table = fusion.format_table(rows)
        self.summary["fusion"] = [r.as_dict() for r in rows]
        (self.reports / "fusion.json").write_text(json.dumps(self.summary["fusion"], indent=2) + "\n")
        (self.reports / "fusion.txt").write_text(table + "\n")
        log.info("fusion report (%s):\n%s", self.reports / "fusion.txt", table)

    # ---- helpers -----------------------------------------------------------------------------------

    def _add(self, artifact: Artifact, device: str | None = None) -> None:
        manifest = {
            "engine": artifact.engine,
            "precision": artifact.precision,
            "file": artifact.file,
            "arch": self.arch,
            "dataset": self.spec.name,
            "num_classes": len(self.labels),
            "device": device or self.config.device,
            "input": {"name": INPUT_NAME, "shape": [-1, *self.spec.input_shape], "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": [-1, len(self.labels)], "dtype": "float32"},
            "weights": self.summary["model"]["weights"],
            "checkpoint": self.summary["model"]["checkpoint"],
            **artifact.details,
        }
        write_manifest(artifact.directory, manifest)
        try:
            engine = self.load(artifact)  # proves it loads; records what really runs
            artifact.details["runs"] = {k: engine.info()[k] for k in ("engine", "precision", "threads")}
        except EngineError as exc:
            if artifact.engine != "gpu":
                raise
            artifact.details["runs"] = f"not run here: {exc}"  # built on a machine without CUDA
            log.warning("%s built but not loadable here: %s", artifact.name, exc)
        self.artifacts.append(artifact)
        log.info("engine %-18s -> %s", artifact.name, artifact.directory)

    def runnable(self) -> list[Artifact]:
        """Artifacts that run on this machine (a GPU engine built without CUDA does not)."""
        return [a for a in self.artifacts if isinstance(a.details.get("runs"), dict)]

    def load(self, artifact: Artifact) -> Engine:
        return load_engine(artifact.directory, threads=self.config.threads)

    def _skip(self, engine: str, precision: str, reason: str) -> None:
        log.warning("skipping %s-%s: %s", engine, precision, reason)
        self.skipped.append({"engine": engine, "precision": precision, "reason": reason})

    def _calibration_dir(self) -> Path:
        if self.config.calibration_data is not None:
            return self.config.calibration_data
        if self.spec.name == "cifar10":
            return default_cifar_dir()  # its train split (ImageFolder train/ or the official batches)
        raise ExportConfigError(
            f"INT8 for {self.arch} needs --calibration-data: a folder of training images "
            f"({self.spec.name} preprocessing is applied)"
        )

    def preprocessed_onnx(self) -> Path:
        pre = self.out / "model.preprocessed.onnx"
        if not pre.exists():
            preprocess_for_quantization(self.onnx_path, pre)
        return pre

    def calibration_cache(self, method: str) -> Path:
        """Activation ranges for ``method``, computed once and shared by every INT8 graph of this export."""
        cache = self.out / f"calibration.{method}.json"
        if cache not in self._caches:
            calibration, _ = self.calibration()
            calibrate(self.preprocessed_onnx(), calibration, method, cache, input_name=INPUT_NAME)
            self._caches.add(cache)
        return cache

    def sample_image(self) -> Path | None:
        """A real training image for model warmup, if calibration data is at hand."""
        try:
            return calibration_files(self._calibration_dir())[0]
        except (CalibrationError, ExportConfigError):
            return None

    def calibration(self) -> tuple[np.ndarray, np.ndarray]:
        if self._calibration is None:
            held_out = HELD_OUT if self.config.calibration_method == "auto" else 0
            self._calibration = load_calibration_set(
                self._calibration_dir(),
                self.spec,
                self.config.calibration_size,
                seed=self.config.seed,
                held_out=held_out,
            )
        return self._calibration

    def _fp32_reference(self, images: np.ndarray) -> np.ndarray:
        return torch_logits(self.model, images).argmax(1)

    def eval_data(self) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        if self._eval is not None:
            return self._eval
        directory = self.config.eval_data
        if directory is None and self.spec.name == "cifar10" and (default_cifar_dir() / "test").is_dir():
            directory = default_cifar_dir()
        if directory is None:
            return None
        self._eval_dir = directory
        if self.spec.name == "cifar10":
            data = load_cifar10(directory, "test")
            images, labels, classes = data.images, data.labels, data.classes
        else:
            from resnet_serve.resnets.data import load_image_folder_arrays

            data = load_image_folder_arrays(directory, self.spec)
            images, labels, classes = data.images, data.labels, data.classes
        if self.config.eval_limit:
            keep = np.sort(np.random.default_rng(self.config.seed).permutation(len(labels))[: self.config.eval_limit])
            images, labels = images[keep], labels[keep]
        self._eval = (normalize(images, self.spec), labels, classes)
        return self._eval


def _calibrate_random_bn(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Random weights: set BN statistics from a few random batches so activations stay in range."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *input_shape))
    model.eval()


__all__ = ["ExportBuilder", "ExportConfig", "ExportConfigError", "EngineError"]
