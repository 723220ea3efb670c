"""The embedded Triton server on the default repository: real binary, loopback ports, real JPEGs."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import cifar_test_files
from PIL import Image
from tritonclient.utils import InferenceServerException

from resnet_serve.engines import load_engine
from resnet_serve.resnets.spec import CIFAR10, IMAGENET, preprocess, preprocess_pixels

pytestmark = pytest.mark.server

CIFAR_ENGINES = ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8")


def bytes_input(module, images: list[bytes], name: str = "image"):
    data = np.array([[b] for b in images], dtype=np.object_)
    tensor = module.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def classify(client, module, model: str, images: list[bytes], class_count: int = 0):
    output = module.InferRequestedOutput("logits", class_count=class_count) if class_count else None
    result = client.infer(model, [bytes_input(module, images)], outputs=[output] if output else None)
    return result.as_numpy("logits")


def test_health_metadata_and_config(triton):
    client = httpclient.InferenceServerClient(triton.http_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("resnet20") and client.is_model_ready("resnet50")
    meta = client.get_model_metadata("resnet20_onnxruntime_int8")
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    config = client.get_model_config("resnet20_onnxruntime_int8_classifier")
    assert config["max_batch_size"] == 256 and config["dynamic_batching"]["preferred_batch_size"]
    # uint8 HWC pixels between preprocess and classifier (chosen by measurement, see CPU_PROFILE)
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and config["input"][0]["dims"] == [32, 32, 3]
    ensemble = client.get_model_config("resnet20")
    assert ensemble["platform"] == "ensemble"
    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    names = {m.name for m in grpc.get_model_repository_index().models}
    assert {"preprocess_cifar10", "preprocess_imagenet", "resnet50_openvino_fp32"} <= names


@pytest.mark.parametrize("engine", CIFAR_ENGINES)
def test_ensemble_matches_offline_engine_over_http_and_grpc(triton, default_repository, cifar_jpg, engine):
    files = cifar_test_files(cifar_jpg, per_class=20)
    images = [f.read_bytes() for f in files]
    offline = load_engine(default_repository / "build" / "resnet20" / engine)
    expected = offline.infer(np.stack([preprocess(b, CIFAR10) for b in images])).argmax(1)
    model = "resnet20_" + engine.replace("-", "_")
    for module, url in ((httpclient, triton.http_url), (grpcclient, triton.grpc_url)):
        client = module.InferenceServerClient(url)
        served = np.concatenate(
            [classify(client, module, model, images[i : i + 64]) for i in range(0, len(images), 64)]
        )
        assert np.array_equal(served.argmax(1), expected), f"{module.__name__} {engine}"


def test_top5_labels_through_class_count(triton, default_repository, cifar_jpg):
    files = cifar_test_files(cifar_jpg, per_class=2)
    images = [f.read_bytes() for f in files]
    offline = load_engine(default_repository / "build" / "resnet20" / "onnxruntime-fp32")
    logits = offline.infer(np.stack([preprocess(b, CIFAR10) for b in images]))
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    top5 = classify(client, grpcclient, "resnet20_onnxruntime_fp32", images, class_count=5)
    labels = CIFAR10.default_labels()
    for row, expected in zip(top5, logits, strict=True):
        entries = [entry.decode().split(":") for entry in row]
        scores = [float(s) for s, _, _ in entries]
        assert scores == sorted(scores, reverse=True)
        assert [int(i) for _, i, _ in entries] == list(np.argsort(-expected)[:5])
        assert [name for _, i, name in entries] == [labels[int(i)] for _, i, _ in entries]
        assert scores[0] == pytest.approx(float(expected.max()), abs=1e-4)


def inference_stats(client, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def settled(read, done, timeout_s: float = 10.0):
    """Triton updates its statistics and metrics just after releasing the responses they count: read
    until ``done(value)`` or the timeout, and return the last value (the test's assert judges it)."""
    deadline = time.monotonic() + timeout_s
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_dynamic_batching_really_batches(triton, imagenet_sample):
    """200 single-image requests in flight at once at the ResNet-50 classifier (~30 ms an image here):
    they queue while an execution runs, and Triton's dynamic batcher groups them."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    model = "resnet50_onnxruntime_fp32_classifier"
    before = inference_stats(client, model)
    files = sorted(imagenet_sample.glob("*.JPEG"))[:20]
    pixels = np.stack([preprocess_pixels(f.read_bytes(), IMAGENET) for f in files])
    images = pixels[np.arange(200) % len(pixels)]
    done, errors, finished = [], [], threading.Event()

    def on_result(result, error):
        (errors if error else done).append(error or result)
        if len(done) + len(errors) == len(images):
            finished.set()

    for image in images:
        tensor = grpcclient.InferInput("input", [1, *image.shape], "UINT8")
        tensor.set_data_from_numpy(image[None])
        client.async_infer(model, [tensor], on_result)
    assert finished.wait(300) and not errors
    inferences, executions = settled(
        lambda: tuple(a - b for a, b in zip(inference_stats(client, model), before, strict=True)),
        lambda counts: counts[0] >= len(images),
    )
    assert inferences == len(images)
    assert executions < inferences / 2, f"{executions} executions for {inferences} inferences"


def png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def one_pixel_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_images_fail_alone_while_good_requests_in_the_same_batch_succeed(triton, cifar_jpg):
    good = [f.read_bytes() for f in cifar_test_files(cifar_jpg, per_class=3)]
    jpeg = good[0]
    bad = {
        "empty": (b"", "empty input"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "broken image data"),
        "text file": (b"just some text, not an image\n" * 4, "not a decodable image"),
        "1x1 image": (one_pixel_png(), "is 1x1 pixels"),
        "decompression bomb": (png_declaring(20000, 20000), "decompression bomb"),
    }
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    expected = classify(client, grpcclient, "resnet20", good).argmax(1)

    def send(payload: bytes):
        c = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            return classify(c, grpcclient, "resnet20", [payload]).argmax(1)[0]
        except InferenceServerException as exc:
            return exc

    jobs = [("good", i, g) for i, g in enumerate(good)] + [(name, None, data) for name, (data, _) in bad.items()]
    jobs = jobs * 3  # interleaved, concurrent: bad and good requests land in the same dynamic batches
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda job: send(job[2]), jobs))
    for (name, index, _), result in zip(jobs, results, strict=True):
        if name == "good":
            assert result == expected[index], f"good request {index} got {result}"
        else:
            assert isinstance(result, InferenceServerException), f"{name} was accepted"
            assert bad[name][1] in result.message(), (name, result.message())
    assert client.is_server_ready() and client.is_model_ready("resnet20")


def test_bad_tensor_requests_get_clear_errors(triton):
    client = httpclient.InferenceServerClient(triton.http_url)
    model = "resnet20_onnxruntime_fp32_classifier"

    def infer(array, datatype, model_name=model):
        tensor = httpclient.InferInput("input", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as err:
            client.infer(model_name, [tensor])
        return err.value.message()

    assert "data-type is 'FP32', but model" in infer(np.zeros((1, 32, 32, 3), np.float32), "FP32")
    message = infer(np.zeros((1, 28, 28, 3), np.uint8), "UINT8")
    assert "unexpected shape for input 'input'" in message and "[-1,32,32,3]" in message
    assert "batch-size must be <= 256" in infer(np.zeros((257, 32, 32, 3), np.uint8), "UINT8")
    assert "unknown model" in infer(np.zeros((1, 32, 32, 3), np.uint8), "UINT8", model_name="resnet21").lower()
    assert client.is_server_ready()


def test_imagenet_ensemble_handles_any_size_and_mode(triton, imagenet_sample):
    files = sorted(imagenet_sample.glob("*.JPEG"))[:8]
    images = [f.read_bytes() for f in files]
    buffer = io.BytesIO()  # RGBA PNG and CMYK JPEG as well
    Image.open(files[0]).convert("RGBA").save(buffer, format="PNG")
    images.append(buffer.getvalue())
    buffer = io.BytesIO()
    Image.open(files[1]).convert("CMYK").save(buffer, format="JPEG")
    images.append(buffer.getvalue())
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    top = classify(client, grpcclient, "resnet50", images, class_count=1)
    assert top.shape == (len(images), 1)
    labels = json.loads((imagenet_sample / "imagenet_class_index.json").read_text())
    names = {v[1] for v in labels.values()}
    assert all(entry[0].decode().split(":", 2)[2] in names for entry in top)


def processes_serving(repository: Path) -> list[str]:
    """tritonserver and Python-backend stub processes whose command line names this repository."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout
    names_it = re.compile(re.escape(str(Path(repository).resolve())) + r"(/|\s|$)")
    return [
        line
        for line in out.splitlines()
        if ("bin/tritonserver" in line or "triton_python_backend_stub" in line) and names_it.search(line)
    ]


def test_clean_shutdown_leaves_no_process(small_repository):
    from resnet_serve.server import running

    repo = small_repository
    assert processes_serving(repo) == []
    with running(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        pid = server.process.pid
        mine = processes_serving(repo)
        assert any(p.split()[0] == str(pid) and "bin/tritonserver" in p for p in mine), mine
        stubs = [p for p in mine if "triton_python_backend_stub" in p]
        assert len(stubs) == 2 and all(p.split()[1] == str(pid) for p in stubs), mine  # preprocess, classifier
    assert processes_serving(repo) == []


def test_model_that_fails_to_load_makes_the_cli_exit_nonzero(default_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(default_repository / "models" / "resnet20_onnxruntime_fp32_classifier", repo / "broken")
    config = (repo / "broken" / "config.pbtxt").read_text()
    (repo / "broken" / "config.pbtxt").write_text(config.replace("resnet20_onnxruntime_fp32_classifier", "broken"))
    (repo / "broken" / "1" / "engine" / "model.onnx").write_bytes(b"this is not an onnx model")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_serve.server",
            "--model-repository",
            str(repo),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode != 0
    assert "broken" in result.stderr and "ONNX Runtime could not load" in result.stderr
    assert processes_serving(repo) == []  # neither the server nor a stub outlived the failed start


def test_server_reports_a_missing_repository(tmp_path):
    from resnet_serve.server import ServerError, running

    with pytest.raises(ServerError, match="does not exist; create one with") as info:
        with running(tmp_path / "nowhere", http_port=0, grpc_port=0, metrics_port=0):
            pass
    assert info.value.exit_code == 2  # cannot run as given (the CLI convention), not a server that failed
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ServerError, match="a-file is not a folder; create one with"):
        with running(tmp_path / "a-file", http_port=0, grpc_port=0, metrics_port=0):
            pass


def test_serve_refuses_a_repository_without_models(tmp_path, capsys, caplog):
    """Before: `serve` on an empty folder (the checkout's model_repository/ before `resnet-serve repository`)
    started Triton, which then answered every request with "unknown model"."""
    from resnet_serve.server import cli as server_cli

    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "README.md").write_text("models go here")
    args = ["--model-repository", str(tmp_path / "repo"), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    assert server_cli.main(args) == 2
    assert "repo holds no models; build the default repository with `resnet-serve repository`" in caplog.text
    assert "Triton is serving" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"host": "not-an-ip"}, "cannot listen on host 'not-an-ip' (Name or service not known)"),
        ({"host": "192.0.2.1"}, "cannot listen on host '192.0.2.1' (Cannot assign requested address)"),
        ({"host": "not-an-ip", "http_port": 0}, "cannot listen on host 'not-an-ip'"),
        (
            {"http_port": 18000, "grpc_port": 18000},
            "the HTTP, gRPC and metrics ports must differ (got 18000, 18000, 0)",
        ),
    ],
)
def test_a_start_that_cannot_listen_is_refused_before_triton_runs(tmp_path, given, message):
    # before: a host that is no address here read as "http port ... is in use" (or, with a port 0, ended in a
    # socket.gaierror traceback); one port for two listeners printed Triton's whole usage text
    from resnet_serve.server import ServerError, running

    with pytest.raises(ServerError) as info:
        with running(tmp_path, **{"http_port": 0, "grpc_port": 0, "metrics_port": 0, **given}):
            pass
    assert message in str(info.value) and info.value.exit_code == 2


