"""The bad-input corpus: files and requests a careless or hostile client sends, each with the words the
server's refusal must contain. Used by test_bad_inputs.py over gRPC and raw HTTP."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, *, bit_depth: int = 8, color: int = 0, rows: bytes | None = None) -> bytes:
    """A PNG built by hand: any declared size, grey rows of zeros (compressed as they are)."""
    if rows is None:
        row = b"\x00" + b"\x00" * width
        compressor = zlib.compressobj(9)
        rows = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(side: int = 48) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def float_tiff(value: float) -> bytes:
    pixels = np.full((16, 16), 0.5, np.float32)
    pixels[3, 5] = value
    return encoded(Image.fromarray(pixels, mode="F"), "TIFF")


def bmp_declaring(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info


def corrupt_crc(data: bytes) -> bytes:
    broken = bytearray(data)
    broken[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(broken)


def jpeg() -> bytes:
    return encoded(photo(), "JPEG", quality=90)


def png() -> bytes:
    return encoded(photo(), "PNG")


@dataclass(frozen=True)
class BadImage:
    name: str
    data: bytes
    says: str  # the refusal names this


def bad_images() -> list[BadImage]:
    """Encoded files the preprocess must refuse, each alone, with its reason."""
    j, p = jpeg(), png()
    rng = random.Random(3)
    cases = [
        ("empty", b"", "empty input"),
        ("truncated jpeg", j[: len(j) // 2], "broken image data"),
        ("jpeg header only", j[:20], "not a decodable image"),
        ("jpeg garbage after SOI", j[:2] + bytes(rng.randrange(256) for _ in range(2000)), "not a decodable image"),
        ("text file", b"just some text, not an image\n" * 4, "not a decodable image"),
        ("random bytes", bytes(rng.randrange(256) for _ in range(4096)), "not a decodable image"),
        ("base64 of a jpeg", base64.b64encode(j), "not a decodable image"),
        ("data url", b"data:image/png;base64," + base64.b64encode(p), "not a decodable image"),
        ("gzip of a png", gzip.compress(p), "not a decodable image"),
        ("zip archive", b"PK\x03\x04" + b"\0" * 100, "not a decodable image"),
        ("pdf", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "not a decodable image"),
        ("html", b"<!doctype html><html><body>cat</body></html>", "not a decodable image"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', "not a decodable image"),
        ("png signature only", p[:8], "not a decodable image"),
        ("png bad crc", corrupt_crc(p), "not a decodable image"),
        ("png without pixel data", p[:33] + chunk(b"IEND", b""), "broken image data"),
        ("png invalid bit depth", png_raw(32, 32, bit_depth=7), "not a decodable image"),
        ("png declaring 0x0", png_raw(0, 0, rows=zlib.compress(b"")), "not a decodable image"),
        ("1x1 image", encoded(Image.new("RGB", (1, 1)), "PNG"), "is 1x1 pixels"),
        ("7 pixels wide", encoded(Image.new("RGB", (7, 100)), "PNG"), "at least 8 pixels"),
        ("16-bit 4x4", encoded(Image.new("I;16", (4, 4)), "PNG"), "is 4x4 pixels"),
        ("decompression bomb", png_raw(20000, 20000, rows=zlib.compress(b"\0" * 64)), "decompression bomb"),
        ("bmp declaring 100000x100000", bmp_declaring(100_000, 100_000), "decompression bomb"),
        ("8 x 6,000,000 png", png_raw(8, 6_000_000), "more than 20:1"),
        ("8 x 1,000,000 png", png_raw(8, 1_000_000), "more than 20:1"),
        ("1000 x 40 png", encoded(Image.new("RGB", (1000, 40)), "PNG"), "more than 20:1"),
        ("float tiff with NaN", float_tiff(float("nan")), "NaN or infinite"),
        ("float tiff with Inf", float_tiff(float("inf")), "NaN or infinite"),
        ("truncated gif", encoded(photo(), "GIF")[:40], "not a decodable image"),
        ("truncated webp", encoded(photo(), "WEBP")[:60], "broken image data"),
        ("truncated tiff", encoded(photo(), "TIFF")[:100], "not a decodable image"),
        ("truncated bmp", encoded(photo(), "BMP")[:100], "broken image data"),
    ]
    return [BadImage(*case) for case in cases]


# ---- raw HTTP requests (Triton's KServe v2 JSON, with and without the binary data extension) ------------


def bytes_request(images: list[bytes], *, input_name: str = "image", shape: list[int] | None = None):
    """(headers, body) of a binary-extension request carrying encoded images as one BYTES tensor."""
    payload = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": shape or [len(images), 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(payload)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return headers, header + payload


def json_request(inputs: list, outputs: list | None = None, **extra) -> bytes:
    body = {"inputs": inputs, **extra}
    if outputs is not None:
        body["outputs"] = outputs
    return json.dumps(body).encode()


def uint8_input(shape: list[int], name: str = "input", datatype: str = "UINT8", data=None) -> dict:
    count = int(np.prod(shape)) if all(d >= 0 for d in shape) else 0
    return {"name": name, "shape": shape, "datatype": datatype, "data": data if data is not None else [0] * count}


def binary_request(shape: list[int], datatype: str, payload: bytes, *, size: int | None = None):
    """(headers, body) of a binary-extension request: one tensor, ``size`` bytes declared (default: all)."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(payload) if size is None else size},
                }
            ]
        }
    ).encode()
    return (("Inference-Header-Content-Length", str(len(header))),), header + payload


