"""The client library and CLI against the real embedded server."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cifar_test_files
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from resnet_serve.client import AsyncClassifier, ClassificationError, Classifier, ModelNotFound, ServerUnavailable
from resnet_serve.client import __main__ as cli
from resnet_serve.client.core import Failure, failure_kind
from resnet_serve.client.wire import HttpWire
from resnet_serve.engines import load_engine
from resnet_serve.errors import UsageError
from resnet_serve.resnets.spec import CIFAR10, preprocess

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def offline_fp32(default_repository):
    return load_engine(default_repository / "build" / "resnet20" / "onnxruntime-fp32")


def offline_logits(engine, files) -> np.ndarray:
    return engine.infer(np.stack([preprocess(f.read_bytes(), CIFAR10) for f in files]))


def test_grpc_and_http_give_identical_predictions_in_the_right_order(triton, cifar_jpg, offline_fp32):
    files = cifar_test_files(cifar_jpg, 3)
    with (
        Classifier(triton.grpc_url, "grpc", "resnet20_onnxruntime_fp32") as grpc_clf,
        Classifier(triton.http_url, "http", "resnet20_onnxruntime_fp32") as http_clf,
    ):
        by_grpc = grpc_clf.classify(files, top_k=5)
        by_http = http_clf.classify(files, top_k=5)
    assert by_grpc == by_http
    logits = offline_logits(offline_fp32, files)
    labels = CIFAR10.default_labels()
    for predictions, row in zip(by_grpc, logits, strict=True):
        assert [p.index for p in predictions] == list(np.argsort(-row)[:5])
        assert [p.label for p in predictions] == [labels[p.index] for p in predictions]
        assert [p.score for p in predictions] == sorted((p.score for p in predictions), reverse=True)
        assert predictions[0].score == pytest.approx(float(row.max()), abs=1e-4)


def test_every_input_kind_and_the_tensor_path_agree(triton, cifar_jpg):
    files = cifar_test_files(cifar_jpg, 1)
    pil_images = [Image.open(f).convert("RGB") for f in files]
    arrays = [np.asarray(img) for img in pil_images]
    raw = [f.read_bytes() for f in files]
    with Classifier(triton.grpc_url, model="resnet20_onnxruntime_fp32") as ensemble:
        expected = [p[0] for p in ensemble.classify(files, top_k=1)]
        for images in (raw, pil_images, arrays, [str(f) for f in files]):
            assert [p[0].index for p in ensemble.classify(images, top_k=1)] == [e.index for e in expected]
    for shared_memory in (False, True):
        with Classifier(
            triton.grpc_url, model="resnet20_onnxruntime_fp32_classifier", shared_memory=shared_memory
        ) as tensors:
            assert tensors.info.kind == "classifier" and tensors.info.input_shape == (32, 32, 3)
            got = [p[0] for p in tensors.classify(files, top_k=1)]
        assert [g.index for g in got] == [e.index for e in expected]
        assert [g.score for g in got] == pytest.approx([e.score for e in expected], abs=1e-4)


def test_closing_shared_memory_asks_again_while_the_server_still_holds_the_region():
    # Triton lets go of a region a moment after the response that read it was sent, so an unregister right
    # after the last answer was once refused ("currently in use") and close() failed; a stand-in control
    # plane refuses as Triton does, the region itself is a real POSIX one
    from types import SimpleNamespace

    from tritonclient.utils import InferenceServerException

    from resnet_serve.client.shm import SharedMemoryPool

    class ControlPlane:
        def __init__(self, refusals: int, message: str) -> None:
            self.refusals, self.message, self.calls = refusals, message, 0

        def register_system_shared_memory(self, name, key, size, headers=None) -> None:
            pass

        def unregister_system_shared_memory(self, name, headers=None) -> None:
            self.calls += 1
            if self.calls <= self.refusals:
                raise InferenceServerException(self.message.format(name=name))

    info = SimpleNamespace(input_datatype="UINT8", input_shape=(32, 32, 3))
    in_use = "Cannot unregister shared memory region '{name}', it is currently in use."

    def pool(plane: ControlPlane) -> tuple[SharedMemoryPool, Path]:
        p = SharedMemoryPool(plane, info, max_batch=4)
        region = Path("/dev/shm") / p.name
        assert region.exists()
        return p, region

    plane = ControlPlane(3, in_use)
    p, region = pool(plane)
    p.close()  # refused three times, then unregistered
    assert plane.calls == 4 and not region.exists()

    plane = ControlPlane(10**6, in_use)  # held for good: the refusal comes out after the wait, region freed here
    p, region = pool(plane)
    start = time.monotonic()
    with pytest.raises(InferenceServerException, match="currently in use"):
        p.close(wait_s=0.2)
    assert 0.1 <= time.monotonic() - start < 2 and plane.calls > 2 and not region.exists()

    plane = ControlPlane(1, "Unable to find system shared memory region: '{name}'")  # any other answer: at once
    p, region = pool(plane)
    with pytest.raises(InferenceServerException, match="Unable to find"):
        p.close()
    assert plane.calls == 1 and not region.exists()


def test_batches_follow_the_servers_max_batch_size(triton, cifar_jpg):
    files = cifar_test_files(cifar_jpg, 30)  # 300 images, max batch 256 -> 2 requests
    with Classifier(triton.http_url, "http", model="resnet20_onnxruntime_int8") as clf:
        assert clf.batch_size == 256  # read from the server's config
        calls = []
        real = clf.infer
        clf.infer = lambda batch, top_k: calls.append(len(batch)) or real(batch, top_k)
        results = clf.classify(files, top_k=1)
    assert len(results) == 300 and calls == [256, 44]
    with Classifier(triton.grpc_url, model="resnet20_onnxruntime_int8", batch_size=1000) as clf:
        assert clf.batch_size == 256  # never above the server's limit


def test_a_bad_image_in_a_batch_fails_alone(triton, cifar_jpg):
    files = cifar_test_files(cifar_jpg, 2)
    truncated = files[0].read_bytes()[:100]
    images = [*files[:5], truncated, *files[5:], b"", "/nonexistent/cat.jpg"]
    with Classifier(triton.grpc_url, model="resnet20") as clf:
        results = clf.classify_detailed(images, top_k=3)
        assert [r.ok for r in results] == [True] * 5 + [False] + [True] * (len(files) - 5) + [False, False]
        assert "broken image data" in results[5].error
        assert "empty input" in results[-2].error and "no such file" in results[-1].error
        good = clf.classify(files, top_k=3)
        assert [r.predictions for r in results if r.ok] == good
        with pytest.raises(ClassificationError) as err:
            clf.classify(images)
        assert len(err.value.results) == len(images)  # nothing already accepted is lost


def test_async_classifier_matches_sync(triton, cifar_jpg):
    files = cifar_test_files(cifar_jpg, 8)

    async def run(protocol, url):
        async with await AsyncClassifier.create(url, protocol, model="resnet20", batch_size=4, concurrency=8) as clf:
            return await clf.classify(files, top_k=2)

    with Classifier(triton.grpc_url, model="resnet20") as clf:
        expected = clf.classify(files, top_k=2)
    assert asyncio.run(run("grpc", triton.grpc_url)) == expected
    assert asyncio.run(run("http", triton.http_url)) == expected


def test_the_http_wire_carries_every_input_form_and_the_servers_errors(triton, cifar_jpg):
    """AsyncClassifier over HTTP sends through client.wire: BYTES batches (the ensemble), one raw JPEG per
    request (the one-step model) and tensors give the gRPC answers; errors keep their status and message."""
    files = cifar_test_files(cifar_jpg, 3)
    truncated = files[0].read_bytes()[:100]

    async def run(model):
        async with await AsyncClassifier.create(triton.http_url, "http", model=model, batch_size=4) as clf:
            assert clf.wire is not None
            return await clf.classify_detailed([*files, truncated], top_k=3)

    for model in ("resnet20_onnxruntime_int8", "resnet20", "resnet20_onnxruntime_fp32_classifier"):
        with Classifier(triton.grpc_url, model=model) as clf:
            expected = clf.classify(files, top_k=3)
        results = asyncio.run(run(model))
        assert [r.predictions for r in results[:-1]] == expected, model
        assert not results[-1].ok and "broken image data" in results[-1].error  # the bad one fails alone

    async def direct():
        wire = HttpWire(triton.http_url)
        try:
            batch = np.array([[files[0].read_bytes()]], dtype=np.object_)
            logits = await wire.infer("resnet20_onnxruntime_int8", "image", batch, "BYTES", "logits")
            with pytest.raises(Exception) as unknown:
                await wire.infer("resnet21", "image", batch, "BYTES", "logits")
            return logits, unknown.value, len(wire.idle)
        finally:
            await wire.close()

    logits, unknown, idle = asyncio.run(direct())
    assert logits.shape == (1, 10) and logits.dtype == np.float32
    assert "resnet21" in str(unknown) and failure_kind(unknown) is Failure.REJECTED
    assert idle == 1  # the connection is kept after a complete answer, error answers included

    async def refused():
        await HttpWire("127.0.0.1:1").infer("resnet20", "image", np.zeros((1, 4), np.uint8), "UINT8", "logits")

    with pytest.raises(OSError) as down:
        asyncio.run(refused())
    assert failure_kind(down.value) is Failure.UNAVAILABLE  # waited for and retried like any transport's


def test_the_http_wire_reads_chunked_answers_and_refuses_a_cut_one():
    """Framing the wire must survive behind a proxy: chunked bodies, a kept connection closed while idle,
    and a connection closed mid-body."""
    logits = np.arange(10, dtype=np.float32)[None, :]
    header = json.dumps(
        {"outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}]}
    ).encode()
    body = header + logits.tobytes()

    async def serve(reader, writer, cut: bool):
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: {len(header)}\r\n"
        if cut:
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:50])
        else:
            chunks = [body[:30], body[30:]]
            writer.write(
                f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
                + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
                + b"0\r\n\r\n"
            )
        await writer.drain()
        writer.close()

    async def main():
        answers = []
        for cut in (False, True):
            server = await asyncio.start_server(lambda r, w, cut=cut: serve(r, w, cut), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                wire = HttpWire(f"127.0.0.1:{port}")
                try:
                    answers.append(await wire.infer("m", "image", np.zeros((1, 4), np.uint8), "UINT8", "logits"))
                    # the server closed the kept connection after answering: sent again on a new one
                    answers.append(await wire.infer("m", "image", np.zeros((1, 4), np.uint8), "UINT8", "logits"))
                except Exception as exc:  # noqa: BLE001 - the test inspects it
                    answers.append(exc)
                await wire.close()
            finally:
                server.close()
                await server.wait_closed()
        return answers

    chunked, again, cut = asyncio.run(main())
    assert np.array_equal(chunked, logits) and np.array_equal(again, logits)
    assert isinstance(cut, ConnectionError) and "mid-response" in str(cut)
    assert failure_kind(cut) is Failure.UNAVAILABLE


def test_client_errors_are_specific(triton):
    with pytest.raises(ModelNotFound, match="'resnet21' is not served .* available: .*resnet20"):
        Classifier(triton.grpc_url, model="resnet21")
    with pytest.raises(ServerUnavailable, match="start it with `python -m server`"):
        Classifier("127.0.0.1:1", model="resnet20")
    with Classifier(triton.grpc_url, model="resnet20") as clf, pytest.raises(UsageError, match="top_k"):
        clf.classify([b"x"], top_k=11)
    # before: "top_k must be between 1 and 3 for preprocess_cifar10" (its output's last dimension, 3 channels)
    for url, protocol in ((triton.grpc_url, "grpc"), (triton.http_url, "http")):
        with pytest.raises(UsageError, match=r"'preprocess_cifar10' is not a classifier: its output .* \[32, 32, 3\]"):
            Classifier(url, protocol, model="preprocess_cifar10")


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_on_100_test_jpegs_matches_offline_evaluation(triton, cifar_jpg, offline_fp32, capsys):
    files = cifar_test_files(cifar_jpg, 10)
    pattern = str(cifar_jpg / "test" / "*" / "000[0-9].jpg")  # a glob: 10 per class = the same 100 files
    code, out, err = run_cli(
        [
            "classify",
            pattern,
            "--url",
            triton.grpc_url,
            "--model",
            "resnet20_onnxruntime_fp32",
            "--json",
            "--top-k",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == [str(f) for f in files]
    served = [r["predictions"][0]["index"] for r in records]
    assert served == list(offline_logits(offline_fp32, files).argmax(1))


def test_cli_directories_table_and_exit_codes(triton, cifar_jpg, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for f in cifar_test_files(cifar_jpg, 1)[:3]:
        (folder / f"{f.parent.name}.jpg").write_bytes(f.read_bytes())
    code, out, _ = run_cli(["classify", str(folder), "--url", triton.http_url, "--protocol", "http"], capsys)
    assert code == 0 and len(out.splitlines()) == 3 and "airplane.jpg" in out
    (folder / "notes.jpg").write_text("not an image")
    code, out, err = run_cli(["classify", str(folder), "--url", triton.grpc_url], capsys)
    assert code == 1 and "notes.jpg" in out and "not a decodable image" in out and "1 of 4 images failed" in err
    code, _, err = run_cli(["classify", str(folder), "--url", "127.0.0.1:1"], capsys)
    assert code == 2 and "cannot reach the Triton server" in err and "python -m server" in err
    code, _, err = run_cli(["classify", str(folder), "--url", triton.grpc_url, "--model", "resnet21"], capsys)
    assert code == 2 and "'resnet21' is not served" in err


@pytest.fixture
def slow_repository(small_repository) -> Path:
    """The small repository with a 3 s batching window on the classifier: Triton holds a lone request
    until the window closes, so a request takes at least 3 s however fast this machine is."""
    path = small_repository / "resnet20_onnxruntime_fp32_classifier" / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    config.dynamic_batching.max_queue_delay_microseconds = 3_000_000
    config.dynamic_batching.preferred_batch_size[:] = [config.max_batch_size]
    path.write_text(text_format.MessageToString(config))
    return small_repository


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_cli_timeout(slow_repository, cifar_jpg, capsys, protocol):
    from resnet_serve.server import running

    files = [str(f) for f in cifar_test_files(cifar_jpg, 1)[:2]]
    with running(slow_repository, http_port=0, grpc_port=0, metrics_port=0) as server:
        url = server.grpc_url if protocol == "grpc" else server.http_url
        start = time.perf_counter()
        code, out, err = run_cli(
            ["classify", *files, "--url", url, "--protocol", protocol, "--model", "resnet20_onnxruntime_fp32"]
            + ["--timeout", "0.5", "--batch-size", "1"],
            capsys,
        )
        seconds = time.perf_counter() - start
    assert code == 1 and out.count("timed out after 0.5 s") == 2, (out, err)
    assert seconds < 2 * 3.0  # each timed-out request was given up after 0.5 s, not retried per image


def test_cli_models_lists_readiness(triton, capsys):
    code, out, _ = run_cli(["models", "--url", triton.grpc_url, "--json"], capsys)
    models = {m["name"]: m for m in json.loads(out)}
    assert code == 0 and models["resnet20"]["state"] == "READY" and "preprocess_imagenet" in models
    code, _, err = run_cli(["models", "--url", "127.0.0.1:1"], capsys)
    assert code == 2 and "cannot reach" in err


def test_png_and_rgba_inputs(triton, cifar_jpg):
    image = Image.open(cifar_test_files(cifar_jpg, 1)[0]).convert("RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with Classifier(triton.grpc_url, model="resnet20") as clf:
        assert clf.classify([buffer.getvalue(), image], top_k=1)[0] == clf.classify([image], top_k=1)[0]


def test_server_going_away_mid_run_keeps_the_results_so_far(small_repository, cifar_jpg):
    from resnet_serve.server import running

    files = cifar_test_files(cifar_jpg, 2)[:12]
    with running(small_repository, http_port=0, grpc_port=0, metrics_port=0) as server:
        clf = Classifier(
            server.grpc_url, model="resnet20_onnxruntime_fp32", batch_size=4, retries=1, wait_for_server_s=1
        )
        real, calls = clf.send, []

        def send_then_stop(call, top_k):
            outcome = real(call, top_k)
            calls.append(call.indices)
            if len(calls) == 1:
                server.stop()  # the server goes away after the first request
            return outcome

        clf.send = send_then_stop
        results = clf.classify_detailed(files, top_k=1)
    assert [r.ok for r in results] == [True] * 4 + [False] * 8
    assert all("cannot reach the Triton server" in r.error for r in results[4:])


def test_a_client_stopped_by_sigterm_says_how_far_it_got_and_resume_finishes(triton, cifar_jpg, tmp_path):
    files = [str(f) for f in cifar_test_files(cifar_jpg, per_class=100)]
    out = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "resnet_serve.client", "classify", *files, "--url", triton.grpc_url,
               "--model", "resnet20_onnxruntime_fp32", "--batch-size", "1", "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() or len(out.read_text().splitlines()) < 16:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    written = len(out.read_text().splitlines())
    assert written < len(files), "the run ended before the signal: nothing was tested"
    assert f"stopped: {written} of {len(files)} images answered in {out}; rerun with --resume --output {out}" in err
    rest = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
    assert rest.returncode == 0, rest.stderr
    images = [json.loads(line)["image"] for line in out.read_text().splitlines()]
    assert sorted(images) == sorted(files)  # each image once: none lost, none twice
