"""Image classification against the Triton server, over gRPC or HTTP.

    from resnet_serve.client import Classifier
    clf = Classifier("localhost:8001", protocol="grpc", model="resnet20")
    clf.classify(["cat.jpg", png_bytes, pil_image, uint8_array], top_k=5)  # -> [[Prediction, ...], ...]

Two kinds of served models:
* an **ensemble** (BYTES ``image`` input): images are sent encoded (files as they are; PIL images and
  arrays as lossless PNG) and decoded + preprocessed on the server;
* a **classifier** (tensor ``input``): images are preprocessed here with exactly the training
  preprocessing (``resnets.spec``) and sent as tensors, optionally through system shared memory.

The batch limit is read from the server (``max_batch_size``), never assumed. A request that fails is
retried image by image, so one bad image fails alone and every other result is kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_serve.resnets.spec import DATASETS, ImageError, ImageLike, encode_png, normalize, preprocess_pixels

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
Source = str | Path | ImageLike


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass
class ImageResult:
    """The outcome for one input image: predictions, or the reason it failed."""

    source: str
    predictions: list[Prediction] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ClientError(RuntimeError):
    """Base class of the client's errors."""


class ServerUnavailable(ClientError):
    """The server cannot be reached (or is not ready)."""


class ModelNotFound(ClientError):
    """The server does not serve the requested model."""


class ClassificationError(ClientError):
    """Some images could not be classified; ``results`` holds every image's outcome (nothing is lost)."""

    def __init__(self, results: list[ImageResult]) -> None:
        self.results = results
        failed = [r for r in results if not r.ok]
        first = failed[0]
        super().__init__(f"{len(failed)} of {len(results)} images failed; first: {first.source}: {first.error}")


def protocol_module(protocol: str, asynchronous: bool = False):
    if protocol == "grpc":
        if asynchronous:
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.grpc as module
    elif protocol == "http":
        if asynchronous:
            import tritonclient.http.aio as module
        else:
            import tritonclient.http as module
    else:
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    return module


def normalize_url(url: str | None, protocol: str) -> str:
    """host:port as tritonclient wants it; a missing port gets the protocol's default."""
    url = url or f"localhost:{DEFAULT_PORTS[protocol]}"
    for prefix in ("grpc://", "http://", "https://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    return url if ":" in url else f"{url}:{DEFAULT_PORTS[protocol]}"


def describe_source(source: Source, index: int) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__} #{index}>"


def encode_image(source: Source) -> bytes:
    """Encoded bytes for the ensemble: files as they are, PIL images and arrays as lossless PNG."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{path}: is a directory, not an image file") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8:
            raise ImageError(f"image arrays must be uint8 HWC RGB, got dtype {source.dtype}")
        return encode_png(source)
    if isinstance(source, Image.Image):
        return encode_png(source)
    raise ImageError(f"cannot classify a {type(source).__name__}; pass a path, bytes, PIL image or uint8 array")


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about a served model, read from its metadata and config."""

    name: str
    kind: str  # "ensemble" (image bytes in) or "classifier" (tensor in)
    input_name: str
    input_datatype: str  # BYTES, FP32 or UINT8
    input_shape: tuple[int, ...]  # without the batch dimension
    output_name: str
    num_classes: int
    max_batch_size: int

    @property
    def dataset(self):
        side = self.input_shape[1] if self.input_shape[0] == 3 else self.input_shape[0]
        return next(spec for spec in DATASETS.values() if spec.image_size == side)

    @classmethod
    def from_server(cls, name: str, metadata: dict, config: dict) -> ModelInfo:
        inp, out = metadata["inputs"][0], metadata["outputs"][0]
        max_batch = int(config.get("max_batch_size", 0))
        shape = [int(d) for d in inp["shape"]][1 if max_batch else 0 :]
        return cls(
            name=name,
            kind="ensemble" if inp["datatype"] == "BYTES" else "classifier",
            input_name=inp["name"],
            input_datatype=inp["datatype"],
            input_shape=tuple(shape),
            output_name=out["name"],
            num_classes=int(out["shape"][-1]),
            max_batch_size=max(1, max_batch),
        )

    def prepare(self, sources: Sequence[Source], start: int = 0) -> np.ndarray:
        """The request tensor for a chunk of images (raises ImageError naming the bad image)."""
        if self.kind == "ensemble":
            return np.array([[encode_image(s)] for s in sources], dtype=np.object_)
        spec = self.dataset
        rows = []
        for i, source in enumerate(sources):
            name = describe_source(source, start + i)
            pixels = preprocess_pixels(
                encode_image(source) if isinstance(source, (str, Path)) else source, spec, source=name
            )
            rows.append(pixels if self.input_datatype == "UINT8" else normalize(pixels, spec))
        return np.stack(rows)


