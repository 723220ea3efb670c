"""asyncio variant of the client (``tritonclient.grpc.aio`` / ``tritonclient.http.aio``) for high concurrency:
chunks of images go out as concurrent requests, and Triton's dynamic batcher groups them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from resnet_serve.client.classifier import (
    ClassificationError,
    ImageResult,
    ModelInfo,
    ModelNotFound,
    Prediction,
    ServerUnavailable,
    Source,
    as_list,
    describe_source,
    error_text,
    is_timeout,
    is_transient,
    is_unavailable,
    normalize_url,
    parse_classification,
    protocol_module,
    unreachable_message,
)


class AsyncClassifier:
    """``clf = await AsyncClassifier.create(url, protocol="grpc", model="resnet20", concurrency=16)``"""

    def __init__(self) -> None:
        raise TypeError("use `await AsyncClassifier.create(...)`")

    @classmethod
    async def create(
        cls,
        url: str | None = None,
        protocol: str = "grpc",
        model: str = "resnet20",
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        batch_size: int | None = None,
        concurrency: int = 16,
    ) -> AsyncClassifier:
        self = object.__new__(cls)
        self.protocol, self.model, self.timeout_s, self.retries = protocol, model, timeout_s, retries
        self.module = protocol_module(protocol, asynchronous=True)
        self.url = normalize_url(url, protocol)
        kwargs = {"conn_timeout": timeout_s} if protocol == "http" else {}
        self.client = self.module.InferenceServerClient(self.url, **kwargs)
        self.semaphore = asyncio.Semaphore(concurrency)
        try:
            self.info = await self._model_info()
        except BaseException:
            await self.client.close()
            raise
        self.batch_size = min(batch_size or self.info.max_batch_size, self.info.max_batch_size)
        return self

    async def _call(self, coroutine):
        from tritonclient.utils import InferenceServerException

        try:
            return await coroutine
        except InferenceServerException as exc:
            if is_unavailable(exc):
                raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None
            raise
        except (TimeoutError, OSError, ConnectionError) as exc:
            raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None

    async def _model_info(self) -> ModelInfo:
        json_kw = {"as_json": True} if self.protocol == "grpc" else {}
        if not await self._call(self.client.is_server_live()):
            raise ServerUnavailable(f"the Triton server at {self.url} is not live yet; wait for it to start")
        if not await self._call(self.client.is_model_ready(self.model)):
            raise ModelNotFound(
                f"model {self.model!r} is not served at {self.url}; `python -m client models` lists the served ones"
            )
        metadata = await self._call(self.client.get_model_metadata(self.model, **json_kw))
        config = await self._call(self.client.get_model_config(self.model, **json_kw))
        return ModelInfo.from_server(self.model, metadata, config.get("config", config))

    async def classify(self, images: Sequence[Source] | Source, top_k: int = 5) -> list[list[Prediction]]:
        results = await self.classify_detailed(images, top_k=top_k)
        if not all(r.ok for r in results):
            raise ClassificationError(results)
        return [r.predictions for r in results]

    async def classify_detailed(self, images: Sequence[Source] | Source, top_k: int = 5) -> list[ImageResult]:
        if not 1 <= top_k <= self.info.num_classes:
            raise ValueError(f"top_k must be between 1 and {self.info.num_classes} for {self.model}, got {top_k}")
        sources = as_list(images)
        chunks = [(sources[i : i + self.batch_size], i) for i in range(0, len(sources), self.batch_size)]
        parts = await asyncio.gather(
            *(self._classify_chunk(chunk, start, top_k) for chunk, start in chunks), return_exceptions=True
        )
        results = []
        for (chunk, start), part in zip(chunks, parts, strict=True):
            if isinstance(part, ServerUnavailable):  # keep the other chunks' results, fail this one's images
                part = [ImageResult(describe_source(s, start + i), error=str(part)) for i, s in enumerate(chunk)]
            elif isinstance(part, BaseException):
                raise part
            results += part
        return results

    async def _classify_chunk(self, chunk, start: int, top_k: int) -> list[ImageResult]:
        names = [describe_source(s, start + i) for i, s in enumerate(chunk)]
        try:
            rows = await self._infer(self.info.prepare(chunk, start), top_k)
            return [ImageResult(name, parse_classification(row)) for name, row in zip(names, rows, strict=True)]
        except ServerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - isolate the failing image(s) below
            if len(chunk) == 1 or is_timeout(exc):  # a slow batch is not retried image by image
                return [ImageResult(name, error=error_text(exc, self.timeout_s)) for name in names]
        parts = await asyncio.gather(*(self._classify_chunk([s], start + i, top_k) for i, s in enumerate(chunk)))
        return [result for part in parts for result in part]

    async def _infer(self, batch, top_k: int):
        from tritonclient.utils import InferenceServerException

        m = self.module
        attempt = 0
        while True:
            tensor = m.InferInput(self.info.input_name, list(batch.shape), self.info.input_datatype)
            tensor.set_data_from_numpy(batch)
            output = m.InferRequestedOutput(self.info.output_name, class_count=top_k)
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            try:
                async with self.semaphore:
                    if self.protocol == "http":
                        result = await asyncio.wait_for(
                            self.client.infer(self.model, [tensor], outputs=[output]), self.timeout_s
                        )
                    else:
                        result = await self.client.infer(self.model, [tensor], outputs=[output], **kwargs)
                return result.as_numpy(self.info.output_name)
            except InferenceServerException as exc:
                if attempt >= self.retries or not is_transient(exc):
                    if is_unavailable(exc):
                        raise ServerUnavailable(unreachable_message(self.url, self.protocol, exc)) from None
                    raise
            attempt += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncClassifier:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
