"""Synchronous transport: ``Classifier`` over tritonclient's gRPC or HTTP client.

    from resnet_serve.client import Classifier
    with Classifier("localhost:8001", protocol="grpc", model="resnet20") as clf:
        clf.classify(["cat.jpg", png_bytes, pil_image, uint8_array], top_k=5)  # [[Prediction, ...], ...]

Planning, retries and results are ``client/core.py``'s; this module only sends requests.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from resnet_serve import settings
from resnet_serve.client.core import (
    Call,
    Failure,
    ImageResult,
    Job,
    KeyRequired,
    ModelInfo,
    ModelNotFound,
    Prediction,
    RetryPolicy,
    Security,
    ServerUnavailable,
    failure_kind,
    predictions_or_raise,
    protocol_module,
    request_tensors,
    settle,
    transport_errors,
    unreachable_message,
)
from resnet_serve.errors import UsageError


class Connection:
    """The control plane (health, metadata, configs, shared memory) over the sync client: an unreachable
    server raises ServerUnavailable, a model that is not served ModelNotFound."""

    def __init__(self, url: str | None, protocol: str, timeout_s: float, security: Security | None = None) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise UsageError(f"timeout_s must be a finite number of seconds above 0, got {timeout_s!r}")
        self.protocol = protocol
        self.module = protocol_module(protocol)
        self.url = settings.normalize_url(url, protocol)
        self.security = security or Security()
        self.client = self.security.client(self.module, self.url, protocol, timeout_s)
        self.json = {"as_json": True} if protocol == "grpc" else {}
        self.headers = self.security.header_kwargs(protocol)

    def call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except transport_errors() as exc:
            kind = failure_kind(exc)
            if kind is Failure.UNAVAILABLE:
                raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None
            if kind is Failure.FORBIDDEN:
                raise KeyRequired(
                    f"the server at {self.url} keeps this API behind its key "
                    f"({'a key was sent but not accepted' if self.security.api_key else 'no key was sent'}); "
                    "pass --api-key-file with the server's key file"
                ) from None
            raise

    def served_models(self) -> list[dict]:
        """Every model in the server's repository with its state (READY, UNAVAILABLE, ...)."""
        index = self.call(self.client.get_model_repository_index, **self.json, **self.headers)
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


def checked_batch_size(batch_size: int | None, info: ModelInfo) -> int:
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    return min(batch_size or info.max_batch_size, info.max_batch_size)


def shared_memory_pool(connection: Connection, info: ModelInfo, batch_size: int, slots: int):
    if info.kind != "classifier":
        raise UsageError(
            "shared memory carries tensors: use it with a *_classifier model, "
            f"not {info.name!r} (which takes encoded images)"
        )
    from resnet_serve.client.shm import SharedMemoryPool

    headers = connection.security.headers(connection.protocol) or None
    return connection.call(SharedMemoryPool, connection.client, info, batch_size, slots, headers)


class Classifier:
    """Synchronous client; ``AsyncClassifier`` keeps many requests in flight."""

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        model: str = "resnet20",
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        wait_for_server_s: float = 60.0,
        batch_size: int | None = None,
        shared_memory: bool = False,
        security: Security | None = None,
    ) -> None:
        self.policy = RetryPolicy(retries, wait_for_server_s)  # checks its values before anything is opened
        self.connection = Connection(url, protocol, timeout_s, security)
        self.protocol, self.url, self.module = protocol, self.connection.url, self.connection.module
        self.client = self.connection.client
        self.model, self.timeout_s = model, timeout_s
        self._shm = None
        try:
            self.info = self.connection.model_info(model)
            self.batch_size = checked_batch_size(batch_size, self.info)
            if shared_memory:
                self._shm = shared_memory_pool(self.connection, self.info, self.batch_size, slots=1)
        except BaseException:
            self.connection.close()
            raise

    def served_models(self) -> list[dict]:
        return self.connection.served_models()

    def classify(self, images, top_k: int = 5) -> list[list[Prediction]]:
        """Top-k predictions per image; raises ClassificationError (with every result) if any image failed."""
        return predictions_or_raise(self.classify_detailed(images, top_k=top_k))

    def classify_detailed(self, images, top_k: int = 5) -> list[ImageResult]:
        """One ImageResult per image, in order; failures are reported per image, never raised."""
        job = Job(self.info, images, batch_size=self.batch_size, top_k=top_k, timeout_s=self.timeout_s)
        calls = job.first()
        while calls:
            outcomes, down = [], None
            for call in calls:  # once the server is unreachable, the remaining requests fail without a try
                outcome = down or self.send(call, top_k)
                down = outcome if isinstance(outcome, ServerUnavailable) else down
                outcomes.append(outcome)
            calls = job.feed(outcomes)
        return job.results

    def send(self, call: Call, top_k: int):
        """The request's rows, or its final error after the retry policy's retries."""
        started = time.monotonic()
        for attempt in itertools.count():
            try:
                outcome = self.infer(call.batch, top_k)
            except transport_errors() as exc:
                outcome = exc
            delay = self.policy.delay(outcome, attempt, time.monotonic() - started)
            if delay is None:
                return settle(outcome, self.url, self.protocol)
            time.sleep(delay)

    def infer(self, batch: np.ndarray, top_k: int) -> np.ndarray:
        """One request, no retries: top-k "score:index:label" strings per image."""
        inputs, outputs = request_tensors(self.module, self.info, batch, top_k, self._shm)
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        return self.client.infer(self.model, inputs, outputs=outputs, **kwargs).as_numpy(self.info.output_name)

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self.connection.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
