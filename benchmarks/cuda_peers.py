"""PyTorch peers on a CUDA GPU: eager (cuDNN, channels_last, fp16), eager + CUDA graph, torch.compile.

Only used where ``torch.cuda.is_available()``; the GPU engine (``export --engines gpu``) is measured
beside them through the same ``Engine`` API.
"""

from __future__ import annotations

import numpy as np
import torch

from resnet_serve.export.runtime import Engine, EngineInfo
from resnet_serve.resnets.checkpoint import load_checkpoint
from resnet_serve.resnets.models import arch_spec

MODES = ("eager", "cuda-graph", "compile")


class CudaTorchEngine(Engine):
    def __init__(self, checkpoint, mode: str = "eager", precision: str = "fp16") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        model, ckpt = load_checkpoint(checkpoint)
        self.dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        self.model = model.to("cuda", self.dtype).to(memory_format=torch.channels_last).eval()
        self.mode = mode
        self.forward = torch.compile(self.model) if mode == "compile" else self.model
        self.graphs: dict[int, tuple] = {}
        spec = arch_spec(ckpt["arch"]).dataset
        self._info = EngineInfo(
            engine=f"pytorch-{mode}",
            precision=precision,
            device="cuda",
            threads=None,
            input_name="input",
            input_shape=[-1, *spec.input_shape],
            input_dtype="float32",
            output_name="logits",
            num_classes=self.model.fc.out_features,
            arch=ckpt["arch"],
            dataset=spec.name,
            details={"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "channels_last": True},
        )

    def _graph(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n not in self.graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self.model(static_in)
            self.graphs[n] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[n]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to("cuda", self.dtype).contiguous(memory_format=torch.channels_last)
        if self.mode == "cuda-graph":
            out = self._graph(x)
        else:
            with torch.inference_mode():
                out = self.forward(x)
        return out.float().cpu().numpy()
