"""asyncio transport: ``AsyncClassifier`` keeps many requests in flight (tritonclient's grpc.aio; over HTTP
``client.wire.HttpWire``, or tritonclient's http.aio for shared memory), and Triton's dynamic batcher groups
them. Planning, retries and results are ``client/core.py``'s; the control plane (model facts, shared-memory
registration) runs on the sync ``Connection`` in a thread.

    async with await AsyncClassifier.create(url, protocol="grpc", model="resnet20", concurrency=16) as clf:
        await clf.classify(paths, top_k=5)
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from resnet_serve.client.core import (
    Call,
    ImageResult,
    Job,
    Prediction,
    RetryPolicy,
    Security,
    predictions_or_raise,
    protocol_module,
    request_tensors,
    settle,
    transport_errors,
)
from resnet_serve.client.sync import Connection, checked_batch_size, shared_memory_pool
from resnet_serve.client.wire import HttpWire
from resnet_serve.errors import UsageError


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
        wait_for_server_s: float = 60.0,
        batch_size: int | None = None,
        concurrency: int = 16,
        shared_memory: bool = False,
        security: Security | None = None,
    ) -> AsyncClassifier:
        self = object.__new__(cls)
        if not (isinstance(concurrency, int) and concurrency >= 1):  # 0 would wait forever for a free slot
            raise UsageError(f"concurrency must be a whole number of at least 1, got {concurrency!r}")
        self.policy = RetryPolicy(retries, wait_for_server_s)  # checks its values before anything is opened
        self.connection = Connection(url, protocol, timeout_s, security)
        self.protocol, self.url, self.model = protocol, self.connection.url, model
        self.timeout_s = timeout_s
        self.module = protocol_module(protocol, asynchronous=True)
        self.client = self.connection.security.client(self.module, self.url, protocol)
        self.semaphore = asyncio.Semaphore(concurrency)
        self._shm, self._slots = None, asyncio.Queue()
        # HTTP data plane: the lean wire (client/wire.py says what it saves); shared memory needs tritonclient's
        # region parameters
        self.wire = HttpWire(self.url, max_idle=concurrency) if protocol == "http" and not shared_memory else None
        try:
            self.info = await asyncio.to_thread(self.connection.model_info, model)
            self.batch_size = checked_batch_size(batch_size, self.info)
            if shared_memory:
                self._shm = await asyncio.to_thread(
                    shared_memory_pool, self.connection, self.info, self.batch_size, concurrency
                )
                for slot in range(concurrency):
                    self._slots.put_nowait(slot)
        except BaseException:
            await self.close()
            raise
        return self

    async def classify(self, images, top_k: int = 5) -> list[list[Prediction]]:
        return predictions_or_raise(await self.classify_detailed(images, top_k=top_k))

    async def classify_detailed(self, images, top_k: int = 5) -> list[ImageResult]:
        job = Job(self.info, images, batch_size=self.batch_size, top_k=top_k, timeout_s=self.timeout_s)
        calls = job.first()
        while calls:
            calls = job.feed(await asyncio.gather(*(self.send(call, top_k) for call in calls)))
        return job.results

    async def send(self, call: Call, top_k: int):
        attempt, started = 0, time.monotonic()
        while True:
            try:
                async with self.semaphore:
                    outcome = await self.infer(call.batch, top_k)
            except transport_errors() as exc:
                outcome = exc
            delay = self.policy.delay(outcome, attempt, time.monotonic() - started)
            if delay is None:
                return settle(outcome, self.url, self.protocol)
            attempt += 1
            await asyncio.sleep(delay)

    async def infer(self, batch: np.ndarray, top_k: int) -> np.ndarray:
        if self.wire is not None:
            info = self.info
            return await self.wire.infer(
                self.model,
                info.input_name,
                batch,
                info.input_datatype,
                info.output_name,
                class_count=top_k,
                timeout_s=self.timeout_s,
            )
        slot = await self._slots.get() if self._shm is not None else 0
        try:
            inputs, outputs = request_tensors(self.module, self.info, batch, top_k, self._shm, slot)
            if self.protocol == "grpc":
                call = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            else:  # the http.aio client has no per-request deadline
                call = asyncio.wait_for(self.client.infer(self.model, inputs, outputs=outputs), self.timeout_s)
            return (await call).as_numpy(self.info.output_name)
        finally:
            if self._shm is not None:
                self._slots.put_nowait(slot)

    async def close(self) -> None:
        if self._shm is not None:
            await asyncio.to_thread(self._shm.close)
            self._shm = None
        await self.client.close()
        if self.wire is not None:
            await self.wire.close()
        self.connection.close()

    async def __aenter__(self) -> AsyncClassifier:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
