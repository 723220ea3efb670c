"""System shared memory for tensor inputs: the client writes a batch into a region the server maps, so
the tensor bytes do not travel through the gRPC/HTTP request (loopback only: same host).

One region holds ``slots`` equal parts, one per request in flight (the sync client uses one, the
asyncio client one per concurrent request). The region is registered through the sync control-plane
client; registration is server-wide, so the asyncio client's requests use it as well.
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
from tritonclient.utils import InferenceServerException

# Triton lets go of a region a moment after it sent the response that read it, so an unregister right
# after the last answer can be refused as "currently in use"; close() asks again for up to this long
UNREGISTER_WAIT_S = 2.0


class SharedMemoryPool:
    def __init__(self, client, info, max_batch: int, slots: int = 1, headers: dict | None = None) -> None:
        import tritonclient.utils.shared_memory as shm

        self.shm, self.client, self.info, self.headers = shm, client, info, headers
        itemsize = np.dtype(np.uint8 if info.input_datatype == "UINT8" else np.float32).itemsize
        self.slot_bytes = max_batch * int(np.prod(info.input_shape)) * itemsize
        self.slots = slots
        self.name = f"resnet-serve-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.key = f"/{self.name}"
        self.handle = shm.create_shared_memory_region(self.name, self.key, self.slot_bytes * slots)
        try:
            client.register_system_shared_memory(self.name, self.key, self.slot_bytes * slots, headers=headers)
        except BaseException:
            shm.destroy_shared_memory_region(self.handle)
            raise

    def input(self, module, batch: np.ndarray, slot: int = 0):
        """Write ``batch`` into ``slot`` and return an InferInput (of ``module``) that points at it."""
        offset = slot * self.slot_bytes
        infer_input = module.InferInput(self.info.input_name, list(batch.shape), self.info.input_datatype)
        self.shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(batch)], offset=offset)
        infer_input.set_shared_memory(self.name, batch.nbytes, offset=offset)
        return infer_input

    def close(self, wait_s: float = UNREGISTER_WAIT_S) -> None:
        """Unregister the region on the server (asking again while the server still holds it from the last
        request, up to ``wait_s``) and free it here, whatever the server answered."""
        try:
            deadline, pause = time.monotonic() + wait_s, 0.005
            while True:
                try:
                    self.client.unregister_system_shared_memory(self.name, headers=self.headers)
                    return
                except InferenceServerException as exc:
                    if "in use" not in str(exc) or time.monotonic() + pause > deadline:
                        raise
                time.sleep(pause)
                pause = min(2 * pause, 0.1)
        finally:
            self.shm.destroy_shared_memory_region(self.handle)
