"""The export pipeline: explicit steps, each taking and returning its artifacts.

checkpoint -> load_model -> export_to_onnx (BN folded, option A as conv, dynamic batch)
  -> build_engines: onnxruntime-{fp32,int8}, openvino-{fp32,bf16,int8}, gpu-{fp16,int8}  (engine.json each)
  -> build_tensorrt_ready: tensorrt/ FP16 ONNX, explicit-Q/DQ INT8 ONNX, trtexec recipe (plans where TensorRT imports)
  -> evaluate: every engine and candidate against PyTorch FP32 (reports/accuracy.json, parity.json)
  -> fusion_report: what each engine really runs (reports/fusion.json, fusion.txt)
  -> OUT/export.json (``ExportSummary``), with every skipped engine and every fallback and its reason
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image

from resnet_serve import settings
from resnet_serve.engines import Engine, load_engine
from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine
from resnet_serve.engines.pytorch import TorchEngine
from resnet_serve.export import fusion
from resnet_serve.export.builders import BuildContext, build_engines
from resnet_serve.export.calibration import Calibration, Candidate, qdq_level
from resnet_serve.export.config import OPTION_A_MARGIN, PRESETS, ExportConfig, ExportConfigError
from resnet_serve.export.onnx_export import ExportError, describe_io, export_onnx, op_counts, prepare_for_export
from resnet_serve.export.onnx_import import ImportedOnnx, import_onnx
from resnet_serve.export.quantize import check_tensorrt_qdq, to_fp16
from resnet_serve.export.summary import LABELS_FILE, ArtifactRecord, ExportSummary, ModelRecord, file_sha256
from resnet_serve.resnets.checkpoint import load_checkpoint, save_checkpoint
from resnet_serve.resnets.contract import FLAGS, resolve
from resnet_serve.resnets.data import find_cifar_batches, load_cifar10, load_image_folder_arrays
from resnet_serve.resnets.env import environment
from resnet_serve.resnets.metrics import accuracy_report, top1_agreement_pct
from resnet_serve.resnets.models import ResNet, ZeroPadShortcut, arch_spec, build
from resnet_serve.resnets.spec import (
    CIFAR10_CLASSES,
    INPUT_NAME,
    DatasetSpec,
    normalize,
    read_labels,
    resize_center_crop,
)

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random (untrained: for serving and speed tests, not accuracy)"


@dataclass
class LoadedModel:
    spec: DatasetSpec  # the resolved contract
    labels: list[str]
    record: ModelRecord
    model: ResNet | None = None  # the PyTorch module (checkpoint and random inputs)
    onnx: ImportedOnnx | None = None  # an ONNX input, normalised

    def reference(self, threads: int | None) -> Engine:
        """The FP32 reference every engine is compared with: PyTorch eager on the module, or for an ONNX
        input the graph as given (renamed, dynamic batch) on ONNX Runtime with graph optimizations off."""
        if self.model is not None:
            return TorchEngine(self.model, self.record.arch, threads=threads, spec=self.spec)
        return OnnxRuntimeEngine(self.onnx.path, threads=threads, optimization="disable")

    @property
    def reference_name(self) -> str:
        return "pytorch-fp32" if self.model is not None else "onnx-fp32 (as given)"


@dataclass
class OnnxModel:
    path: Path | None  # None: not exported (no engine of this export reads ONNX)
    prepared: ResNet | None  # the module the ONNX was exported from (None for an ONNX input)
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
    """The model to export and its contract, from a checkpoint (ours or another code's), an ONNX file, or
    untrained weights; every contract field with where it came from, and the labels."""
    preset = PRESETS.get(config.preset) if config.preset else None
    module, imported, meta, ckpt = None, None, {}, None
    if config.onnx is not None:
        imported = import_onnx(config.onnx, config.out, config.threads)
        arch, weights, source, kind = None, "as exported elsewhere (ONNX)", config.onnx, "onnx"
        contract = resolve(
            config.contract,
            num_classes=imported.num_classes,
            num_classes_source="the ONNX graph's output",
            default=preset,
            default_source=f"--preset {config.preset}",
            known={"image_size": (imported.image_size, "the ONNX graph's input")},
        )
    else:
        if config.checkpoint is not None:
            module, ckpt = load_checkpoint(
                config.checkpoint,
                config.arch,
                weights_key=config.weights_key,
                num_classes=config.contract.num_classes,
                option_a=config.option_a,
            )
            arch, meta, source, kind, weights = (
                ckpt["arch"],
                ckpt["meta"],
                config.checkpoint,
                ckpt["import"].form,
                "trained",
            )
            for line in ckpt["import"].lines():
                log.info("%s: %s", config.checkpoint, line)
            classes, classes_source = ckpt["num_classes"], "the checkpoint's head"
        else:
            arch, weights, kind = config.arch, RANDOM_WEIGHTS, "random"
            classes = config.contract.num_classes or arch_spec(arch).dataset.num_classes
            classes_source = "--num-classes" if config.contract.num_classes else f"the {arch} architecture's default"
        default = preset or arch_spec(arch).dataset
        contract = resolve(
            config.contract,
            num_classes=classes,
            num_classes_source=classes_source,
            stored=meta.get("contract"),
            default=default,
            default_source=f"--preset {config.preset}"
            if preset
            else f"the {arch} architecture's default ({default.name})",
        )
        if module is None:
            torch.manual_seed(config.seed)
            option_a = config.option_a if arch_spec(arch).shortcut == "A" else None
            module = build(arch, num_classes=classes, **({"option_a": option_a} if option_a else {})).eval()
            _calibrate_random_bn(module, contract.spec.input_shape)
            source = config.out / "random_weights.pt"
        if kind != "resnet-serve checkpoint":
            # saved as a resnet-serve checkpoint (contract included), so the benchmarks' PyTorch peers run it too
            source_meta = {"contract": contract.spec.as_parameters(), "weights": weights, "imported_from": str(source)}
            saved = save_checkpoint(
                config.out / ("random_weights.pt" if kind == "random" else "model.pt"),
                module,
                arch,
                shortcut=module.shortcut,
                meta=source_meta,
            )
        else:
            saved = config.checkpoint
    spec = contract.spec
    if config.labels is not None:
        labels, labels_source = read_labels(config.labels, spec.num_classes), str(config.labels)
    else:
        labels = spec.default_labels()
        labels_source = (
            "CIFAR-10's class names"
            if labels[0] == "airplane"
            else f"none given: class_0 .. class_{spec.num_classes - 1}"
        )
    (config.out / LABELS_FILE).write_text("\n".join(labels) + "\n")
    name = config.name or arch or _model_name(Path(source).stem)
    record = ModelRecord(
        name=name,
        arch=arch,
        weights=weights,
        source=str(source),
        source_sha256=file_sha256(source),
        source_kind=kind,
        checkpoint=str(saved) if module is not None else None,
        contract=spec.as_parameters(),
        contract_sources=contract.sources,
        labels_source=labels_source,
        option_a=module.option_a if module is not None else None,
        option_a_source=(
            ckpt["option_a_source"] if ckpt else "--option-a" if config.option_a else "the default (after)"
        )
        if module is not None and module.option_a
        else None,
        import_report=ckpt["import"].as_dict() if ckpt else None,
        checkpoint_test_top1=meta.get("test", {}).get("top1"),
    )
    log.info(
        "model %s: %s (%s), input float32 [N, %s]", name, arch or "ONNX", kind, ", ".join(map(str, spec.input_shape))
    )
    for line in contract.lines():
        log.info("contract: %s", line)
    assumed = [k for k, v in contract.sources.items() if "default" in v]
    if kind not in ("resnet-serve checkpoint", "random") and assumed:
        log.warning(
            "%s states no %s: assumed from %s; pass %s if the model was trained with other values",
            source,
            ", ".join(assumed),
            contract.sources[assumed[0]],
            ", ".join(FLAGS[a] for a in assumed if a in FLAGS),
        )
    return LoadedModel(spec, labels, record, module, imported)


def _model_name(stem: str) -> str:
    """A Triton model name from a file name: letters, digits and '_' only."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower()
    return cleaned if cleaned and cleaned[0].isalpha() else f"model_{cleaned}"


def check_option_a(config: ExportConfig, loaded: LoadedModel) -> dict | str | None:
    """Both option-A variants' top-1 on the labelled evaluation data; an error when the declared variant is
    clearly worse (the checkpoint was most likely trained with the other)."""
    model = loaded.model
    if model is None or model.option_a is None:
        return None
    data = eval_data(config, loaded.spec, loaded.labels) if config.evaluate else None
    if data is None:
        if loaded.record.option_a_source == "--option-a":
            log.warning("option-A zeros %r not checked: no labelled evaluation data (pass --eval-data)", model.option_a)
        return "not checked: no labelled evaluation data"
    images, labels, classes, source = data
    other = "split" if model.option_a == "after" else "after"
    flipped = copy.deepcopy(model)
    for module in flipped.modules():
        if isinstance(module, ZeroPadShortcut):
            module.padding = other
    top1 = {}
    for variant, net in ((model.option_a, model), (other, flipped)):
        logits = TorchEngine(net, loaded.record.arch, threads=config.threads, spec=loaded.spec).infer_all(images)
        top1[variant] = accuracy_report(logits, labels, classes)["top1"]
    result = {
        "declared": model.option_a,
        "declared_top1": top1[model.option_a],
        "other": other,
        "other_top1": top1[other],
        "n": int(len(labels)),
        "source": str(source),
    }
    log.info(
        "option-A zeros %s: top-1 %.2f%%; zeros %s: %.2f%% (%d labelled images)",
        model.option_a,
        top1[model.option_a],
        other,
        top1[other],
        len(labels),
    )
    declared = model.option_a
    if top1[other] - top1[declared] > OPTION_A_MARGIN:
        raise ExportError(
            f"the declared option-A zeros {declared!r} ({loaded.record.option_a_source}) give "
            f"{top1[declared]:.2f}% top-1 on {len(labels)} labelled images, but {other!r} gives "
            f"{top1[other]:.2f}%: the checkpoint was most likely trained with zeros {other!r}; "
            f"pass --option-a {other}"
        )
    return result


def export_to_onnx(loaded: LoadedModel, out: Path, needed: bool = True) -> OnnxModel:
    """The prepared module (BN folded, option A as a conv) and its ONNX graph; the graph only where an
    engine of this export reads it (a GPU-engine-only export plans the module directly)."""
    if loaded.onnx is not None:  # already normalised by import_onnx
        return OnnxModel(loaded.onnx.path, None, {**loaded.onnx.info, "ops": dict(op_counts(loaded.onnx.path))})
    prepared = prepare_for_export(loaded.model)
    if not needed:
        return OnnxModel(None, prepared, {"skipped": "no engine of this export reads ONNX"})
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


_EVAL_CACHE: dict[tuple, tuple] = {}


def eval_data(
    config: ExportConfig, spec: DatasetSpec, labels: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str], Path] | None:
    """The labelled evaluation images (float32 NCHW, preprocessed by the contract), labels, class names and
    their source: --eval-data, else for a CIFAR-10 model (its 10 classes and their names) the CIFAR-10 test
    split if present. Other data is an ImageFolder whose folders are matched to ``labels``, the model's."""
    directory = config.eval_data
    cifar = spec.name == "cifar10" and labels == list(CIFAR10_CLASSES)
    if directory is None and cifar:
        default = settings.cifar_dir()
        if (default / "test").is_dir() or find_cifar_batches(default) is not None:
            directory = default
    if directory is None:
        return None
    key = (str(directory), spec, tuple(labels), config.eval_limit, config.seed)
    if key not in _EVAL_CACHE:
        if cifar:
            data = load_cifar10(directory, "test")  # 32x32 pixels: cropped and resized only if the contract says so
            if (spec.image_size, spec.resize_size) != (32, 32):
                data.images = np.stack([resize_center_crop(Image.fromarray(x), spec) for x in data.images])
        else:
            data = load_image_folder_arrays(directory, spec, labels=labels)
        images, labels = data.images, data.labels
        if config.eval_limit:
            keep = np.sort(np.random.default_rng(config.seed).permutation(len(labels))[: config.eval_limit])
            images, labels = images[keep], labels[keep]
        _EVAL_CACHE.clear()  # one evaluation set at a time: they can be large
        _EVAL_CACHE[key] = (normalize(images, spec), labels, data.classes, Path(directory))
    return _EVAL_CACHE[key]