@dataclass(frozen=True)
class BadHttp:
    name: str
    model: str
    body: bytes
    says: str
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "POST"
    status: int = 400  # what Triton answers: 400/404/405, or 500 where its own JSON parser refuses the body
    float_input: bool = False  # for a classifier that takes float32 [3, 32, 32] (the GPU profile's input)


def bad_http_requests(classifier: str) -> list[BadHttp]:
    """Malformed KServe v2 requests to Triton's HTTP endpoint (the classifier takes uint8 [32,32,3], or
    float32 [3,32,32] in the cases marked float_input)."""
    good = uint8_input([1, 32, 32, 3])
    nan = [0.0] * (3 * 32 * 32 - 1)
    parse_errors = [  # Triton 2.51's HTTP frontend answers these with 500 and the field it could not parse
        ("invalid json", b'{"inputs": [', "failed to parse the request JSON"),
        ("json array body", b"[1, 2, 3]", "non-existing object member 'inputs'"),
        ("inputs not a list", b'{"inputs": {"name": "input"}}', "Unable to parse 'inputs'"),
        ("input without shape", json_request([{"name": "input", "datatype": "UINT8", "data": [1]}]),
         "Unable to parse 'shape'"),
        ("negative dimension", json_request([uint8_input([1, -32, 32, 3])]), "Unable to parse 'shape'"),
        ("data shorter than shape", json_request([uint8_input([1, 32, 32, 3], data=[0] * 100)]),
         "Shape does not match"),
        ("strings for uint8 data", json_request([uint8_input([1, 2, 2, 3], data=["a"] * 12)]),
         "Unable to parse 'data'"),
        ("output parameters of the wrong type",
         json_request([good], [{"name": "logits", "parameters": {"binary_data": "yes"}}]),
         "Unable to parse 'binary_data'"),
        ("id of the wrong type", json_request([good], id=17), "Unable to parse 'id'"),
        ("parameters not an object", json_request([good], parameters=[1, 2]), "failed to get request params"),
        ("outputs not a list", json_request([good], {"name": "logits"}), "Unable to parse 'outputs'"),
    ]  # fmt: skip
    cases = [
        ("unknown datatype", classifier, json_request([uint8_input([1, 32, 32, 3], datatype="FP99")]),
         "invalid datatype for input"),
        ("empty body", classifier, b"", "Expected 3072, got 0"),
        ("nested json (depth 1000)", classifier, b'{"inputs":' + b"[" * 1000 + b"]" * 1000 + b"}",
         "no field is set"),
        ("shape overflow", classifier, json_request([uint8_input([1, 2**40, 2**40, 3], data=[0])]),
         "unexpected shape"),
        ("unknown output", classifier, json_request([good], [{"name": "probabilities"}]), "probabilities"),
        ("unknown input name", classifier, json_request([{**good, "name": "pixels"}]),
         "unexpected inference input 'pixels'"),
        ("no inputs", classifier, json_request([]), "expected 1 inputs but got 0"),
        ("an extra input", classifier, json_request([good, {**good, "name": "extra"}]),
         "expected 1 inputs but got 2"),
        ("fp32 to a uint8 model", classifier, json_request([uint8_input([1, 32, 32, 3], datatype="FP32")]),
         "data-type is 'FP32'"),
        ("wrong image size", classifier, json_request([uint8_input([1, 28, 28, 3])]), "unexpected shape"),
        ("rank-1 tensor", classifier, json_request([uint8_input([3072])]), "batch-size must be <="),
        ("unknown model", "resnet21", json_request([good]), "unknown model"),
        ("unknown version", f"{classifier}/versions/7", json_request([good]), "version 7 is not found"),
    ]  # fmt: skip
    out = [BadHttp(name, classifier, body, says, status=500) for name, body, says in parse_errors]
    out += [BadHttp(*case) for case in cases]
    headers, body = binary_request([257, 32, 32, 3], "UINT8", b"\0" * (257 * 3072))
    out.append(BadHttp("batch over the maximum", classifier, body, "batch-size must be <=", headers))
    headers, body = binary_request([1, 32, 32, 3], "UINT8", b"\0" * 100, size=3072)
    out.append(BadHttp("binary size past the body", classifier, body, "unexpected", headers))
    headers, body = binary_request([1, 32, 32, 3], "UINT8", b"\0" * 3000)
    out.append(BadHttp("binary data shorter than the shape", classifier, body, "byte size mismatch", headers))
    huge = json_request([{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": nan + [1e39]}])
    out.append(BadHttp("a float overflowing to Inf", classifier, huge, "NaN or infinite", float_input=True))
    headers, body = binary_request([1, 3, 32, 32], "FP32", np.full((1, 3, 32, 32), np.nan, np.float32).tobytes())
    out.append(BadHttp("NaN pixels (binary)", classifier, body, "NaN or infinite", headers, float_input=True))
    out.append(
        BadHttp(
            "inference header longer than the body",
            classifier,
            json_request([good]),
            "inference header size should be in range",
            (("Inference-Header-Content-Length", "999999"),),
        )
    )
    out.append(BadHttp("GET on the infer path", classifier, b"", "Method Not Allowed", method="GET", status=405))
    return out
