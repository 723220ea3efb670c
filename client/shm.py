"""System shared memory for tensor inputs: the client writes the batch into a region the server maps,
so the tensor bytes do not travel through the gRPC/HTTP request (loopback only: same host)."""

from __future__ import annotations

import os
import uuid

import numpy as np


class SharedMemoryBuffers:
    def __init__(self, module, client, info, max_batch: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self.shm, self.module, self.client, self.info = shm, module, client, info
        itemsize = np.dtype(np.uint8 if info.input_datatype == "UINT8" else np.float32).itemsize
        self.byte_size = max_batch * int(np.prod(info.input_shape)) * itemsize
        self.name = f"resnet-serve-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.key = f"/{self.name}"
        self.handle = shm.create_shared_memory_region(self.name, self.key, self.byte_size)
        client.register_system_shared_memory(self.name, self.key, self.byte_size)

    def input(self, batch: np.ndarray):
        """Write ``batch`` into the region and return an InferInput that points at it."""
        infer_input = self.module.InferInput(self.info.input_name, list(batch.shape), self.info.input_datatype)
        self.shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(batch)])
        infer_input.set_shared_memory(self.name, batch.nbytes)
        return infer_input

    def close(self) -> None:
        try:
            self.client.unregister_system_shared_memory(self.name)
        finally:
            self.shm.destroy_shared_memory_region(self.handle)