def evaluate(
    config: ExportConfig,
    loaded: LoadedModel,
    artifacts: list[ArtifactRecord],
    tensorrt: TensorRTReady | None,
    candidates: list[Candidate],
) -> tuple[dict | str, dict]:
    """Accuracy and parity of every engine (and calibration candidate) against the FP32 reference."""
    data = eval_data(config, loaded.spec, loaded.labels)
    if data is None:
        return "skipped: no evaluation data (pass --eval-data)", {}
    images, labels, classes, source = data
    ref_engine = loaded.reference(config.threads)
    reference = ref_engine.infer_all(images)
    base = {
        **accuracy_report(reference, labels, classes),
        "engine": ref_engine.info()["engine"],
        "precision": "fp32",
    }
    results = {loaded.reference_name: base}
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
    if onnx_model.path is None:
        return []
    reports = config.out / "reports"
    source = fusion.source_graph(onnx_model.path)
    adds = len(source["adds"])
    rows = []
    if loaded.model is not None:
        module = fusion.GraphCounts(
            "pytorch module (before export)",
            convs=sum(isinstance(m, torch.nn.Conv2d) for m in loaded.model.modules()),
            batchnorm=onnx_model.info["batchnorm_modules_in_pytorch"],
            residual_adds_in_source=adds,
            is_source=True,
        )
        rows.append(module)
    label = "exported ONNX (unoptimized)" if loaded.model is not None else "the ONNX as given (unoptimized)"
    exported = fusion.onnx_graph_counts(onnx_model.path, label, adds)
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
    option_a_check = timed("check_option_a", check_option_a, config, loaded)
    needs_onnx = bool({"onnxruntime", "openvino", "tensorrt"} & set(config.engines)) or config.tensorrt_ready
    onnx_model = timed("export_onnx", export_to_onnx, loaded, out, needs_onnx)
    fallbacks: list[dict] = []
    reference = loaded.reference(config.threads).infer_all
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
    if not artifacts and any(engine != "tensorrt" for engine in config.engines):
        reasons = "; ".join(f"{s.engine}-{s.precision}: {s.reason}" for s in skipped)
        raise ExportConfigError(
            f"no engine was built ({reasons}); "
            "ask for an engine and precision this machine runs, e.g. --precisions fp32"
        )
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
        option_a_check=option_a_check,
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
