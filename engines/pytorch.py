"""PyTorch backends: eager on the CPU (the reference every engine is compared with) and, on CUDA
hosts, the peers the GPU engine is measured against (eager channels_last, eager + CUDA graph,
torch.compile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from resnet_serve.engines.base import Engine, EngineError, EngineInfo, engine_threads
from resnet_serve.resnets.checkpoint import checkpoint_contract, load_checkpoint
from resnet_serve.resnets.models import arch_spec
from resnet_serve.resnets.spec import INPUT_NAME, OUTPUT_NAME, DatasetSpec

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_MODES = ("eager", "cuda-graph", "compile")


def _info(
    engine: str, precision: str, device: str, threads: int | None, model, arch: str, spec, path, details
) -> EngineInfo:
    return EngineInfo(
        engine=engine,
        precision=precision,
        device=device,
        threads=threads,
        input_name=INPUT_NAME,
        input_shape=[-1, *spec.input_shape],
        input_dtype="float32",
        output_name=OUTPUT_NAME,
        num_classes=model.fc.out_features,
        arch=arch,
        dataset=spec.name,
        path=str(path) if path else None,
        details={"torch": torch.__version__, **details},
    )


class TorchEngine(Engine):
    """PyTorch eager: fp32, or bf16/fp16 autocast."""

    def __init__(
        self,
        model: torch.nn.Module,
        arch: str,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        channels_last: bool = True,
        path: str | Path | None = None,
        spec: DatasetSpec | None = None,
    ) -> None:
        """``spec``: the model contract (input size, dataset); default: the architecture's dataset."""
        if precision not in AUTOCAST:
            raise EngineError(f"PyTorch precision must be one of {', '.join(AUTOCAST)}, got {precision!r}")
        threads = engine_threads(threads)
        if device == "cpu":
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device).to(memory_format=self.memory_format)
        self.dtype = AUTOCAST[precision]
        self._info = _info(
            "pytorch",
            precision,
            device,
            threads if device == "cpu" else None,
            model,
            arch,
            spec or arch_spec(arch).dataset,
            path,
            {"mode": "eager", "channels_last": channels_last, "autocast": precision != "fp32"},
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, *, arch: str | None = None, **options) -> TorchEngine:
        """A resnet-serve checkpoint (its contract gives the input size)."""
        model, ckpt = load_checkpoint(checkpoint, arch)
        return cls(model, ckpt["arch"], path=checkpoint, spec=checkpoint_contract(ckpt), **options)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None),
        ):
            return self.model(x).float().cpu().numpy()


class CudaTorchEngine(Engine):
    """The GPU peers: channels_last fp16 eager (cuDNN), the same replayed from a CUDA graph, torch.compile."""

    def __init__(self, checkpoint: str | Path, mode: str = "eager", precision: str = "fp16") -> None:
        if mode not in CUDA_MODES:
            raise EngineError(f"mode must be one of {', '.join(CUDA_MODES)}, got {mode!r}")
        if not torch.cuda.is_available():
            raise EngineError("the CUDA PyTorch peers need a CUDA GPU (torch.cuda.is_available() is False)")
        model, ckpt = load_checkpoint(checkpoint)
        self.dtype = AUTOCAST[precision] or torch.float32
        self.model = model.to("cuda", self.dtype).to(memory_format=torch.channels_last).eval()
        self.mode = mode
        self.forward = torch.compile(self.model) if mode == "compile" else self.model
        self.graphs: dict[int, tuple] = {}
        self._info = _info(
            f"pytorch-{mode}",
            precision,
            "cuda",
            None,
            model,
            ckpt["arch"],
            checkpoint_contract(ckpt),
            checkpoint,
            {"gpu": torch.cuda.get_device_name(0), "channels_last": True},
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

    def infer_torch(self, x: torch.Tensor) -> torch.Tensor:
        """float32 NCHW on the GPU -> logits on the GPU (what device-side timings measure)."""
        x = x.to("cuda", self.dtype).contiguous(memory_format=torch.channels_last)
        if self.mode == "cuda-graph":
            return self._graph(x)
        with torch.inference_mode():
            return self.forward(x)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_torch(torch.from_numpy(batch)).float().cpu().numpy()
