"""The GPU engine: a ResNet planned as fused Triton-lang convolutions, replayed from a CUDA graph.

Build (``python -m export --engines gpu --precisions fp16,int8``):
  1. the prepared model (BN folded into conv weight + bias, option A as a [I; 0] conv) is walked into
     a list of ops: input conversion, fused convs (bias, optional residual, optional ReLU, INT8
     requantization), max-pool, head (global average pool + FC);
  2. INT8: per-output-channel symmetric weight scales; per-tensor activation scales from calibration
     images (the export's calibration set and method), measured with hooks on the FP32 model;
  3. every conv's tile configuration is autotuned on the GPU for a small and a large batch and
     stored in the engine (``plan.json`` + ``tensors.pt``), so loading needs no tuning;
  4. intermediate tensors share buffers by liveness.
Run: ``load_engine(dir)`` -> ``GpuEngine``: NHWC buffers per batch-size bucket, the whole forward pass
captured in one CUDA graph per bucket (eager on the CPU, where the kernels run in Triton's interpreter).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resnet_serve.export.runtime import Engine, EngineError, EngineInfo
from resnet_serve.resnets.models import BasicBlock, Bottleneck, ResNet

log = logging.getLogger(__name__)

PLAN_FILE, TENSORS_FILE = "plan.json", "tensors.pt"
SMALL_BATCH_MAX = 8  # buckets up to this size use the configuration tuned for batch 1
DTYPES = {"fp16": torch.float16, "int8": torch.int8, "fp32": torch.float32}


# ---- calibration ---------------------------------------------------------------------------------


def activation_amax(
    model: ResNet, images: np.ndarray, method: str = "minmax", device: str = "cpu", batch_size: int = 64
) -> dict[str, float]:
    """Largest |activation| (or its 99.99th percentile) of every tensor the plan quantizes.

    Keys: ``input`` (the image), ``<conv>.in`` for every conv input, ``<conv>.out`` for shortcut convs,
    ``<block>.out`` for every residual block output.
    """
    if method not in ("minmax", "percentile"):
        raise ValueError(f"GPU engine calibration supports minmax and percentile, not {method!r}")
    stats: dict[str, list[torch.Tensor]] = {}

    def record(key: str, tensor: torch.Tensor) -> None:
        flat = tensor.detach().abs().float().flatten()
        if method == "minmax":
            stats.setdefault(key, []).append(flat.max().cpu())
        else:  # a seeded subsample keeps the quantile cheap
            idx = torch.randint(
                0,
                flat.numel(),
                (min(flat.numel(), 200_000),),
                generator=torch.Generator(device=flat.device).manual_seed(0),
                device=flat.device,
            )
            stats.setdefault(key, []).append(torch.quantile(flat[idx], 0.9999).cpu())

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(lambda m, a, key=f"{name}.in": record(key, a[0])))
            if name.endswith("downsample"):
                hooks.append(module.register_forward_hook(lambda m, a, o, key=f"{name}.out": record(key, o)))
        elif isinstance(module, (BasicBlock, Bottleneck)):
            hooks.append(module.register_forward_hook(lambda m, a, o, key=f"{name}.out": record(key, o)))
    model = model.to(device).eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size]).to(device)
                record("input", x)
                model(x)
    finally:
        for hook in hooks:
            hook.remove()
    reduce = max if method == "minmax" else (lambda values: float(np.mean(values)))
    return {key: max(float(reduce([float(v) for v in values])), 1e-8) for key, values in stats.items()}


# ---- planning ------------------------------------------------------------------------------------


class Planner:
    """Walks a prepared ResNet (BN folded, option A as conv) into ops and weight tensors."""

    def __init__(
        self, model: ResNet, input_shape: tuple[int, int, int], precision: str, amax: dict[str, float] | None
    ) -> None:
        if precision not in ("fp16", "int8"):
            raise EngineError(f"the GPU engine builds fp16 or int8, not {precision!r}")
        if precision == "int8" and not amax:
            raise EngineError("an int8 GPU engine needs calibration (activation ranges)")
        self.model, self.precision, self.amax = model, precision, amax or {}
        self.ops: list[dict] = []
        self.tensors: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, list] = {}  # tensor -> [H, W, C, dtype]
        self.count = 0
        c, h, w = input_shape
        self.input_shape = input_shape
        self.first = self.new(h, w, c, "int8" if precision == "int8" else "fp16")
        self.ops.append({"op": "input", "out": self.first, "scale": self.scale("input")})

    def new(self, h: int, w: int, c: int, dtype: str) -> str:
        name = f"t{self.count}"
        self.count += 1
        self.shapes[name] = [h, w, c, dtype]
        return name

    def scale(self, key: str) -> float | None:
        return self.amax[key] / 127.0 if self.precision == "int8" else None

    def conv(
        self,
        name: str,
        conv: nn.Conv2d,
        x: str,
        *,
        relu: bool,
        residual: str | None = None,
        out_key: str | None,
        out_fp16: bool = False,
    ) -> str:
        h, w, c = self.shapes[x][:3]
        kh, kw = conv.kernel_size
        stride, pad = conv.stride[0], conv.padding[0]
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        int8 = self.precision == "int8"
        out_int8 = int8 and not out_fp16
        out = self.new(oh, ow, conv.out_channels, "int8" if out_int8 else "fp16")
        weight = conv.weight.detach().float().permute(2, 3, 1, 0).reshape(kh * kw * c, conv.out_channels)
        op = {
            "op": "conv",
            "name": name,
            "in": x,
            "out": out,
            "res": residual,
            "stride": stride,
            "pad": pad,
            "kh": kh,
            "kw": kw,
            "relu": relu,
            "weight": f"{name}.weight",
            "bias": f"{name}.bias",
        }
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.tensors[op["bias"]] = bias.contiguous()
        if int8:
            w_scale = weight.abs().amax(dim=0).clamp_min(1e-12) / 127.0
            self.tensors[op["weight"]] = torch.round(weight / w_scale).clamp(-127, 127).to(torch.int8).contiguous()
            self.tensors[f"{name}.w_scale"] = w_scale.contiguous()
            op.update(
                {
                    "w_scale": f"{name}.w_scale",
                    "in_scale": self.shapes_scale(x),
                    "res_scale": self.shapes_scale(residual) if residual else 1.0,
                    "out_scale": self.scale(out_key) if out_int8 else None,
                }
            )
        else:
            self.tensors[op["weight"]] = weight.half().contiguous()
        if out_int8:
            self.shapes[out].append(op["out_scale"])
        self.ops.append(op)
        return out

    def shapes_scale(self, tensor: str) -> float:
        return self.shapes[tensor][4]

    def build(self) -> dict:
        model = self.model
        x = self.first
        if self.precision == "int8":
            self.shapes[x].append(self.scale("input"))
        stem_fp16 = model.maxpool is not None  # max-pool runs on fp16; the image stem feeds it in fp16
        x = self.conv("conv1", model.conv1, x, relu=True, out_key="layer1.0.conv1.in", out_fp16=stem_fp16)
        if model.maxpool is not None:
            h, w, c, _ = self.shapes[x][:4]
            pooled = self.new((h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1, c, "fp16")
            self.ops.append({"op": "maxpool", "in": x, "out": pooled, "kernel": 3, "stride": 2, "pad": 1})
            x = pooled
            if self.precision == "int8":
                q = self.new(*self.shapes[x][:3], "int8")
                s = self.scale("layer1.0.conv1.in")
                self.shapes[q].append(s)
                self.ops.append({"op": "quantize", "in": x, "out": q, "scale": s})
                x = q
        blocks = [(f"layer{i + 1}.{j}", b) for i, stage in enumerate(model.stages()) for j, b in enumerate(stage)]
        for index, (name, block) in enumerate(blocks):
            last = index == len(blocks) - 1
            x = self.block(name, block, x, blocks, index, last)
        self.ops.append({"op": "head", "in": x, "fc_weight": "fc.weight", "fc_bias": "fc.bias"})
        self.tensors["fc.weight"] = model.fc.weight.detach().float().contiguous()
        self.tensors["fc.bias"] = model.fc.bias.detach().float().contiguous()
        return self.finish()

    def block(self, name: str, block, x: str, blocks, index: int, last: bool) -> str:
        convs = ["conv1", "conv2", "conv3"] if isinstance(block, Bottleneck) else ["conv1", "conv2"]
        identity = x
        if block.downsample is not None:
            identity = self.conv(
                f"{name}.downsample", block.downsample, x, relu=False, out_key=f"{name}.downsample.out"
            )
        y = x
        for i, conv_name in enumerate(convs):
            final = i == len(convs) - 1
            next_key = f"{name}.{convs[i + 1]}.in" if not final else f"{name}.out"
            y = self.conv(
                f"{name}.{conv_name}",
                getattr(block, conv_name),
                y,
                relu=True,
                residual=identity if final and block.residual else None,
                out_key=next_key,
                out_fp16=final and last,
            )
        return y

    def finish(self) -> dict:
        """Assign tensors to shared buffers by liveness; record per-image byte sizes."""
        last_use: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            for key in ("in", "res"):
                if op.get(key):
                    last_use[op[key]] = i
        free: list[tuple[int, int]] = []  # (bytes per image, buffer id)
        sizes: list[int] = []
        buffers: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            out = op.get("out")
            if out:
                h, w, c, dtype = self.shapes[out][:4]
                need = h * w * c * torch.tensor([], dtype=DTYPES[dtype]).element_size()
                fits = [f for f in free if f[0] >= need]
                if fits:
                    choice = min(fits)
                    free.remove(choice)
                    buffers[out] = choice[1]
                else:
                    buffers[out] = len(sizes)
                    sizes.append(need)
            for key in ("in", "res"):
                tensor = op.get(key)
                if tensor and last_use.get(tensor) == i:
                    free.append((sizes[buffers[tensor]], buffers[tensor]))
        return {
            "ops": self.ops,
            "tensors": {k: v[:4] for k, v in self.shapes.items()},
            "buffers": buffers,
            "buffer_bytes_per_image": sizes,
            "precision": self.precision,
            "input_shape": list(self.input_shape),
            "num_classes": int(self.model.fc.out_features),
        }


# ---- running ---------------------------------------------------------------------------------------


class GpuEngine(Engine):
    """Runs a plan. On CUDA: one CUDA graph per batch bucket; elsewhere eager (interpreter tests)."""

    def __init__(
        self, directory: str | Path, *, device: str | None = None, use_cuda_graph: bool = True, meta: dict | None = None
    ) -> None:
        directory = Path(directory)
        try:
            self.plan = json.loads((directory / PLAN_FILE).read_text())
        except FileNotFoundError:
            raise EngineError(
                f"{directory} has no {PLAN_FILE}; build it with `python -m export --engines gpu`"
            ) from None
        from resnet_serve.export.gpu import kernels  # noqa: F401 - fail early if triton is missing

        self.kernels = kernels
        if not torch.cuda.is_available() or device == "cpu":
            if not _interpreting():
                raise EngineError(
                    "the GPU engine needs a CUDA GPU (its kernels run on the CPU only in Triton's "
                    "interpreter, TRITON_INTERPRET=1, for tests)"
                )
            device = "cpu"
        self.device = torch.device(device or "cuda")
        tensors = torch.load(directory / TENSORS_FILE, map_location="cpu", weights_only=True)
        self.weights = {k: v.to(self.device) for k, v in tensors.items()}
        self.use_cuda_graph = use_cuda_graph and self.device.type == "cuda"
        self.buckets: dict[int, dict] = {}
        self.max_batch = int(self.plan.get("max_batch", 1024))
        meta = meta or {}
        c, h, w = self.plan["input_shape"]
        self._info = EngineInfo(
            engine="gpu",
            precision=self.plan["precision"],
            device=str(self.device),
            threads=None,
            input_name="input",
            input_shape=[-1, c, h, w],
            input_dtype="float32",
            output_name="logits",
            num_classes=self.plan["num_classes"],
            arch=meta.get("arch"),
            dataset=meta.get("dataset"),
            path=str(directory),
            details={
                "cuda_graph": self.use_cuda_graph,
                "autotuned": self.plan.get("autotuned"),
                "ops": len(self.plan["ops"]),
            },
        )

    # buffers and views for one bucket
    def _bucket(self, batch: int) -> dict:
        size = 1 << max(0, math.ceil(math.log2(batch)))
        if size in self.buckets:
            return self.buckets[size]
        raw = [
            torch.empty(b * size, dtype=torch.uint8, device=self.device) for b in self.plan["buffer_bytes_per_image"]
        ]
        views = {}
        for name, (h, w, c, dtype) in self.plan["tensors"].items():
            flat = raw[self.plan["buffers"][name]]
            views[name] = flat.view(DTYPES[dtype])[: size * h * w * c].view(size, h, w, c)
        c, h, w = self.plan["input_shape"]
        bucket = {
            "size": size,
            "raw": raw,
            "views": views,
            "input": torch.empty(size, c, h, w, device=self.device),
            "logits": torch.empty(size, self.plan["num_classes"], device=self.device),
            "config": "small" if size <= SMALL_BATCH_MAX else "large",
            "graph": None,
        }
        self.buckets[size] = bucket
        return bucket

    def _conv(self, op: dict, bucket: dict, config: dict | None) -> None:
        """One planned convolution on a bucket's buffers, with the given tile configuration."""
        v, wts = bucket["views"], self.weights
        self.kernels.conv2d(
            v[op["in"]],
            wts[op["weight"]],
            wts[op["bias"]],
            v[op["out"]],
            stride=op["stride"],
            pad=op["pad"],
            kh=op["kh"],
            kw=op["kw"],
            relu=op["relu"],
            residual=v[op["res"]] if op["res"] else None,
            w_scale=wts.get(op.get("w_scale", "")),
            in_scale=op.get("in_scale") or 1.0,
            res_scale=op.get("res_scale") or 1.0,
            out_scale=op.get("out_scale"),
            config=config,
        )

    def _forward(self, bucket: dict) -> None:
        v, wts = bucket["views"], self.weights
        for op in self.plan["ops"]:
            kind = op["op"]
            if kind == "input":
                x = bucket["input"].permute(0, 2, 3, 1)
                if op["scale"]:
                    v[op["out"]].copy_(torch.round(x / op["scale"]).clamp_(-128, 127))
                else:
                    v[op["out"]].copy_(x)
            elif kind == "conv":
                self._conv(op, bucket, op.get("config", {}).get(bucket["config"]))
            elif kind == "maxpool":
                nchw = v[op["in"]].permute(0, 3, 1, 2)
                pooled = nn.functional.max_pool2d(
                    nchw.float() if nchw.device.type == "cpu" else nchw, op["kernel"], op["stride"], op["pad"]
                )
                v[op["out"]].copy_(pooled.permute(0, 2, 3, 1))
            elif kind == "quantize":
                v[op["out"]].copy_(torch.round(v[op["in"]].float() / op["scale"]).clamp_(-128, 127))
            elif kind == "head":
                pooled = v[op["in"]].float().mean(dim=(1, 2))
                torch.addmm(wts[op["fc_bias"]], pooled, wts[op["fc_weight"]].t(), out=bucket["logits"])

    def infer_torch(self, x: torch.Tensor) -> torch.Tensor:
        """float32 NCHW (any device) -> float32 logits on this engine's device."""
        n = len(x)
        if n > self.max_batch:
            raise EngineError(f"batch of {n} is above this engine's largest bucket ({self.max_batch})")
        bucket = self._bucket(n)
        bucket["input"][:n].copy_(x)
        if self.use_cuda_graph:
            if bucket["graph"] is None:
                self._capture(bucket)
            bucket["graph"].replay()
        else:
            self._forward(bucket)
        return bucket["logits"][:n]

    def _capture(self, bucket: dict) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # compile and warm the kernels outside the graph
                self._forward(bucket)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._forward(bucket)
        bucket["graph"] = graph

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(batch), self.max_batch):
            out.append(self.infer_torch(torch.from_numpy(batch[start : start + self.max_batch])).float().cpu().numpy())
        return np.concatenate(out)


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


