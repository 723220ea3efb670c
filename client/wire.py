"""A lean asyncio HTTP/1.1 data plane for Triton: KServe v2 ``infer`` with the binary-tensor extension over
keep-alive connections, written on asyncio streams.

Why: for a small model served one image per request, the per-request CPU of the client decides the
throughput when client and server share the cores. In the tune runs on a 2-core EPYC this wire spent
~40-70 us of client CPU per request where tritonclient's ``grpc.aio`` spent ~115-195 us
(``benchmarks/reports/tune/resnet20``). It does one thing: send one inference request and read one
response. Everything else (model facts, shared memory, the repository index) stays on tritonclient.

Failures raise what the rest of the client already classifies (``client.core.failure_kind``): a non-200
answer is an ``InferenceServerException`` with the HTTP status and the server's message; a refused,
reset or closed connection (or an answer that is not well-formed HTTP) is a ``ConnectionError``; a deadline
is a ``TimeoutError``. A connection is reused only after a complete, well-formed response, and a request
whose kept connection turns out closed (an idle timeout of the server or a proxy) is sent once more on a
new one.
"""

from __future__ import annotations

import asyncio
import json
import struct
from urllib.parse import quote

import numpy as np
from tritonclient.utils import InferenceServerException

MAX_BODY = 256 * 1024 * 1024  # a response body larger than this is not an answer to a classify request
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64}


def tensor_bytes(batch: np.ndarray, datatype: str) -> bytes:
    """``batch`` in the binary-tensor layout: raw little-endian values, or for BYTES each element's
    4-byte length and its bytes."""
    if datatype == "UINT8" and batch.dtype == np.uint8 and batch.flags.c_contiguous:
        return batch.tobytes()  # one encoded file per request: the common case, no conversion
    if datatype == "BYTES":
        parts = []
        for item in batch.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(batch, dtype=np.dtype(DATATYPES[datatype]).newbyteorder("<")).tobytes()


def tensor_from_bytes(data: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            (size,) = struct.unpack_from("<I", data, offset)
            items.append(data[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return np.array(items, dtype=np.object_).reshape(shape)
    if datatype not in DATATYPES:
        raise InferenceServerException(f"the server answered with datatype {datatype}, which this client does not read")
    return np.frombuffer(data, dtype=np.dtype(DATATYPES[datatype]).newbyteorder("<")).reshape(shape)


class HttpWire:
    """``await HttpWire("127.0.0.1:8000").infer("resnet20", "image", batch, "UINT8", "logits")``

    At most ``max_idle`` connections are kept open between requests; callers bound the requests in flight.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, max_idle: int = 64) -> None:
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {url!r}")
        self.host, self.port = host.strip("[]"), int(port)
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.max_idle = max_idle

    async def infer(
        self,
        model: str,
        input_name: str,
        batch: np.ndarray,
        datatype: str,
        output_name: str,
        *,
        class_count: int = 0,
        timeout_s: float = 30.0,
    ) -> np.ndarray:
        """One request; the output ``output_name`` as numpy (top ``class_count`` "score:index:label" strings
        when ``class_count`` > 0, Triton's classification extension)."""
        body = tensor_bytes(batch, datatype)
        # the JSON header written directly (json.dumps of the nested dicts costs more than the rest of the
        # request); names are JSON-escaped, everything else is numbers and fixed words
        classification = f',"classification":{int(class_count)}' if class_count else ""
        header = (
            f'{{"inputs":[{{"name":{json.dumps(input_name)},"shape":[{",".join(map(str, batch.shape))}],'
            f'"datatype":{json.dumps(datatype)},"parameters":{{"binary_data_size":{len(body)}}}}}],'
            f'"outputs":[{{"name":{json.dumps(output_name)},"parameters":{{"binary_data":true{classification}}}}}]}}'
        ).encode()
        request = (
            f"POST /v2/models/{quote(model, safe='')}/infer HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
            f"Content-Length: {len(header) + len(body)}\r\n\r\n"
        ).encode()
        async with asyncio.timeout(timeout_s):  # no extra task per request, unlike asyncio.wait_for
            status, headers, data = await self._exchange(request + header + body)
        return self._output(status, headers, data, output_name)

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._round_trip(reader, writer, request)
            except ConnectionError:
                pass  # a kept connection the server or a proxy closed while idle: once more on a new one
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._round_trip(reader, writer, request)

    async def _round_trip(self, reader, writer, request: bytes) -> tuple[int, dict[str, str], bytes]:
        reusable = False
        try:
            writer.write(request)
            status, headers, data = await self._read_response(reader)
            reusable = headers.get("connection", "").lower() != "close"
            return status, headers, data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise ConnectionError(f"the server closed the connection mid-response ({type(exc).__name__})") from None
        finally:
            if reusable and len(self.idle) < self.max_idle:
                self.idle.append((reader, writer))
            else:
                writer.close()

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")  # past the stream's 64 KiB limit: LimitOverrunError
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers from Triton or nginx
                    break
                total += size
                if total > MAX_BODY:
                    raise ConnectionError(f"the server's chunked response passed {MAX_BODY} bytes")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(chunks)
        else:
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY:
                raise ConnectionError(f"the server announced a {length}-byte response")
            data = await reader.readexactly(length)
        return int(parts[1]), headers, data

    @staticmethod
    def _output(status: int, headers: dict[str, str], data: bytes, output_name: str) -> np.ndarray:
        json_size = int(headers.get("inference-header-content-length", len(data)))
        try:
            reply = json.loads(data[:json_size] or b"{}")
        except ValueError:
            reply = {"error": data[:200].decode("utf-8", "replace")}
        if status != 200:
            message = reply.get("error") if isinstance(reply, dict) else None
            raise InferenceServerException(message or f"HTTP {status}", status=str(status))
        offset = json_size
        for out in reply.get("outputs", []):
            size = out.get("parameters", {}).get("binary_data_size")
            if out["name"] == output_name:
                if size is None:  # answered as JSON numbers, not binary
                    return np.array(out["data"], dtype=np.object_ if out["datatype"] == "BYTES" else None).reshape(
                        out["shape"]
                    )
                return tensor_from_bytes(data[offset : offset + size], out["datatype"], out["shape"])
            offset += size or 0
        raise InferenceServerException(f"the server's answer has no output {output_name!r}", status="500")

    async def close(self) -> None:
        while self.idle:
            _, writer = self.idle.pop()
            writer.close()
