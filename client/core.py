"""The client's core, written once for the sync and the asyncio transports: what a served model takes
(``ModelInfo``, read from its metadata and config), how a classify call is split into requests and its
results assembled (``Job``), and when a failed request is retried (``RetryPolicy``, by status code).
The transports (``client/sync.py``, ``client/aio.py``) only send requests. No torch here.
"""

from __future__ import annotations

import enum
import http.client
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_serve import settings
from resnet_serve.errors import ExitCode, ResnetServeError, UsageError
from resnet_serve.resnets.spec import (
    ContractError,
    DatasetSpec,
    ImageError,
    ImageLike,
    encode_png,
    normalize,
    preprocess_pixels,
)

Source = str | Path | ImageLike


# ---- results and errors ---------------------------------------------------------------------------


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
    unreachable: bool = False  # failed because the server could not be reached (after waiting for it)

    def record(self) -> dict:
        """The JSON-lines form (``--json``, ``--output``)."""
        if self.ok:
            predictions = [{"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in self.predictions]
            return {"image": self.source, "predictions": predictions}
        return {"image": self.source, "error": self.error}

    @property
    def ok(self) -> bool:
        return self.error is None


class ClientError(ResnetServeError):
    """Base class of the client's errors."""


class ServerUnavailable(ClientError):
    """The server cannot be reached (or is not ready)."""


class KeyRequired(ClientError):
    """The server keeps this API behind its key (--api-key-file)."""


class ModelNotFound(ClientError):
    """The server does not serve the requested model."""


class ClassificationError(ClientError):
    """Some images could not be classified; ``results`` holds every image's outcome (nothing is lost)."""

    exit_code = ExitCode.FAILED

    def __init__(self, results: list[ImageResult]) -> None:
        self.results = results
        failed = [r for r in results if not r.ok]
        first = failed[0]
        super().__init__(f"{len(failed)} of {len(results)} images failed; first: {first.source}: {first.error}")


def predictions_or_raise(results: list[ImageResult]) -> list[list[Prediction]]:
    if not all(r.ok for r in results):
        raise ClassificationError(results)
    return [r.predictions for r in results]


# ---- connection facts -----------------------------------------------------------------------------


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
        raise UsageError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    return module


def unreachable_message(url: str, protocol: str, exc: BaseException) -> str:
    detail = exc.message() if hasattr(exc, "message") else str(exc) or type(exc).__name__
    return (
        f"cannot reach the Triton server at {url} over {protocol} ({type(exc).__name__}: {detail.strip()}); "
        "start it with `python -m server` (or pass --url HOST:PORT)"
    )


@dataclass(frozen=True)
class Security:
    """What the client presents: the server's API key (sent with control-plane calls: the repository index,
    shared-memory registration) and, for gRPC over TLS, the CA of the server's certificate and, for mutual
    TLS, this client's certificate and key (PEM files)."""

    api_key: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_files(cls, key_file: str | Path | None = None, **tls) -> Security:
        """The key in ``key_file``, else in the default key file where it exists and is readable."""
        path = settings.api_key_file(key_file)
        try:
            key = path.read_text().strip() or None
        except OSError as exc:
            if key_file:  # asked for explicitly: say why it cannot be used
                raise UsageError(f"cannot read the API key file {path}: {exc.strerror}") from None
            key = None
        return cls(key, **tls)

    def headers(self, protocol: str) -> dict[str, str]:
        """The key as Triton's restricted APIs expect it (over gRPC, the header's name gets a prefix)."""
        if not self.api_key:
            return {}
        name = settings.API_KEY_HEADER if protocol == "http" else f"triton-grpc-protocol-{settings.API_KEY_HEADER}"
        return {name: self.api_key}

    def header_kwargs(self, protocol: str) -> dict:
        """``headers=`` for a tritonclient call, where there is a key."""
        return {"headers": self.headers(protocol)} if self.api_key else {}

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key)

    def client(self, module, url: str, protocol: str, timeout_s: float | None = None):
        """A tritonclient InferenceServerClient of ``module`` (grpc, http or their aio variants) for ``url``."""
        if protocol == "http":
            if self.tls:
                raise UsageError("TLS options are for gRPC; over HTTP, put TLS in front of the server's proxy")
            timeouts = {"connection_timeout": timeout_s, "network_timeout": timeout_s} if timeout_s else {}
            return module.InferenceServerClient(url, **timeouts)
        if not self.tls:
            return module.InferenceServerClient(url)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise UsageError("mutual TLS needs both a client certificate and its key")
        for path in (self.tls_ca, self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"TLS file {path} does not exist")
        return module.InferenceServerClient(
            url,
            ssl=True,
            root_certificates=str(self.tls_ca) if self.tls_ca else None,
            private_key=str(self.tls_key) if self.tls_key else None,
            certificate_chain=str(self.tls_cert) if self.tls_cert else None,
        )


# ---- failures and retries -------------------------------------------------------------------------


class Failure(enum.Enum):
    UNAVAILABLE = "unavailable"  # nothing answers: connection refused, the server going away
    TRANSIENT = "transient"  # the server is there but cannot take the request now
    TIMEOUT = "timeout"  # no answer within the deadline
    REJECTED = "rejected"  # the server answered with an error about this request (e.g. a bad image)
    FORBIDDEN = "forbidden"  # an API behind the server's key, called without it (or with another)


# INTERNAL / 500: the server's own failure, e.g. a model process that died and is being reloaded
GRPC_STATUS = {
    "StatusCode.UNAVAILABLE": Failure.UNAVAILABLE,
    "StatusCode.RESOURCE_EXHAUSTED": Failure.TRANSIENT,
    "StatusCode.INTERNAL": Failure.TRANSIENT,
    "StatusCode.DEADLINE_EXCEEDED": Failure.TIMEOUT,
}
HTTP_STATUS = {
    "502": Failure.UNAVAILABLE,
    "500": Failure.TRANSIENT,
    "503": Failure.TRANSIENT,
    "429": Failure.TRANSIENT,
    "403": Failure.FORBIDDEN,
    "408": Failure.TIMEOUT,
    "504": Failure.TIMEOUT,
}


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a request can raise that is about the request (everything else is a bug and propagates)."""
    from tritonclient.utils import InferenceServerException

    # http.client.HTTPException: the HTTP connection closed or broke mid-response (geventhttpclient's errors)
    return (InferenceServerException, OSError, TimeoutError, http.client.HTTPException)


def failure_kind(exc: BaseException) -> Failure:
    """Classify by the status code (gRPC or HTTP) or the exception type; by message text only where Triton
    gives nothing else (a restricted gRPC API answers UNAVAILABLE, as a server that is down does)."""
    if isinstance(exc, ServerUnavailable):
        return Failure.UNAVAILABLE
    status = exc.status() if hasattr(exc, "status") and callable(exc.status) else None
    if str(status) == "StatusCode.UNAVAILABLE" and "protocol is restricted" in str(exc.message() or ""):
        return Failure.FORBIDDEN
    if status:
        return GRPC_STATUS.get(str(status)) or HTTP_STATUS.get(str(status)) or Failure.REJECTED
    if isinstance(exc, TimeoutError):  # also socket.timeout and asyncio.TimeoutError
        return Failure.TIMEOUT
    if isinstance(exc, (OSError, http.client.HTTPException)):  # refused, reset, closed mid-response
        return Failure.UNAVAILABLE
    return Failure.REJECTED


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed request is sent again, with exponential backoff: a server that cannot be reached is
    waited for up to ``wait_for_server_s`` (a supervised restart takes seconds); a request the server could
    not take now (busy, a model being reloaded) is retried ``retries`` times; anything else is final."""

    retries: int = 2
    wait_for_server_s: float = 60.0
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0

    def __post_init__(self) -> None:
        if not (isinstance(self.retries, int) and self.retries >= 0):
            raise UsageError(f"retries must be a whole number of at least 0, got {self.retries!r}")
        if not (math.isfinite(self.wait_for_server_s) and self.wait_for_server_s >= 0):
            raise UsageError(f"wait_for_server_s must be a finite number of seconds >= 0, got {self.wait_for_server_s}")

    def delay(self, outcome, attempt: int, waited_s: float = 0.0) -> float | None:
        """Seconds to wait before trying again, or None when ``outcome`` is final. ``waited_s``: time since
        the request was first sent."""
        if isinstance(outcome, np.ndarray):
            return None
        step = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt + 1))
        kind = failure_kind(outcome)
        if kind is Failure.UNAVAILABLE and waited_s < self.wait_for_server_s:
            return min(step, self.wait_for_server_s - waited_s)
        if kind is Failure.TRANSIENT and attempt < self.retries:
            return step
        return None


