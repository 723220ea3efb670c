"""Faults against the real server and launcher: dead model processes healed by the supervisor, the server
killed under a running client, a killed launcher (and the stubs it left, killed at the next start), SIGTERM
to a command running a server, ports in use, a model that cannot load, Ctrl-C during startup. Loopback only;
every wait is bounded."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import cifar_test_files
from PIL import Image

from resnet_serve.server import ServerConfig, ServerError, TritonServer, free_ports
from resnet_serve.server.health import main as health_main
from resnet_serve.server.triton import SHM_GLOB, descendants, remove_stale_shm

pytestmark = pytest.mark.server

ENSEMBLE, PREPROCESS = "resnet20_onnxruntime_fp32", "preprocess_cifar10"
CLASSIFIER = f"{ENSEMBLE}_classifier"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def shm_regions_of(pid: int) -> set[str]:
    """The Python-backend shared-memory regions a process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.rsplit("/", 1)[-1] for line in maps if SHM_GLOB[:-1] in line}


def stub_of(root_pid: int, model: str) -> int:
    for pid in descendants(root_pid):
        if "triton_python_backend_stub" in cmdline(pid) and f"/{model}/1/model.py" in cmdline(pid):
            return pid
    raise AssertionError(f"no stub process for {model}")


def tritonserver_of(root_pid: int) -> int:
    return next(pid for pid in descendants(root_pid) if "bin/tritonserver" in cmdline(pid))


@contextmanager
def launcher(repository: Path, tmp_path: Path, *extra: str, wait: bool = True):
    """``python -m server`` (the real launcher, supervising) on free loopback ports."""
    http, grpc, metrics = free_ports(3)
    command = [
        sys.executable, "-m", "resnet_serve.server", "--model-repository", str(repository),
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--api-key-file", str(tmp_path / "server.key"), "--probe-interval", "2", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    info = SimpleNamespace(proc=proc, lines=lines, http=f"127.0.0.1:{http}", grpc=f"127.0.0.1:{grpc}")
    try:
        deadline = time.monotonic() + 180
        while wait and not any("Triton is serving" in line for line in lines):
            assert proc.poll() is None, "launcher exited:\n" + "".join(lines[-30:])
            assert time.monotonic() < deadline, "launcher not ready:\n" + "".join(lines[-30:])
            time.sleep(0.2)
        yield info
    finally:
        started = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        for pid in started:  # the launcher takes its server (and the stubs) with it
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not alive(pid), f"process {pid} ({cmdline(pid)[:80]}) outlived the launcher"


def answers(url: str, model: str = ENSEMBLE) -> bool:
    client = grpcclient.InferenceServerClient(url)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 200)).save(buffer, format="PNG")
    tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[buffer.getvalue()]], dtype=np.object_))
    try:
        return client.infer(model, [tensor], client_timeout=10).as_numpy("logits").shape == (1, 10)
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return False
    finally:
        client.close()


def health(server, repository: Path) -> int:
    return health_main(["--url", server.http, "--model-repository", str(repository), "--timeout", "5"])


@pytest.mark.slow  # supervision waits for failed probes, then the server drains
@pytest.mark.parametrize("model", [CLASSIFIER, PREPROCESS])
def test_a_killed_model_process_is_back_within_30_s_and_health_fails_until_then(small_repository, tmp_path, model):
    # probes every 5 s, two failures before a reload: the unhealthy window is at least 5 s wide
    with launcher(small_repository, tmp_path, "--probe-interval", "5") as server:
        assert health(server, small_repository) == 0 and answers(server.grpc)
        os.kill(stub_of(server.proc.pid, model), signal.SIGKILL)
        killed = time.monotonic()
        assert health(server, small_repository) == 1  # Triton still says READY; the health command does not
        while not answers(server.grpc):
            assert time.monotonic() - killed < 30, "not answering 30 s after the kill:\n" + "".join(server.lines[-20:])
            time.sleep(0.5)
        back = time.monotonic() - killed
        assert health(server, small_repository) == 0
        log = "".join(server.lines)
        assert f"{model} did not answer its probe" in log and "reloading it" in log and "answers again" in log
        print(f"{model}: answering again {back:.1f} s after SIGKILL")


