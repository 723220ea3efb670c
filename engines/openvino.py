"""OpenVINO backend on the CPU: fp32 or bf16 (inference hint), or int8 (an nncf-quantized IR).

``streams``: with one stream (the default) a batch runs on all ``threads`` at once, each layer split
across them. With ``streams`` > 1 OpenVINO keeps that many streams of ``threads / streams`` threads and a
batch is cut into that many parts run side by side. Same work, but a stream's thread waits for its next
part asleep, while the threads of one wide stream spin for about a millisecond after every batch (measured:
a 16-image ResNet-20 batch every ~1 ms cost 3.4 ms of CPU with one stream of 2 threads, 2.2 ms with two
streams of 1; ``python -m benchmarks.idle_wait`` measures it per thread layout), CPU that a server's other
work on the same cores needs. One image still runs on one stream.

CPU pinning (``pin_threads``): OpenVINO pins its threads to cores by default on Linux, and every process
picks the same first cores of its affinity mask, so several instances of a Triton model (one process each)
pile onto the same cores. Measured with ``python -m benchmarks.pinning`` (ResNet-20 INT8, batch 16, 2-core
EPYC): 2 processes x 1 thread 7,091 img/s pinned vs 15,441 unpinned; 2 x 2 threads 10,915 vs 13,571; one
process alone 13,371 vs 13,292. Served alone (one instance of 2 threads, the client and tritonserver on
the same 2 cores; the load generator against one one-step model, one JPEG per request, concurrency 16),
pinned threads did better in 8 of 11 interleaved pairs: median 5,280 vs 4,773 img/s over the last 6. So by
default the threads are pinned only when they cover every core this process may use, and the classifier
model asks for no pinning when it has more than one instance (``server/models/classifier.py``).

The precision ``info()`` reports is read from the compiled model's runtime graph (the precision its
convolutions really run in), not from the request: without an explicit f32 hint OpenVINO runs bf16
on CPUs that have it, and silently falls back to f32 on CPUs that do not.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import numpy as np

from resnet_serve.engines.base import Engine, EngineError, EngineInfo, engine_threads, require
from resnet_serve.resnets.env import available_cores

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}


def openvino():
    return require("openvino", "pip install openvino")


@functools.cache
def core():
    """One ``ov.Core`` per process, kept until exit. Its CPU plugin sets an alternate signal stack on the
    thread that creates it and puts back the one it found when it is destroyed; with two plugins destroyed
    in the order they were made (engines of two Cores freed first-in first-out) the thread is left with a
    freed stack, and the next signal (Ctrl-C, SIGTERM) kills the process with SIGSEGV before any clean-up
    (seen with OpenVINO 2026.4: Python's handlers run on that stack). One plugin that lives as
    long as the process cannot do that; compiled models keep their own settings, so sharing it is free."""
    return openvino().Core()


def cpu_capabilities() -> list[str]:
    """OpenVINO's optimization capabilities of this CPU (FP32, INT8, BF16, FP16, ...)."""
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoEngine(Engine):
    def __init__(
        self,
        model_path: str | Path,
        *,
        precision: str | None = None,
        threads: int | None = None,
        device: str = "cpu",
        meta: dict | None = None,
        streams: int | None = None,
        pin_threads: bool | None = None,
    ) -> None:
        ov = openvino()
        precision = precision or "fp32"
        if device != "cpu":
            raise EngineError(f"the OpenVINO engine runs on the CPU only, not {device!r}")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(f"OpenVINO model {self.model_path} not found; run `python -m export` first")
        threads = engine_threads(threads)
        streams = streams or 1
        if not 1 <= streams <= threads:
            raise EngineError(f"OpenVINO streams must be between 1 and the threads ({threads}), got {streams}")
        hint = HINTS.get(precision)
        if hint is None:
            raise EngineError(f"unknown OpenVINO precision {precision!r}; use {', '.join(HINTS)}")
        pinned = threads >= available_cores() if pin_threads is None else bool(pin_threads)
        config = {
            "ENABLE_CPU_PINNING": pinned,
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": hint,
            "NUM_STREAMS": streams,
            **({"PERFORMANCE_HINT": "LATENCY"} if streams == 1 else {}),
        }
        try:
            self.compiled = core().compile_model(core().read_model(str(self.model_path)), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with the reason
            raise EngineError(f"OpenVINO could not compile {self.model_path}: {exc}") from exc
        self.requests = [self.compiled.create_infer_request() for _ in range(streams)]  # one per stream
        self._lock = threading.Lock()  # calls from several threads take turns
        runtime = runtime_precisions(self.compiled)
        really = (
            "int8"
            if "i8" in runtime or "u8" in runtime
            else {"bf16": "bf16", "f16": "fp16"}.get(runtime.get("dominant"), "fp32")
        )
        if really != precision:
            log.warning(
                "OpenVINO was asked for %s but runs %s on this CPU (capabilities: %s)",
                precision,
                really,
                ", ".join(cpu_capabilities()),
            )
        inp, out = self.compiled.inputs[0], self.compiled.outputs[0]
        meta = meta or {}
        self._info = EngineInfo(
            engine="openvino",
            precision=really,
            device="cpu",
            threads=threads,
            input_name=inp.get_any_name(),
            input_shape=[d.get_length() if d.is_static else -1 for d in inp.get_partial_shape()],
            input_dtype=inp.get_element_type().to_dtype().name,
            output_name=out.get_any_name(),
            num_classes=out.get_partial_shape()[-1].get_length(),
            arch=meta.get("arch"),
            dataset=meta.get("dataset"),
            path=str(self.model_path),
            details={
                "requested_precision": precision,
                "inference_precision_hint": hint,
                "streams": streams,
                "cpu_pinning": pinned,
                "conv_runtime_precisions": runtime,
                "openvino": ov.__version__,
            },
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if len(self.requests) == 1 or len(batch) == 1:
                self.requests[0].infer({0: batch}, share_inputs=True)  # the batch outlives the call: no copy
                return self.requests[0].get_output_tensor(0).data.copy()
            parts = np.array_split(batch, min(len(self.requests), len(batch)))
            running = self.requests[: len(parts)]
            for request, part in zip(running, parts, strict=True):
                request.start_async({0: part}, share_inputs=True)  # parts are views of the batch, kept until wait()
            failure = None
            for request in running:  # every part is waited for, even after one failed, so none stays busy
                try:
                    request.wait()
                except Exception as exc:  # noqa: BLE001 - raised below, after the other parts finished
                    failure = failure or exc
            if failure is not None:
                raise failure
            return np.concatenate([request.get_output_tensor(0).data for request in running])


def runtime_precisions(compiled) -> dict:
    """Counts of the runtime precisions of a compiled model's convolutions, plus the dominant one."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) == "Convolution":
            precision = str(info["runtimePrecision"].astype(str))
            counts[precision] = counts.get(precision, 0) + 1
    if counts:
        counts["dominant"] = max((k for k in counts if k != "dominant"), key=counts.get)
    return counts