def settle(outcome, url: str, protocol: str):
    """A final outcome: rows, ServerUnavailable for an unreachable server, or the request's own error."""
    if not isinstance(outcome, np.ndarray) and failure_kind(outcome) is Failure.UNAVAILABLE:
        return ServerUnavailable(unreachable_message(url, protocol, outcome))
    return outcome


def error_text(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, ServerUnavailable):
        return str(exc)
    if failure_kind(exc) is Failure.TIMEOUT:
        return f"timed out after {timeout_s:g} s (raise --timeout, or check the server's load)"
    return (exc.message() if hasattr(exc, "message") else str(exc)).strip() or type(exc).__name__


# ---- the model ------------------------------------------------------------------------------------


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


def as_list(images) -> list:
    if isinstance(images, (str, Path, bytes, bytearray, Image.Image)) or (
        isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (2, 3)
    ):
        return [images]
    return list(images)


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about a served model, read from its metadata and config."""

    name: str
    # "ensemble": encoded images as BYTES (the ensemble, or a one-step model taking BYTES);
    # "raw": one encoded image per request as UINT8 bytes (a one-step model with ragged batching);
    # "classifier": the network's input tensor
    kind: str
    input_name: str
    input_datatype: str  # BYTES, FP32 or UINT8
    input_shape: tuple[int, ...]  # without the batch dimension
    output_name: str
    num_classes: int
    max_batch_size: int
    spec: DatasetSpec | None  # the model contract from the config's parameters (None: not stated)

    @classmethod
    def from_server(cls, name: str, metadata: dict, config: dict) -> ModelInfo:
        inp, out = metadata["inputs"][0], metadata["outputs"][0]
        max_batch = int(config.get("max_batch_size", 0))
        scores = [int(d) for d in out["shape"]][1 if max_batch else 0 :]
        if len(scores) != 1 or scores[0] < 1:  # e.g. a preprocess model: its output is an image tensor
            raise UsageError(
                f"model {name!r} is not a classifier: its output {out['name']!r} has shape {scores}, not one score "
                "per class; classify with a network's model (e.g. resnet20), one of its ensembles or a *_classifier"
            )
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        try:
            spec = DatasetSpec.from_parameters(params, f"model {name!r}")
        except ContractError:
            spec = None  # only a tensor request needs it; prepare() says so then
        if inp["datatype"] == "BYTES":
            kind = "ensemble"
        elif config.get("input") and config["input"][0].get("allow_ragged_batch"):
            kind = "raw"  # a ragged UINT8 input: the encoded file itself, not pixels
        else:
            kind = "classifier"
        return cls(
            name=name,
            kind=kind,
            input_name=inp["name"],
            input_datatype=inp["datatype"],
            input_shape=tuple(int(d) for d in inp["shape"])[1 if max_batch else 0 :],
            output_name=out["name"],
            num_classes=scores[0],
            max_batch_size=max(1, max_batch),
            spec=spec,
        )

    def prepare(self, source: Source, name: str) -> np.ndarray:
        """One image as a row of the request tensor (raises ImageError naming the image)."""
        if self.kind == "ensemble":
            return np.array([encode_image(source)], dtype=np.object_)
        if self.kind == "raw":
            return np.frombuffer(encode_image(source), dtype=np.uint8)
        if self.spec is None:
            raise ContractError(
                f"model {self.name!r} takes tensors but states no preprocessing in its config parameters; "
                "classify through its ensemble (encoded images) instead"
            )
        if isinstance(source, (str, Path)):
            source = encode_image(source)
        pixels = preprocess_pixels(source, self.spec, source=name)
        return pixels if self.input_datatype == "UINT8" else normalize(pixels, self.spec)


def prepare_all(info: ModelInfo, sources: Sequence[Source]) -> np.ndarray:
    """The request tensor for these images, as the client sends it (raises ImageError for a bad image)."""
    return np.stack([info.prepare(s, describe_source(s, i)) for i, s in enumerate(sources)])


def parse_classification(row: Iterable[bytes]) -> list[Prediction]:
    """Triton's classification extension: one "score:index:label" string per class, best first."""
    predictions = []
    for entry in row:
        score, index, label = (entry.decode() if isinstance(entry, bytes) else entry).split(":", 2)
        predictions.append(Prediction(label=label, index=int(index), score=float(score)))
    return predictions


