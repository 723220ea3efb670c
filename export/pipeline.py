"""The export pipeline: explicit steps, each taking and returning its artifacts.

checkpoint -> load_model -> export_to_onnx (BN folded, option A as conv, dynamic batch)
  -> build_engines: onnxruntime-{fp32,int8}, openvino-{fp32,bf16,int8}, gpu-{fp16,int8}  (engine.json each)
  -> build_tensorrt_ready: tensorrt/ FP16 ONNX, explicit-Q/DQ INT8 ONNX, trtexec recipe (plans where TensorRT imports)
  -> evaluate: every engine and candidate against PyTorch FP32 (reports/accuracy.json, parity.json)
  -> fusion_report: what each engine really runs (reports/fusion.json, fusion.txt)
  -> OUT/export.json (``ExportSummary``), with every skipped engine and every fallback and its reason
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from resnet_serve import settings
from resnet_serve.engines import load_engine
from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine
from resnet_serve.engines.pytorch import TorchEngine
from resnet_serve.export import fusion
from resnet_serve.export.builders import BuildContext, build_engines
from resnet_serve.export.calibration import Calibration, Candidate, qdq_level
from resnet_serve.export.config import ExportConfig
from resnet_serve.export.onnx_export import describe_io, export_onnx, op_counts, prepare_for_export
from resnet_serve.export.quantize import check_tensorrt_qdq, to_fp16
from resnet_serve.export.summary import LABELS_FILE, ArtifactRecord, ExportSummary, ModelRecord, file_sha256
from resnet_serve.resnets.checkpoint import load_checkpoint, save_checkpoint
from resnet_serve.resnets.data import find_cifar_batches, load_cifar10, load_image_folder_arrays
from resnet_serve.resnets.env import environment
from resnet_serve.resnets.metrics import accuracy_report, top1_agreement_pct
from resnet_serve.resnets.models import ResNet, arch_spec, build
from resnet_serve.resnets.spec import INPUT_NAME, DatasetSpec, normalize

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random (untrained: for serving and speed tests, not accuracy)"


@dataclass
class LoadedModel:
    model: ResNet
    spec: DatasetSpec
    labels: list[str]
    record: ModelRecord


@dataclass
class OnnxModel:
    path: Path
    prepared: ResNet  # the module the ONNX was exported from
    info: dict


@dataclass
class TensorRTReady:
    directory: Path
    graphs: dict[str, Path]  # precision -> ONNX file (fp16, int8 Q/DQ)
    recipe: Path
    calibration: dict
    qdq: dict

    def as_dict(self) -> dict:
        return {
            "dir": str(self.directory),
            "recipe": str(self.recipe),
            "calibration": self.calibration,
            "int8_qdq": self.qdq,
        }


def load_model(config: ExportConfig) -> LoadedModel:
    """The checkpoint's model (or an untrained one, saved so the benchmarks' PyTorch peers run it too)."""
    if config.checkpoint is not None:
        model, ckpt = load_checkpoint(config.checkpoint, config.arch)
        arch, meta, weights, checkpoint = ckpt["arch"], ckpt.get("meta", {}), "trained", config.checkpoint
    else:
        torch.manual_seed(config.seed)
        arch, meta, weights = config.arch, {}, RANDOM_WEIGHTS
        model = build(arch).eval()
        _calibrate_random_bn(model, arch_spec(arch).dataset.input_shape)
        checkpoint = save_checkpoint(
            config.out / "random_weights.pt", model, arch, shortcut=arch_spec(arch).shortcut, meta={"weights": weights}
        )
    spec = arch_spec(arch).dataset
    labels = spec.labels(config.labels)
    (config.out / LABELS_FILE).write_text("\n".join(labels) + "\n")
    record = ModelRecord(
        arch=arch,
        weights=weights,
        checkpoint=str(checkpoint),
        checkpoint_sha256=file_sha256(checkpoint),
        contract=spec.as_parameters(),
        checkpoint_test_top1=meta.get("test", {}).get("top1"),
    )
    log.info(
        "model: %s (%s weights), input float32 [N, %s]",
        arch,
        weights.split(" ")[0],
        ", ".join(map(str, spec.input_shape)),
    )
    return LoadedModel(model, spec, labels, record)


def export_to_onnx(loaded: LoadedModel, out: Path) -> OnnxModel:
    prepared = prepare_for_export(loaded.model)
    probe = torch.randn(8, *loaded.spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rewrite_diff = (loaded.model(probe) - prepared(probe)).abs().max().item()
    path = export_onnx(prepared, out / "model.onnx", loaded.spec.input_shape)
    info = {
        "path": str(path),
        "io": describe_io(onnx.load(str(path))),
        "ops": dict(op_counts(path)),
        "rewrite_max_abs_diff": rewrite_diff,  # BN folding + option-A-as-conv vs the original module
        "batchnorm_modules_in_pytorch": sum(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.model.modules()),
    }
    return OnnxModel(path, prepared, info)


def build_tensorrt_ready(ctx: BuildContext) -> tuple[TensorRTReady | None, list[Candidate]]:
    config = ctx.config
    if not (config.tensorrt_ready or "tensorrt" in config.engines):
        return None, []
    from resnet_serve.export import tensorrt

    directory = config.out / "tensorrt"
    directory.mkdir(exist_ok=True)
    fp16 = to_fp16(ctx.onnx_path, directory / "model_fp16.onnx")
    int8 = directory / "model_int8_qdq.onnx"
    chosen, candidates = ctx.calibration.quantize(int8, symmetric=True, label="tensorrt-ready-int8")
    graphs = {"fp16": fp16, "int8": int8}
    recipe = tensorrt.write_recipe(
        directory,
        {k: v.name for k, v in graphs.items()},
        INPUT_NAME,
        ctx.spec.input_shape,
        max_batch=config.max_batch,
        opt_batch=config.opt_batch,
    )
    ready = TensorRTReady(directory, graphs, recipe, chosen, check_tensorrt_qdq(int8))
    if "tensorrt" in config.engines:
        profile = tensorrt.shape_profile(INPUT_NAME, ctx.spec.input_shape, config.max_batch, config.opt_batch)
        for precision, graph in graphs.items():
            if precision in config.precisions:
                tensorrt.build_plan(graph, directory / f"model_{precision}.plan", profile, directory / "timing.cache")
    return ready, candidates


def eval_data(config: ExportConfig, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, list[str], Path] | None:
    """The labelled evaluation images (normalized float32 NCHW), labels, class names and their source."""
    directory = config.eval_data
    if directory is None and spec.name == "cifar10":
        default = settings.cifar_dir()
        if (default / "test").is_dir() or find_cifar_batches(default) is not None:
            directory = default
    if directory is None:
        return None
    data = load_cifar10(directory, "test") if spec.name == "cifar10" else load_image_folder_arrays(directory, spec)
    images, labels = data.images, data.labels
    if config.eval_limit:
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(labels))[: config.eval_limit])
        images, labels = images[keep], labels[keep]
    return normalize(images, spec), labels, data.classes, Path(directory)


def evaluate(
    config: ExportConfig,
    loaded: LoadedModel,
    artifacts: list[ArtifactRecord],
    tensorrt: TensorRTReady | None,
    candidates: list[Candidate],
) -> tuple[dict | str, dict]:
    """Accuracy and parity of every engine (and calibration candidate) against PyTorch FP32."""
    data = eval_data(config, loaded.spec)
    if data is None:
        return "skipped: no evaluation data (pass --eval-data)", {}
    images, labels, classes, source = data
    reference = TorchEngine(loaded.model, loaded.record.arch, threads=config.threads).infer_all(images)
    results = {
        "pytorch-fp32": {**accuracy_report(reference, labels, classes), "engine": "pytorch", "precision": "fp32"}
    }
    base = results["pytorch-fp32"]
    engines = [(a.name, lambda a=a: load_engine(a.path, threads=config.threads)) for a in artifacts if a.runnable]
    engines += [
        (c.label, lambda c=c: OnnxRuntimeEngine(c.path, threads=config.threads, optimization=c.optimization))
        for c in candidates
    ]
    if tensorrt is not None:
        engines += [
            (
                f"tensorrt-ready-{precision} (on onnxruntime)",
                lambda g=graph, p=precision: OnnxRuntimeEngine(
                    g, threads=config.threads, optimization=qdq_level(p == "int8")
                ),
            )
            for precision, graph in tensorrt.graphs.items()
        ]
    parity = {}
    for name, load in engines:
        engine = load()
        start = time.perf_counter()
        logits = engine.infer_all(images)
        seconds = time.perf_counter() - start
        report = accuracy_report(logits, labels, classes)
        report.pop("per_class")
        results[name] = {
            **report,
            "engine": engine.info()["engine"],
            "precision": engine.info()["precision"],
            "top1_delta": round(report["top1"] - base["top1"], 2),
            "top5_delta": round(report["top5"] - base["top5"], 2),
            "img_s": round(len(images) / seconds, 1),
        }
        parity[name] = {
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "top1_agreement_pct": top1_agreement_pct(logits, reference),
        }
        log.info(
            "%-40s top-1 %.2f%% (%+.2f)  top-5 %.2f%%  max |logit diff| %.2e",
            name,
            report["top1"],
            results[name]["top1_delta"],
            report["top5"],
            parity[name]["max_abs_logit_diff"],
        )
    return {"n": int(len(labels)), "source": str(source), "results": results}, parity


def fusion_report(
    config: ExportConfig, loaded: LoadedModel, onnx_model: OnnxModel, artifacts, tensorrt: TensorRTReady | None
) -> list[dict]:
    """What each engine really runs, counted in its own optimized graph."""
    reports = config.out / "reports"
    source = fusion.source_graph(onnx_model.path)
    adds = len(source["adds"])
    rows = [
        fusion.GraphCounts(
            "pytorch module (before export)",
            convs=sum(isinstance(m, torch.nn.Conv2d) for m in loaded.model.modules()),
            batchnorm=onnx_model.info["batchnorm_modules_in_pytorch"],
            residual_adds_in_source=adds,
            is_source=True,
        )
    ]
    exported = fusion.onnx_graph_counts(onnx_model.path, "exported ONNX (unoptimized)", adds)
    exported.is_source = True
    rows.append(exported)

    def ort_counts(graph: Path, optimized: Path, label: str) -> fusion.GraphCounts:
        OnnxRuntimeEngine(graph, threads=config.threads, optimized_model_path=optimized)  # writes the optimized graph
        return fusion.onnx_graph_counts(optimized, label, adds)

    for artifact in (a for a in artifacts if a.runnable):
        if artifact.engine == "onnxruntime":
            optimized = reports / f"{artifact.name}.optimized.onnx"
            rows.append(ort_counts(Path(artifact.path) / "model.onnx", optimized, f"{artifact.name} (ORT_ENABLE_ALL)"))
        elif artifact.engine == "openvino":
            engine = load_engine(artifact.path, threads=config.threads)
            label = f"{artifact.name} (runtime graph, runs {engine.info()['precision']})"
            rows.append(fusion.openvino_graph_counts(engine.compiled, source, label))
    for precision, graph in tensorrt.graphs.items() if tensorrt else ():
        optimized = reports / f"tensorrt-ready-{precision}.ort-optimized.onnx"
        rows.append(ort_counts(graph, optimized, f"tensorrt-ready {precision} on ORT (ORT_ENABLE_ALL)"))
    table = fusion.format_table(rows)
    (reports / "fusion.txt").write_text(table + "\n")
    log.info("fusion report (%s):\n%s", reports / "fusion.txt", table)
    return [r.as_dict() for r in rows]


def run_export(config: ExportConfig) -> ExportSummary:
    """Run every step; the summary is written to OUT/export.json and returned."""
    config.validate()
    out = config.out
    (out / "reports").mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        steps[name] = round(time.perf_counter() - start, 2)
        return result

    loaded = timed("load_model", load_model, config)
    onnx_model = timed("export_onnx", export_to_onnx, loaded, out)
    fallbacks: list[dict] = []
    reference = TorchEngine(loaded.model, loaded.record.arch, threads=config.threads).infer_all
    calibration = Calibration(config, loaded.spec, onnx_model.path, reference, fallbacks)
    ctx = BuildContext(
        config,
        loaded.record,
        loaded.spec,
        len(loaded.labels),
        onnx_model.prepared,
        onnx_model.path,
        calibration,
        fallbacks,
    )
    artifacts, candidates, skipped = timed("build_engines", build_engines, ctx)
    tensorrt, trt_candidates = timed("build_tensorrt_ready", build_tensorrt_ready, ctx)
    candidates += trt_candidates
    accuracy, parity = (
        timed("evaluate", evaluate, config, loaded, artifacts, tensorrt, candidates) if config.evaluate else (None, {})
    )
    if isinstance(accuracy, dict):
        (out / "reports" / "accuracy.json").write_text(json.dumps(accuracy, indent=2) + "\n")
        (out / "reports" / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")
    fusion_rows = timed("fusion_report", fusion_report, config, loaded, onnx_model, artifacts, tensorrt)
    (out / "reports" / "fusion.json").write_text(json.dumps(fusion_rows, indent=2) + "\n")
    for fallback in fallbacks:
        log.warning(
            "fallback in %s: asked %s, used %s (%s)",
            fallback["step"],
            fallback["asked"],
            fallback["used"],
            fallback["reason"],
        )
    summary = ExportSummary(
        model=loaded.record,
        artifacts=artifacts,
        skipped=[s.as_dict() for s in skipped],
        fallbacks=fallbacks,
        onnx=onnx_model.info,
        tensorrt=tensorrt.as_dict() if tensorrt else None,
        accuracy=accuracy,
        parity=parity,
        fusion=fusion_rows,
        steps=steps,
        environment=environment(),
        out=out,
    )
    summary.save()
    return summary


def _calibrate_random_bn(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Random weights: set BN statistics from a few random batches so activations stay in range."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *input_shape))
    model.eval()