def parse_classification(row: Iterable[bytes]) -> list[Prediction]:
    """Triton's classification extension: one "score:index:label" string per class, best first."""
    predictions = []
    for entry in row:
        score, index, label = (entry.decode() if isinstance(entry, bytes) else entry).split(":", 2)
        predictions.append(Prediction(label=label, index=int(index), score=float(score)))
    return predictions


def unreachable_message(url: str, protocol: str, exc) -> str:
    detail = exc.message() if hasattr(exc, "message") else str(exc)
    return (
        f"cannot reach the Triton server at {url} over {protocol} ({detail.strip()}); start it "
        "with `python -m server` (or pass --url HOST:PORT)"
    )


class Connection:
    """A tritonclient client plus error translation: unreachable servers raise ServerUnavailable."""

    def __init__(self, url: str | None, protocol: str, timeout_s: float) -> None:
        self.protocol = protocol
        self.module = protocol_module(protocol)
        self.url = normalize_url(url, protocol)
        if protocol == "http":
            self.client = self.module.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self.client = self.module.InferenceServerClient(self.url)
        self.json = {"as_json": True} if protocol == "grpc" else {}

    def call(self, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            if is_unavailable(exc):
                raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None
            raise
        except (OSError, ConnectionError) as exc:
            raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None

    def served_models(self) -> list[dict]:
        """Every model in the server's repository with its state (READY, UNAVAILABLE, ...)."""
        index = self.call(self.client.get_model_repository_index, **self.json)
        models = index.get("models", []) if isinstance(index, dict) else index
        return [
            {
                "name": m["name"],
                "version": m.get("version", ""),
                "state": m.get("state", ""),
                "reason": m.get("reason", ""),
            }
            for m in models
        ]

    def model_info(self, model: str) -> ModelInfo:
        if not self.call(self.client.is_server_live):
            raise ServerUnavailable(f"the Triton server at {self.url} is not live yet; wait for it to start")
        if not self.call(self.client.is_model_ready, model):
            ready = [m["name"] for m in self.served_models() if m["state"] == "READY"]
            raise ModelNotFound(f"model {model!r} is not served at {self.url}; available: {', '.join(ready) or 'none'}")
        metadata = self.call(self.client.get_model_metadata, model, **self.json)
        config = self.call(self.client.get_model_config, model, **self.json)
        return ModelInfo.from_server(model, metadata, config.get("config", config))

    def close(self) -> None:
        self.client.close()


class Classifier:
    """Synchronous client. See the module docstring; ``AsyncClassifier`` is the asyncio variant."""

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        model: str = "resnet20",
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        batch_size: int | None = None,
        shared_memory: bool = False,
    ) -> None:
        self.connection = Connection(url, protocol, timeout_s)
        self.protocol, self.url, self.module = protocol, self.connection.url, self.connection.module
        self.client = self.connection.client
        self.model, self.timeout_s, self.retries = model, timeout_s, retries
        try:
            self.info = self.connection.model_info(model)
        except BaseException:
            self.connection.close()
            raise
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = min(batch_size or self.info.max_batch_size, self.info.max_batch_size)
        self._shm = None
        if shared_memory:
            if self.info.kind != "classifier":
                raise ValueError(
                    "shared memory carries tensors: use it with a *_classifier model, "
                    f"not the ensemble {model!r} (which takes encoded images)"
                )
            from resnet_serve.client.shm import SharedMemoryBuffers

            self._shm = SharedMemoryBuffers(self.module, self.client, self.info, self.batch_size)

    def served_models(self) -> list[dict]:
        return self.connection.served_models()

    # ---- classification ----------------------------------------------------------------------------

    def classify(self, images: Sequence[Source] | Source, top_k: int = 5) -> list[list[Prediction]]:
        """Top-k predictions per image; raises ClassificationError (with every result) if any image failed."""
        results = self.classify_detailed(images, top_k=top_k)
        if not all(r.ok for r in results):
            raise ClassificationError(results)
        return [r.predictions for r in results]

    def classify_detailed(self, images: Sequence[Source] | Source, top_k: int = 5) -> list[ImageResult]:
        """One ImageResult per image, in order; failures are reported per image, never raised."""
        sources = as_list(images)
        top_k = self._check_top_k(top_k)
        results: list[ImageResult] = []
        for start in range(0, len(sources), self.batch_size):
            chunk = sources[start : start + self.batch_size]
            try:
                results += self._classify_chunk(chunk, start, top_k)
            except ServerUnavailable as exc:  # the server went away: keep what was classified, fail the rest
                results += [
                    ImageResult(describe_source(s, start + i), error=str(exc)) for i, s in enumerate(sources[start:])
                ]
                break
        return results

    def _check_top_k(self, top_k: int) -> int:
        if not 1 <= top_k <= self.info.num_classes:
            raise ValueError(f"top_k must be between 1 and {self.info.num_classes} for {self.model}, got {top_k}")
        return top_k

    def _classify_chunk(self, chunk: Sequence[Source], start: int, top_k: int) -> list[ImageResult]:
        names = [describe_source(s, start + i) for i, s in enumerate(chunk)]
        try:
            rows = self._infer(self.info.prepare(chunk, start), top_k)
            return [ImageResult(name, parse_classification(row)) for name, row in zip(names, rows, strict=True)]
        except ServerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - isolate the failing image(s) below
            if len(chunk) == 1 or is_timeout(exc):  # a slow batch is not retried image by image
                return [ImageResult(name, error=error_text(exc, self.timeout_s)) for name in names]
        # the batch failed: retry image by image, so only the bad ones fail
        return [result for i, source in enumerate(chunk) for result in self._classify_chunk([source], start + i, top_k)]

    def _infer(self, batch: np.ndarray, top_k: int) -> np.ndarray:
        from tritonclient.utils import InferenceServerException

        attempt = 0
        while True:
            try:
                return self._infer_once(batch, top_k)
            except InferenceServerException as exc:
                if attempt >= self.retries or not is_transient(exc):
                    if is_unavailable(exc):
                        raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None
                    raise
            attempt += 1
            time.sleep(min(2.0, 0.1 * 2**attempt))

    def _infer_once(self, batch: np.ndarray, top_k: int) -> np.ndarray:
        m = self.module
        output = m.InferRequestedOutput(self.info.output_name, class_count=top_k)
        if self._shm is not None:
            inputs = [self._shm.input(batch)]
        else:
            tensor = m.InferInput(self.info.input_name, list(batch.shape), self.info.input_datatype)
            tensor.set_data_from_numpy(batch)
            inputs = [tensor]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self.client.infer(self.model, inputs, outputs=[output], **kwargs)
        return result.as_numpy(self.info.output_name)

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self.connection.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_list(images) -> list:
    if isinstance(images, (str, Path, bytes, bytearray, Image.Image)) or (
        isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (2, 3)
    ):
        return [images]
    return list(images)