# ---- build -------------------------------------------------------------------------------------------


def autotune(engine: GpuEngine, batch_sizes: dict[str, int]) -> None:
    """Time every candidate tile configuration of every conv, per batch class; keep the fastest."""
    from triton.testing import do_bench

    from resnet_serve.export.gpu.kernels import CANDIDATE_CONFIGS

    for label, batch in batch_sizes.items():
        bucket = engine._bucket(batch)
        bucket["input"].normal_()
        engine._forward(bucket)  # fill every buffer with realistic values
        for op in engine.plan["ops"]:
            if op["op"] != "conv":
                continue
            best, best_ms = None, float("inf")
            for cfg in CANDIDATE_CONFIGS:

                def launch(cfg=cfg, op=op, bucket=bucket):
                    engine._conv(op, bucket, cfg)

                try:
                    ms = do_bench(launch, warmup=5, rep=20)
                except Exception:  # noqa: BLE001 - a config the compiler rejects (e.g. shared memory) is skipped
                    continue
                if ms < best_ms:
                    best, best_ms = cfg, ms
            op.setdefault("config", {})[label] = best
            op.setdefault("tuned_ms", {})[label] = round(best_ms, 5)
        engine.buckets.clear()


def build_gpu_engine(
    prepared: ResNet,
    out_dir: Path,
    *,
    precision: str,
    input_shape: tuple[int, int, int],
    calibration: np.ndarray | None,
    method: str = "minmax",
    max_batch: int = 1024,
    device: str | None = None,
) -> Path:
    """Plan, calibrate (INT8), autotune (on CUDA) and save a GPU engine into ``out_dir``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    amax = activation_amax(prepared, calibration, method, device) if precision == "int8" else None
    planner = Planner(prepared.cpu(), input_shape, precision, amax)
    plan = planner.build()
    plan.update({"max_batch": max_batch, "calibration_method": method if amax else None, "autotuned": False})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    torch.save(planner.tensors, out_dir / TENSORS_FILE)
    if device == "cuda":
        engine = GpuEngine(out_dir, device="cuda", use_cuda_graph=False)
        autotune(engine, {"small": 1, "large": min(max_batch, 256)})
        engine.plan["autotuned"] = True
        (out_dir / PLAN_FILE).write_text(json.dumps(engine.plan, indent=1))
    log.info(
        "GPU engine %s: %d ops, built in %.1f s (%s)",
        precision,
        len(plan["ops"]),
        time.perf_counter() - start,
        "autotuned" if device == "cuda" else "default tiles: no GPU to tune on",
    )
    return out_dir
