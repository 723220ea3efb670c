"""Build the GPU engine: plan a prepared ResNet into fused convolutions, calibrate INT8, autotune tiles.

1. the prepared model (BN folded into conv weight + bias, option A as a [I; 0] conv) is walked into
   typed ops (``resnet_serve.engines.gpu.plan``): input conversion, fused convs (bias, optional
   residual, optional ReLU, INT8 requantization), max-pool, head (global average pool + FC);
2. INT8: per-output-channel symmetric weight scales; per-tensor activation scales from calibration
   images (the export's calibration set), measured with hooks on the FP32 model;
3. on a CUDA GPU every conv's tile configuration is autotuned for a small and a large batch; every
   candidate that fails is recorded with its reason, and a layer with no working candidate is an
   error. Without a GPU the kernel's default configuration is recorded as untuned;
4. intermediate tensors share buffers by liveness.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resnet_serve.engines.base import EngineError
from resnet_serve.engines.gpu.engine import GpuEngine
from resnet_serve.engines.gpu.kernels import CANDIDATE_CONFIGS, DEFAULT_CONFIG
from resnet_serve.engines.gpu.plan import (
    BATCH_CLASSES,
    TENSORS_FILE,
    ConvOp,
    HeadOp,
    InputOp,
    MaxPoolOp,
    Plan,
    QuantizeOp,
    TensorSpec,
    Tiles,
)
from resnet_serve.resnets.models import BasicBlock, Bottleneck, ResNet

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "percentile")  # what the GPU engine's calibration implements
TUNE_BATCHES = {"small": 1, "large": 256}


def activation_amax(
    model: ResNet, images: np.ndarray, method: str = "minmax", device: str = "cpu", batch_size: int = 64
) -> dict[str, float]:
    """Largest |activation| (or its 99.99th percentile) of every tensor the plan quantizes.

    Keys: ``input`` (the image), ``<conv>.in`` for every conv input, ``<conv>.out`` for shortcut convs,
    ``<block>.out`` for every residual block output.
    """
    if method not in CALIBRATION_METHODS:
        raise EngineError(f"GPU engine calibration supports {', '.join(CALIBRATION_METHODS)}, not {method!r}")
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


class Planner:
    """Walks a prepared ResNet (BN folded, option A as conv) into typed ops and weight tensors."""

    def __init__(
        self, model: ResNet, input_shape: tuple[int, int, int], precision: str, amax: dict[str, float] | None
    ) -> None:
        if precision not in ("fp16", "int8"):
            raise EngineError(f"the GPU engine builds fp16 or int8, not {precision!r}")
        if precision == "int8" and not amax:
            raise EngineError("an int8 GPU engine needs calibration (activation ranges)")
        self.model, self.precision, self.amax = model, precision, amax or {}
        self.int8 = precision == "int8"
        self.ops: list = []
        self.tensors: dict[str, torch.Tensor] = {}
        self.specs: dict[str, TensorSpec] = {}
        self.input_shape = input_shape

    def new(self, h: int, w: int, c: int, dtype: str, scale: float | None = None) -> str:
        name = f"t{len(self.specs)}"
        self.specs[name] = TensorSpec(h, w, c, dtype, scale)
        return name

    def scale(self, key: str) -> float | None:
        return self.amax[key] / 127.0 if self.int8 else None

    def conv(
        self, name: str, conv: nn.Conv2d, x: str, *, relu: bool, residual: str | None = None, out_key: str | None
    ) -> str:
        """``out_key``: the activation whose range quantizes the output; None keeps the output fp16."""
        src = self.specs[x]
        kh, kw = conv.kernel_size
        stride, pad = conv.stride[0], conv.padding[0]
        oh, ow = (src.h + 2 * pad - kh) // stride + 1, (src.w + 2 * pad - kw) // stride + 1
        out_scale = self.scale(out_key) if self.int8 and out_key else None
        out = self.new(oh, ow, conv.out_channels, "int8" if out_scale else "fp16", out_scale)
        weight = conv.weight.detach().float().permute(2, 3, 1, 0).reshape(kh * kw * src.c, conv.out_channels)
        op = ConvOp(
            name=name,
            src=x,
            dst=out,
            residual=residual,
            stride=stride,
            pad=pad,
            kh=kh,
            kw=kw,
            relu=relu,
            weight=f"{name}.weight",
            bias=f"{name}.bias",
        )
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.tensors[op.bias] = bias.contiguous()
        if self.int8:
            w_scale = weight.abs().amax(dim=0).clamp_min(1e-12) / 127.0
            self.tensors[op.weight] = torch.round(weight / w_scale).clamp(-127, 127).to(torch.int8).contiguous()
            self.tensors[f"{name}.w_scale"] = w_scale.contiguous()
            op.w_scale = f"{name}.w_scale"
            op.in_scale = src.scale
            op.res_scale = self.specs[residual].scale if residual else 1.0
            op.out_scale = out_scale
        else:
            self.tensors[op.weight] = weight.half().contiguous()
        self.ops.append(op)
        return out

    def build(self, *, max_batch: int = 1024, calibration_method: str | None = None) -> Plan:
        model = self.model
        c, h, w = self.input_shape
        x = self.new(h, w, c, "int8" if self.int8 else "fp16", self.scale("input"))
        self.ops.append(InputOp(dst=x, scale=self.scale("input")))
        stem_fp16 = model.maxpool is not None  # max-pool runs on fp16; the image stem feeds it in fp16
        x = self.conv("conv1", model.conv1, x, relu=True, out_key=None if stem_fp16 else "layer1.0.conv1.in")
        if model.maxpool is not None:
            spec = self.specs[x]
            pooled = self.new((spec.h + 2 - 3) // 2 + 1, (spec.w + 2 - 3) // 2 + 1, spec.c, "fp16")
            self.ops.append(MaxPoolOp(src=x, dst=pooled, kernel=3, stride=2, pad=1))
            x = pooled
            if self.int8:
                s = self.scale("layer1.0.conv1.in")
                pooled_spec = self.specs[x]
                q = self.new(pooled_spec.h, pooled_spec.w, pooled_spec.c, "int8", s)
                self.ops.append(QuantizeOp(src=x, dst=q, scale=s))
                x = q
        blocks = [(f"layer{i + 1}.{j}", b) for i, stage in enumerate(model.stages()) for j, b in enumerate(stage)]
        for index, (name, block) in enumerate(blocks):
            x = self.block(name, block, x, last=index == len(blocks) - 1)
        self.ops.append(HeadOp(src=x, fc_weight="fc.weight", fc_bias="fc.bias"))
        self.tensors["fc.weight"] = model.fc.weight.detach().float().contiguous()
        self.tensors["fc.bias"] = model.fc.bias.detach().float().contiguous()
        buffers, sizes = self.assign_buffers()
        return Plan(
            precision=self.precision,
            input_shape=tuple(self.input_shape),
            num_classes=int(model.fc.out_features),
            ops=self.ops,
            tensors=self.specs,
            buffers=buffers,
            buffer_bytes_per_image=sizes,
            max_batch=max_batch,
            calibration_method=calibration_method,
        )

    def block(self, name: str, block, x: str, *, last: bool) -> str:
        convs = ["conv1", "conv2", "conv3"] if isinstance(block, Bottleneck) else ["conv1", "conv2"]
        identity = x
        if block.downsample is not None:
            identity = self.conv(
                f"{name}.downsample", block.downsample, x, relu=False, out_key=f"{name}.downsample.out"
            )
        y = x
        for i, conv_name in enumerate(convs):
            final = i == len(convs) - 1
            # the block output feeds the next block (int8) or, after the last block, the head (fp16)
            out_key = None if final and last else (f"{name}.out" if final else f"{name}.{convs[i + 1]}.in")
            y = self.conv(
                f"{name}.{conv_name}",
                getattr(block, conv_name),
                y,
                relu=True,
                residual=identity if final and block.residual else None,
                out_key=out_key,
            )
        return y

    def assign_buffers(self) -> tuple[dict[str, int], list[int]]:
        """Share buffers between tensors whose lifetimes do not overlap; sizes in bytes per image."""
        reads = [[t for t in (getattr(op, "src", None), getattr(op, "residual", None)) if t] for op in self.ops]
        last_use = {t: i for i, names in enumerate(reads) for t in names}
        free: list[tuple[int, int]] = []  # (bytes per image, buffer id)
        sizes: list[int] = []
        buffers: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            out = getattr(op, "dst", None)
            if out:
                need = self.specs[out].bytes_per_image
                fits = [f for f in free if f[0] >= need]
                if fits:
                    choice = min(fits)
                    free.remove(choice)
                    buffers[out] = choice[1]
                else:
                    buffers[out] = len(sizes)
                    sizes.append(need)
            for tensor in reads[i]:
                if last_use.get(tensor) == i:
                    free.append((sizes[buffers[tensor]], buffers[tensor]))
        return buffers, sizes


def default_tiles(reason: str) -> dict[str, Tiles]:
    return {
        label: Tiles(config=dict(DEFAULT_CONFIG), tuned=False, failures={"autotune": reason}) for label in BATCH_CLASSES
    }


def autotune(
    engine: GpuEngine, batch_sizes: dict[str, int], candidates: list[dict] | None = None, rep_ms: int = 20
) -> None:
    """Time every candidate tile configuration of every conv, per batch class; keep the fastest.

    A candidate that does not compile or run (shared memory, register pressure) is recorded with the
    reason; a layer where every candidate fails is an error, never silently left untuned."""
    from triton.testing import do_bench

    for label, batch in batch_sizes.items():
        bucket = engine.bucket(batch)
        bucket["input"].normal_()
        engine.forward(bucket)  # fill every buffer with realistic values
        for op in engine.plan.convs:
            failures: dict[str, str] = {}
            best, best_ms = None, math.inf
            for cfg in candidates or CANDIDATE_CONFIGS:
                key = "x".join(str(cfg[k]) for k in ("BM", "BN", "BK", "num_warps", "num_stages"))
                try:
                    ms = float(
                        do_bench(
                            lambda cfg=cfg, op=op, bucket=bucket: engine.conv(op, bucket, cfg),
                            warmup=max(1, rep_ms // 4),
                            rep=rep_ms,
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - the compiler's reason is recorded per candidate
                    failures[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    continue
                if not (math.isfinite(ms) and ms > 0):
                    failures[key] = f"measured an invalid time ({ms})"
                elif ms < best_ms:
                    best, best_ms = cfg, ms
            if best is None:
                raise EngineError(
                    f"no tile configuration works for {op.name} at batch {batch} on this GPU: "
                    + "; ".join(f"{k}: {v}" for k, v in failures.items())
                )
            op.tiles[label] = Tiles(config=dict(best), tuned=True, ms=round(best_ms, 5), failures=failures)
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
    candidates: list[dict] | None = None,
    tune_rep_ms: int = 20,
) -> Plan:
    """Plan, calibrate (INT8), autotune (on CUDA; ``candidates``: the tile configurations to try, default
    all of CANDIDATE_CONFIGS) and save a GPU engine into ``out_dir``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    amax = activation_amax(prepared, calibration, method, device) if precision == "int8" else None
    planner = Planner(prepared.cpu(), input_shape, precision, amax)
    plan = planner.build(max_batch=max_batch, calibration_method=method if amax else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(planner.tensors, out_dir / TENSORS_FILE)
    if device == "cuda":
        # the autotuner runs the whole plan (default tiles) to fill the buffers, then times each layer
        for op in plan.convs:
            op.tiles = {label: Tiles(config=dict(DEFAULT_CONFIG), tuned=False) for label in BATCH_CLASSES}
        plan.save(out_dir)
        engine = GpuEngine(out_dir, device="cuda", use_cuda_graph=False)
        tune = {label: min(max_batch, batch) for label, batch in TUNE_BATCHES.items()}
        autotune(engine, tune, candidates, tune_rep_ms)
        plan = engine.plan
    else:
        for op in plan.convs:
            op.tiles = default_tiles("no CUDA GPU at build time: the kernel's default tiles, untuned")
    plan.save(out_dir)
    log.info(
        "GPU engine %s: %d ops, built in %.1f s (%s)",
        precision,
        len(plan.ops),
        time.perf_counter() - start,
        "autotuned" if plan.autotuned else "default tiles: no GPU to tune on",
    )
    return plan