@pytest.mark.slow  # supervision waits for failed probes, then the server drains
def test_a_wedged_model_process_is_replaced(small_repository, tmp_path):
    """SIGSTOP: the stub neither dies nor answers. The supervisor reloads the model and kills the old stub."""
    with launcher(small_repository, tmp_path, "--probe-interval", "2", "--probe-timeout", "3") as server:
        wedged = stub_of(server.proc.pid, CLASSIFIER)
        os.kill(wedged, signal.SIGSTOP)
        stopped = time.monotonic()
        while not answers(server.grpc):
            assert time.monotonic() - stopped < 30, "not answering 30 s after SIGSTOP:\n" + "".join(server.lines[-20:])
            time.sleep(0.5)
        assert not alive(wedged) and stub_of(server.proc.pid, CLASSIFIER) != wedged
        assert f"{CLASSIFIER} answers again" in "".join(server.lines)
        print(f"wedged {CLASSIFIER}: answering again {time.monotonic() - stopped:.1f} s after SIGSTOP")


@pytest.mark.slow  # supervision waits for failed probes, then the server drains
def test_client_survives_a_supervised_restart_and_resume_classifies_each_image_once(
    small_repository, tmp_path, cifar_jpg
):
    files = [str(f) for f in cifar_test_files(cifar_jpg, 60)]  # 600 images, one per request
    out = tmp_path / "results.jsonl"

    def client(*extra: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "resnet_serve.client", "classify", *files, "--url", server.grpc,
                   "--model", ENSEMBLE, "--batch-size", "1", "--top-k", "1", "--output", str(out), *extra]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def lines() -> list[dict]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def wait_for_lines(count: int, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        while len(lines()) < count:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)

    with launcher(small_repository, tmp_path) as server:
        # 1. the server is SIGKILLed mid-run: the supervisor restarts it, the client waits and goes on
        proc = client()
        wait_for_lines(40, proc)
        os.kill(tritonserver_of(server.proc.pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "Triton exited unexpectedly (killed by SIGKILL); restarting it" in "".join(server.lines)
        records = lines()
        assert sorted(r["image"] for r in records) == sorted(files) and all("predictions" in r for r in records)

        # 2. the client itself is killed mid-run; --resume finishes the job without repeating an image
        out.unlink()
        proc = client()
        wait_for_lines(40, proc)
        proc.kill()
        proc.wait()
        partial = len(lines())
        proc = client("--resume")
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert f"resuming: {partial} of {len(files)} images already done" in err
        records = lines()
        assert sorted(r["image"] for r in records) == sorted(files) and all("predictions" in r for r in records)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_exits_2_with_a_clear_message_when_the_server_dies_mid_run(
    small_repository, cifar_jpg, tmp_path, protocol
):
    files = [str(f) for f in cifar_test_files(cifar_jpg, 40)]
    out = tmp_path / "results.jsonl"
    with launcher(small_repository, tmp_path, "--no-supervise") as server:
        url = server.grpc if protocol == "grpc" else server.http
        command = [sys.executable, "-m", "resnet_serve.client", "classify", *files, "--url", url, "--protocol",
                   protocol, "--model", ENSEMBLE, "--batch-size", "1", "--output", str(out),
                   "--wait-for-server", "3"]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not out.exists() or len(out.read_text().splitlines()) < 16:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(tritonserver_of(server.proc.pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "cannot reach the Triton server" in err and "gave up after waiting 3 s" in err
    assert f"rerun with --resume --output {out}" in err
    done = len(out.read_text().splitlines())
    assert 16 <= done < len(files) and f"{done} of {len(files)} images answered" in err


def test_a_killed_launcher_takes_the_server_with_it(small_repository, tmp_path):
    with launcher(small_repository, tmp_path) as server:
        triton = tritonserver_of(server.proc.pid)
        stubs = [pid for pid in descendants(triton) if "triton_python_backend_stub" in cmdline(pid)]
        server.proc.kill()  # SIGKILL: no chance to clean up
        server.proc.wait()
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in [triton, *stubs]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in [triton, *stubs])


def test_stubs_left_by_a_killed_server_are_killed_at_the_next_start(small_repository, tmp_path, caplog):
    """A stub caught mid-request when its server and launcher die can hang for ever; stopped stubs stand in
    for such ones here (they cannot exit on their own either)."""
    try:
        with launcher(small_repository, tmp_path, "--no-supervise") as server:
            triton = tritonserver_of(server.proc.pid)
            stubs = [pid for pid in descendants(triton) if "triton_python_backend_stub" in cmdline(pid)]
            regions = {name for pid in stubs for name in shm_regions_of(pid)}
            assert stubs and regions
            for pid in stubs:
                os.kill(pid, signal.SIGSTOP)
            server.proc.kill()  # the launcher, SIGKILLed: Triton dies with it, its stubs stay
            server.proc.wait()
            deadline = time.monotonic() + 15
            while alive(triton) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not alive(triton) and all(alive(pid) for pid in stubs)
        fresh = TritonServer(ServerConfig(small_repository, http_port=0, grpc_port=0, metrics_port=0))
        with caplog.at_level(logging.WARNING, logger="resnet_serve.server.triton"):
            fresh.start()
        try:
            assert not any(alive(pid) for pid in stubs)
            warning = next(
                r.getMessage() for r in caplog.records if "left running by a server that is gone" in r.getMessage()
            )
            assert set(map(str, stubs)) <= set(warning.split("(pids ")[1].rstrip(")").split(", "))
            assert not any((Path("/dev/shm") / name).exists() for name in regions)
            assert fresh.is_ready()  # the new server's own stubs were left alone
        finally:
            fresh.stop()
    finally:
        for pid in stubs:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_unwinds_a_command_that_runs_a_server(small_repository, tmp_path):
    """Every command runs through cli.run: SIGTERM (kill, timeout, a service manager) stops the server it
    started, its stubs and work folder go with it, and the exit code is 128 + 15 as a shell reports it."""
    code = (
        "import argparse, sys, time\n"
        "from resnet_serve import cli\n"
        "from resnet_serve.server import running\n"
        "def job(args):\n"
        f"    with running({str(small_repository)!r}, http_port=0, grpc_port=0, metrics_port=0) as server:\n"
        "        print(server.process.pid, server._workdir.name, flush=True)\n"
        "        time.sleep(120)\n"
        "sys.exit(cli.run(argparse.ArgumentParser(), job, []))\n"
    )
    log_path = tmp_path / "command.log"  # a file, not a pipe: Triton's log cannot fill it and stall the command
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()  # bounded: the command prints it once serving, or exits (startup timeout)
        assert line, log_path.read_text()[-2000:]
        triton, workdir = line.split()
        stubs = [pid for pid in descendants(int(triton)) if "triton_python_backend_stub" in cmdline(pid)]
        regions = {name for pid in stubs for name in shm_regions_of(pid)}
        assert stubs and regions and Path(workdir).is_dir()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    err = log_path.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM received: stopping (cleaning up first)" in err
    assert not any(alive(pid) for pid in [int(triton), *stubs])
    assert not Path(workdir).exists()
    assert not any((Path("/dev/shm") / name).exists() for name in regions)


def test_ctrl_c_during_startup_stops_the_server(default_repository, tmp_path):
    with launcher(default_repository / "models", tmp_path, wait=False) as server:
        deadline = time.monotonic() + 60
        while not any("triton_python_backend_stub" in cmdline(pid) for pid in descendants(server.proc.pid)):
            assert time.monotonic() < deadline and server.proc.poll() is None
            time.sleep(0.05)
        assert not any("Triton is serving" in line for line in server.lines)  # still loading its models
        started = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=60) == 0
        print(f"stopped {time.monotonic() - started:.1f} s after Ctrl-C during startup")
    assert "stopped while the server was starting" in "".join(server.lines)


def test_a_port_in_use_is_refused_naming_its_owner(small_repository):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = TritonServer(ServerConfig(small_repository, http_port=port, grpc_port=0, metrics_port=0))
        with pytest.raises(ServerError, match=rf"http port {port} on 127.0.0.1 is in use by process {os.getpid()}"):
            server.start()
    assert server.process is None


def test_a_model_that_cannot_load_fails_fast_with_its_reason(small_repository, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_repository, broken)
    (broken / CLASSIFIER / "1" / "model.py").unlink()  # Triton 2.51 alone would wait for it forever
    started = time.monotonic()
    with pytest.raises(ServerError, match=f"{CLASSIFIER}: 1/model.py is missing"):
        TritonServer(ServerConfig(broken, http_port=0, grpc_port=0, metrics_port=0)).start()
    assert time.monotonic() - started < 5


def test_stale_shared_memory_regions_are_removed_but_live_ones_kept():
    shm = Path("/dev/shm")
    stale = shm / SHM_GLOB.replace("*", f"test-{uuid.uuid4()}")
    live = shm / SHM_GLOB.replace("*", f"test-{uuid.uuid4()}")
    stale.write_bytes(b"\0" * 4096)
    live.write_bytes(b"\0" * 4096)
    try:
        with live.open("rb"):  # held open by a live process: a running server's region
            removed = remove_stale_shm()
            assert stale.name in removed and not stale.exists()
            assert live.exists() and live.name not in removed
    finally:
        stale.unlink(missing_ok=True)
        live.unlink(missing_ok=True)