def _status(exc) -> str:
    status = exc.status() if hasattr(exc, "status") else None
    return str(status or "")


def is_unavailable(exc) -> bool:
    text = f"{_status(exc)} {exc.message() if hasattr(exc, 'message') else exc}".lower()
    return any(
        s in text
        for s in (
            "unavailable",
            "failed to connect",
            "connection refused",
            "name or service not known",
            "failed to establish",
            "connect call failed",
        )
    )


def is_transient(exc) -> bool:
    text = f"{_status(exc)} {exc.message() if hasattr(exc, 'message') else exc}".lower()
    return is_unavailable(exc) or "resource_exhausted" in text or "connection reset" in text


def is_timeout(exc: Exception) -> bool:
    message = (exc.message() if hasattr(exc, "message") else str(exc)).lower()
    return isinstance(exc, TimeoutError) or any(s in message for s in ("deadline", "timed out", "timeout"))


def error_text(exc: Exception, timeout_s: float) -> str:
    if is_timeout(exc):
        return f"timed out after {timeout_s:g} s (raise --timeout, or check the server's load)"
    return (exc.message() if hasattr(exc, "message") else str(exc)).strip()


__all__ = [
    "Classifier",
    "ClassificationError",
    "ClientError",
    "ImageResult",
    "ModelInfo",
    "ModelNotFound",
    "Prediction",
    "ServerUnavailable",
]