def request_tensors(module, info: ModelInfo, batch: np.ndarray, top_k: int, shm=None, slot: int = 0):
    """The request's input (in-band, or written into a shared-memory slot) and its top-k output, for ``module``
    (tritonclient.grpc, .http or their aio variants)."""
    if shm is not None:
        tensor = shm.input(module, batch, slot)
    else:
        tensor = module.InferInput(info.input_name, list(batch.shape), info.input_datatype)
        tensor.set_data_from_numpy(batch)
    return [tensor], [module.InferRequestedOutput(info.output_name, class_count=top_k)]


# ---- one classify call ----------------------------------------------------------------------------


@dataclass
class Call:
    """One request: the images (by index) it carries and their rows of the request tensor."""

    indices: list[int]
    batch: np.ndarray


class Job:
    """Plans one classify call and assembles its results; the transport only sends ``Call``s.

    ``first()`` gives the first requests (chunks of at most ``batch_size`` images; images that fail
    locally, e.g. a missing file, get their error at once); ``feed(outcomes)`` takes what each request
    returned (rows or an exception) and gives the next requests: a chunk the server rejected is retried
    image by image, so only the bad images fail; a timeout or an unreachable server is final. When no
    requests are left, ``results`` holds one ImageResult per image, in order.
    """

    def __init__(self, info: ModelInfo, images, *, batch_size: int, top_k: int, timeout_s: float) -> None:
        if not 1 <= top_k <= info.num_classes:
            raise UsageError(f"top_k must be between 1 and {info.num_classes} for {info.name}, got {top_k}")
        self.info, self.top_k, self.timeout_s = info, top_k, timeout_s
        self.sources = as_list(images)
        self.batch_size = 1 if info.kind == "raw" else batch_size  # raw bytes: one encoded file per request
        self.names = [describe_source(s, i) for i, s in enumerate(self.sources)]
        self._results: list[ImageResult | None] = [None] * len(self.sources)
        self._pending: list[Call] = []

    def first(self) -> list[Call]:
        calls = []
        for start in range(0, len(self.sources), self.batch_size):
            indices, rows = [], []
            for i in range(start, min(start + self.batch_size, len(self.sources))):
                try:
                    rows.append(self.info.prepare(self.sources[i], self.names[i]))
                    indices.append(i)
                except ImageError as exc:
                    self._results[i] = ImageResult(self.names[i], error=str(exc))
            if indices:
                calls.append(Call(indices, np.stack(rows)))
        self._pending = calls
        return calls

    def feed(self, outcomes: Sequence) -> list[Call]:
        following = []
        for call, outcome in zip(self._pending, outcomes, strict=True):
            if isinstance(outcome, np.ndarray):
                for i, row in zip(call.indices, outcome, strict=True):
                    self._results[i] = ImageResult(self.names[i], parse_classification(row))
            elif len(call.indices) > 1 and failure_kind(outcome) is Failure.REJECTED:
                following += [Call([i], call.batch[k : k + 1]) for k, i in enumerate(call.indices)]
            else:
                down = isinstance(outcome, ServerUnavailable)
                for i in call.indices:
                    self._results[i] = ImageResult(
                        self.names[i], error=error_text(outcome, self.timeout_s), unreachable=down
                    )
        self._pending = following
        return following

    @property
    def results(self) -> list[ImageResult]:
        assert not self._pending, "results before every request was answered"
        return list(self._results)
