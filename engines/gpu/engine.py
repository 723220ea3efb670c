"""Runs a GPU engine plan: NHWC buffers per batch-size bucket, the whole forward pass captured in one
CUDA graph per bucket (eager on the CPU, where the kernels run in Triton's interpreter for tests)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resnet_serve.engines.base import Engine, EngineError, EngineInfo, require
from resnet_serve.engines.gpu.plan import (
    TENSORS_FILE,
    ConvOp,
    HeadOp,
    InputOp,
    MaxPoolOp,
    Plan,
    QuantizeOp,
    batch_class,
)
from resnet_serve.resnets.spec import INPUT_NAME, OUTPUT_NAME

TORCH_DTYPES = {"fp16": torch.float16, "int8": torch.int8, "fp32": torch.float32}


def interpreting() -> bool:
    """Triton's CPU interpreter is on (TRITON_INTERPRET=1): the kernels run, slowly, without a GPU."""
    return os.environ.get("TRITON_INTERPRET") == "1"


class GpuEngine(Engine):
    """Runs a plan. On CUDA: one CUDA graph per batch bucket; elsewhere eager (interpreter tests)."""

    def __init__(
        self, directory: str | Path, *, device: str | None = None, use_cuda_graph: bool = True, meta: dict | None = None
    ) -> None:
        directory = Path(directory)
        self.plan = Plan.load(directory)
        require("triton", "pip install triton (the GPU engine's kernels are Triton-lang)")
        from resnet_serve.engines.gpu import kernels

        self.kernels = kernels
        if not torch.cuda.is_available() or device == "cpu":
            if not interpreting():
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
        meta = meta or {}
        c, h, w = self.plan.input_shape
        self._info = EngineInfo(
            engine="gpu",
            precision=self.plan.precision,
            device=str(self.device),
            threads=None,
            input_name=INPUT_NAME,
            input_shape=[-1, c, h, w],
            input_dtype="float32",
            output_name=OUTPUT_NAME,
            num_classes=self.plan.num_classes,
            arch=meta.get("arch"),
            dataset=meta.get("dataset"),
            path=str(directory),
            details={"cuda_graph": self.use_cuda_graph, "autotuned": self.plan.autotuned, "ops": len(self.plan.ops)},
        )

    @classmethod
    def from_manifest(cls, directory: Path, manifest: dict, *, threads: int | None, device: str, **options):
        meta = {"arch": manifest.get("arch"), "dataset": manifest.get("dataset")}
        return cls(directory, device=device if device != "cpu" else None, meta=meta, **options)

    def bucket(self, batch: int) -> dict:
        """Buffers and tensor views for batches up to the next power of two of ``batch``."""
        size = 1 << max(0, math.ceil(math.log2(batch)))
        if size in self.buckets:
            return self.buckets[size]
        raw = [torch.empty(b * size, dtype=torch.uint8, device=self.device) for b in self.plan.buffer_bytes_per_image]
        views = {}
        for name, spec in self.plan.tensors.items():
            flat = raw[self.plan.buffers[name]]
            views[name] = flat.view(TORCH_DTYPES[spec.dtype])[: size * spec.h * spec.w * spec.c].view(
                size, spec.h, spec.w, spec.c
            )
        c, h, w = self.plan.input_shape
        bucket = {
            "size": size,
            "raw": raw,
            "views": views,
            "input": torch.empty(size, c, h, w, device=self.device),
            "logits": torch.empty(size, self.plan.num_classes, device=self.device),
            "class": batch_class(size),
            "graph": None,
        }
        self.buckets[size] = bucket
        return bucket

    def conv(self, op: ConvOp, bucket: dict, config: dict[str, int]) -> None:
        """One planned convolution on a bucket's buffers, with the given tile configuration."""
        v, wts = bucket["views"], self.weights
        self.kernels.conv2d(
            v[op.src],
            wts[op.weight],
            wts[op.bias],
            v[op.dst],
            stride=op.stride,
            pad=op.pad,
            kh=op.kh,
            kw=op.kw,
            relu=op.relu,
            residual=v[op.residual] if op.residual else None,
            w_scale=wts[op.w_scale] if op.w_scale else None,
            in_scale=op.in_scale,
            res_scale=op.res_scale,
            out_scale=op.out_scale,
            config=config,
        )

    def forward(self, bucket: dict) -> None:
        v, wts = bucket["views"], self.weights
        for op in self.plan.ops:
            if isinstance(op, InputOp):
                x = bucket["input"].permute(0, 2, 3, 1)
                v[op.dst].copy_(torch.round(x / op.scale).clamp_(-128, 127) if op.scale else x)
            elif isinstance(op, ConvOp):
                self.conv(op, bucket, op.tiles[bucket["class"]].config)
            elif isinstance(op, MaxPoolOp):
                nchw = v[op.src].permute(0, 3, 1, 2)
                pooled = nn.functional.max_pool2d(
                    nchw.float() if nchw.device.type == "cpu" else nchw, op.kernel, op.stride, op.pad
                )
                v[op.dst].copy_(pooled.permute(0, 2, 3, 1))
            elif isinstance(op, QuantizeOp):
                v[op.dst].copy_(torch.round(v[op.src].float() / op.scale).clamp_(-128, 127))
            elif isinstance(op, HeadOp):
                pooled = v[op.src].float().mean(dim=(1, 2))
                torch.addmm(wts[op.fc_bias], pooled, wts[op.fc_weight].t(), out=bucket["logits"])

    def infer_torch(self, x: torch.Tensor) -> torch.Tensor:
        """float32 NCHW (any device) -> float32 logits on this engine's device."""
        n = len(x)
        if n > self.plan.max_batch:
            raise EngineError(f"batch of {n} is above this engine's largest bucket ({self.plan.max_batch})")
        bucket = self.bucket(n)
        bucket["input"][:n].copy_(x)
        if self.use_cuda_graph:
            if bucket["graph"] is None:
                self._capture(bucket)
            bucket["graph"].replay()
        else:
            self.forward(bucket)
        return bucket["logits"][:n]

    def _capture(self, bucket: dict) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # compile and warm the kernels outside the graph
                self.forward(bucket)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.forward(bucket)
        bucket["graph"] = graph

    def _run(self, batch: np.ndarray) -> np.ndarray:
        step = self.plan.max_batch
        return np.concatenate(
            [
                self.infer_torch(torch.from_numpy(batch[start : start + step])).float().cpu().numpy()
                for start in range(0, len(batch), step)
            ]
        )