def test_prometheus_metrics_count_requests(triton, cifar_jpg):
    import urllib.request

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    classify(client, grpcclient, "resnet20_onnxruntime_int8", [f.read_bytes() for f in cifar_test_files(cifar_jpg, 1)])

    def served_count() -> float | None:
        with urllib.request.urlopen(triton.metrics_url, timeout=10) as response:
            text = response.read().decode()
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("nv_inference_count{") and 'model="resnet20_onnxruntime_int8_classifier"' in line
        ]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else None

    count = settled(served_count, lambda count: count is not None and count >= 10)
    assert count is not None and count >= 10, count


def test_free_ports_are_distinct_and_avoid_the_given_ones():
    # picked one at a time, a closed socket's port can come back at once: an HTTP and a gRPC port were
    # once the same, and Triton refused to start
    from resnet_serve.server import ServerConfig, free_ports

    ports = free_ports(40)
    assert len(set(ports)) == 40 and all(1024 <= p <= 65535 for p in ports)
    assert not set(free_ports(10, avoid=ports[:5])) & set(ports[:5])
    config = ServerConfig(model_repository=Path("."), http_port=0, grpc_port=ports[0], metrics_port=0)
    config.resolve_ports()
    assert config.grpc_port == ports[0]
    assert len({config.http_port, config.grpc_port, config.metrics_port}) == 3


def test_health_on_the_grpc_port_reports_unhealthy_without_a_traceback(triton, capsys):
    """Before: the HTTP probe's parse error on a gRPC port (geventhttpclient's HTTPParseError, an
    http.client.HTTPException) escaped probe() as a traceback; the supervisor runs the same probe."""
    from resnet_serve.server.health import main as health_main

    assert health_main(["--url", triton.grpc_url, "--model", "resnet20", "--timeout", "5"]) == 1
    out = capsys.readouterr()
    assert "resnet20" in out.out and "FAILED" in out.out and "HTTPParseError" in out.out
    assert f"unhealthy: 1 of 1 models did not answer at {triton.grpc_url}" in out.err
    assert health_main(["--url", triton.http_url, "--model", "resnet20"]) == 0
