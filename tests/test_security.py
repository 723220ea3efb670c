"""The control plane as configured off loopback: nginx in front of Triton's HTTP (size limits, an API
allow-list), the restricted APIs behind the key, gRPC over mutual TLS. Real server, real nginx, loopback."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from PIL import Image
from tritonclient.utils import InferenceServerException

from resnet_serve.client import Classifier, ServerUnavailable
from resnet_serve.client.core import Security
from resnet_serve.errors import UsageError
from resnet_serve.server import running
from resnet_serve.server.cli import build_parser, server_config
from resnet_serve.server.health import main as health_main
from resnet_serve.server.triton import LOCKED_APIS, GrpcTls, resolve_security
from resnet_serve.settings import API_KEY_HEADER

pytestmark = pytest.mark.server

REPO_ROOT = Path(__file__).resolve().parent.parent
ENSEMBLE = "resnet20_onnxruntime_fp32"
KEY = "k" * 8 + "-test-key-0123456789"


def png(side: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (40, 160, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


def test_beyond_loopback_the_control_plane_is_locked_and_http_goes_through_the_proxy(tmp_path):
    assert resolve_security("0.0.0.0") == (True, "proxy")
    assert resolve_security("192.0.2.7") == (True, "proxy")
    for host in ("127.0.0.1", "::1", "localhost"):
        assert resolve_security(host) == (False, "direct")
    assert resolve_security("0.0.0.0", restrict="off", http_exposure="loopback") == (False, "loopback")
    # the docker-compose service's own command line, as the launcher reads it
    command = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["triton"]["command"]
    args = [a.replace("/keys/", f"{tmp_path}/") for a in command[3:]]
    config, keyed = server_config(build_parser().parse_args(args))
    assert keyed and config.host == "0.0.0.0" and config.http_exposure == "proxy"
    assert config.restricted_apis == LOCKED_APIS and config.model_control_mode == "explicit"
    key_file = tmp_path / "server.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_text().strip() == config.api_key
    assert server_config(build_parser().parse_args(args))[0].api_key == config.api_key  # kept, not regenerated
    key_file.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        server_config(build_parser().parse_args(args))
    # on loopback nothing is locked but model loading (supervision reloads models through it)
    loopback, _ = server_config(build_parser().parse_args(["--api-key-file", str(tmp_path / "other.key")]))
    assert loopback.restricted_apis == ("model-repository",) and loopback.http_exposure == "direct"


@pytest.fixture(scope="module")
def exposed(default_repository, tmp_path_factory):
    """The server as the launcher configures it off loopback (restricted APIs with a key, nginx in front of
    HTTP, explicit model control), bound to 127.0.0.1 so that the test stays on loopback."""
    repo = tmp_path_factory.mktemp("exposed") / "models"
    for name in ("preprocess_cifar10", f"{ENSEMBLE}_classifier", ENSEMBLE):
        shutil.copytree(default_repository / "models" / name, repo / name)
    with running(
        repo,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        http_exposure="proxy",
        restricted_apis=LOCKED_APIS,
        api_key=KEY,
        model_control_mode="explicit",
        load_models=("*",),
    ) as server:
        yield server


def raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    host, port = server.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(text) if text else {}
    except json.JSONDecodeError:
        return response.status, {"raw": text[:200]}


def good_request_works(server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)  # through the proxy, binary data extension
    tensor = httpclient.InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[png()]], dtype=np.object_))
    assert client.infer(ENSEMBLE, [tensor]).as_numpy("logits").shape == (1, 10)
    assert server.process.poll() is None and server.proxy.alive()


def test_nested_json_that_crashes_triton_is_refused_by_the_proxy(exposed):
    nested = b'{"inputs":' + b"[" * 150_000 + b"]" * 150_000 + b"}"  # 300 KB; Triton 2.51 dies on it
    for path in (f"/v2/models/{ENSEMBLE}/infer", "/v2/repository/index"):
        status, body = raw(exposed, "POST", path, nested, {"Content-Type": "application/json"})
        assert status == 413, (path, status, body)
    status, body = raw(exposed, "POST", f"/v2/models/{ENSEMBLE}/infer", b"x" * 10, {
        "Inference-Header-Content-Length": "123456", "Content-Type": "application/octet-stream"})  # fmt: skip
    assert status == 413 and "JSON part of the request is over 99999 bytes" in body["error"]
    status, body = raw(exposed, "POST", "/v2/logging", b'{"log_verbose_level": 1}')
    assert status == 403 and "not exposed" in body["error"]
    good_request_works(exposed)


def test_a_300_mb_body_is_refused_without_reading_it(exposed):
    before = rss_mb(exposed.process.pid)
    host, port = exposed.http_url.rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            f"POST /v2/models/{ENSEMBLE}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {300 << 20}\r\n"
            "Inference-Header-Content-Length: 100\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\0" * (1 << 20))  # the first MB of the body, then wait for the answer
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "over 64 MB" in answer and time.monotonic() - started < 5
    assert rss_mb(exposed.process.pid) - before < 20  # Triton never saw it
    good_request_works(exposed)


def test_compressed_and_unsized_bodies_are_refused(exposed):
    body = gzip.compress(b"\0" * (8 << 20))  # inflates to 8 MB inside Triton if let through
    status, reply = raw(exposed, "POST", f"/v2/models/{ENSEMBLE}/infer", body, {"Content-Encoding": "gzip"})
    assert status == 415 and "uncompressed" in reply["error"]
    host, port = exposed.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", f"/v2/models/{ENSEMBLE}/infer")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b'5\r\n{"a":\r\n0\r\n\r\n')
    response = connection.getresponse()
    assert response.status == 411, response.read()
    connection.close()
    good_request_works(exposed)


def test_without_the_key_shared_memory_and_model_control_are_refused(exposed):
    region = "/resnet-serve-test-region"
    http_status, _ = raw(exposed, "POST", "/v2/systemsharedmemory/region/stolen/register",
                         json.dumps({"key": region, "offset": 0, "byte_size": 64}).encode())  # fmt: skip
    assert http_status == 403
    assert raw(exposed, "POST", f"/v2/repository/models/{ENSEMBLE}/unload", b"{}")[0] == 403
    grpc = grpcclient.InferenceServerClient(exposed.grpc_url)
    for call in (
        lambda **kw: grpc.register_system_shared_memory("stolen", region, 64, **kw),
        lambda **kw: grpc.unload_model(ENSEMBLE, **kw),
        lambda **kw: grpc.get_model_repository_index(**kw),
        lambda **kw: grpc.update_log_settings({"log_verbose_level": 1}, **kw),
        lambda **kw: grpc.get_inference_statistics(ENSEMBLE, **kw),
    ):
        with pytest.raises(InferenceServerException, match="restricted, expecting header"):
            call()
    assert grpc.is_model_ready(ENSEMBLE)
    # with the key: the index over gRPC, and over the proxy (which passes the header on)
    index = grpc.get_model_repository_index(headers=Security(KEY).headers("grpc"), as_json=True)
    assert {m["name"] for m in index["models"]} >= {ENSEMBLE, "preprocess_cifar10"}
    assert raw(exposed, "POST", "/v2/repository/index", b"{}", {API_KEY_HEADER: KEY})[0] == 200
    assert raw(exposed, "POST", "/v2/repository/index", b"{}")[0] == 403
    good_request_works(exposed)
    assert health_main(["--url", exposed.http_url, "--model", ENSEMBLE, "--model", "preprocess_cifar10"]) == 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_client_says_when_the_key_is_needed_and_sends_it(exposed, tmp_path, capsys, protocol):
    from resnet_serve.client.cli import main as client_main

    url = exposed.grpc_url if protocol == "grpc" else exposed.http_url
    missing = tmp_path / "none.key"
    assert client_main(["models", "--url", url, "--protocol", protocol, "--api-key-file", str(missing)]) == 2
    assert "cannot read the API key file" in capsys.readouterr().err
    key_file = tmp_path / "server.key"
    key_file.write_text("not-the-key-at-all-0123\n")
    assert client_main(["models", "--url", url, "--protocol", protocol, "--api-key-file", str(key_file)]) == 2
    assert "keeps this API behind its key (a key was sent but not accepted)" in capsys.readouterr().err
    key_file.write_text(KEY + "\n")
    assert client_main(["models", "--url", url, "--protocol", protocol, "--api-key-file", str(key_file), "--json"]) == 0
    assert ENSEMBLE in {m["name"] for m in json.loads(capsys.readouterr().out)}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=resnet-serve test CA", cwd=d)  # fmt: skip
    for name, extra in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=resnet-serve test {name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


def test_grpc_with_mutual_tls(small_repository, certificates):
    d = certificates
    tls = GrpcTls(cert=d / "server.pem", key=d / "server.key", client_ca=d / "ca.pem")
    image = png()
    with running(small_repository, http_port=0, grpc_port=0, metrics_port=0, grpc_tls=tls) as server:
        trusted = Security(tls_ca=d / "ca.pem", tls_cert=d / "client.pem", tls_key=d / "client.key")
        with Classifier(server.grpc_url, model=ENSEMBLE, security=trusted) as clf:
            assert len(clf.classify([image], top_k=1)[0]) == 1
        for security in (Security(tls_ca=d / "ca.pem"), Security()):  # no client certificate; no TLS at all
            with pytest.raises(ServerUnavailable):
                Classifier(server.grpc_url, model=ENSEMBLE, security=security, timeout_s=5)
