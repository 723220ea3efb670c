"""Keep a served repository answering: probe every model with a real inference, heal what does not answer.

Triton 2.51 does not notice a dead Python-backend stub (killed, or OOM-killed): the model stays READY
while every request to it fails with "Stub process ... is not healthy", and its own readiness endpoint
stays green. So the only trustworthy signal is an inference:

* ``probe(client, model)`` sends one small, valid request built from the model's own config (a tiny PNG
  for models that take encoded images, zeros of the input's shape and type for tensor models) and says
  whether a finite answer came back within a deadline;
* ``Supervisor`` runs on the launcher's main thread (the server dies with that thread: see
  ``die_with_launcher``): every ``interval_s`` it checks that the server process lives and probes each
  model that runs in a process of its own (ensembles only route between them). A model that fails
  ``failures_to_act`` probes in a row is reloaded (unload + load: Triton starts a fresh stub; a plain
  load of an unchanged model does nothing); if it still does not answer, or the server died, the server
  is restarted on the same ports. Each step is logged with its reason. Too many restarts in a window
  end supervision with an error instead of a crash loop.

``python -m server.health`` (``server/health.py``) runs the same probes once, for orchestrators.
"""

from __future__ import annotations

import contextlib
import http.client as http_lib
import io
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve.errors import ExitCode
from resnet_serve.server.triton import stub_pids
from resnet_serve.settings import API_KEY_HEADER

log = logging.getLogger(__name__)

DATATYPES = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64}


def probe_image() -> bytes:
    """A 48x48 mid-grey PNG: decodes and resizes like any photo, for every contract."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def probe_request(config: dict):
    """(input name, array, Triton datatype) of a valid one-image request for a model's config (JSON form)."""
    first = config["input"][0]
    dims = [int(d) if int(d) > 0 else 1 for d in first.get("dims", [])]
    shape = ([1] if int(config.get("max_batch_size", 0)) > 0 else []) + dims
    if first["data_type"] == "TYPE_STRING":
        return first["name"], np.full(shape, probe_image(), dtype=np.object_), "BYTES"
    if first["data_type"] == "TYPE_UINT8" and first.get("allow_ragged_batch"):  # a one-step model: the file's bytes
        return first["name"], np.frombuffer(probe_image(), dtype=np.uint8)[None, :], "UINT8"
    dtype = DATATYPES.get(first["data_type"])
    if dtype is None:
        raise ValueError(f"no probe for input type {first['data_type']}")
    return first["name"], np.zeros(shape, dtype), first["data_type"].removeprefix("TYPE_")


def is_composite(config: dict) -> bool:
    return config.get("platform") == "ensemble"


@dataclass(frozen=True)
class ProbeResult:
    model: str
    ok: bool
    seconds: float
    reason: str = ""


def http_client(url: str, timeout_s: float):
    import tritonclient.http as http

    return http.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)


def probe(client, model: str, config: dict | None = None) -> ProbeResult:
    """One real inference of ``model`` through a tritonclient.http client (its timeouts bound the wait)."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    start = time.monotonic()
    try:
        config = config or client.get_model_config(model)
        name, array, datatype = probe_request(config)
        tensor = http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        result = client.infer(model, [tensor])
        outputs = [result.as_numpy(out["name"]) for out in config.get("output", [])]
        bad = [o for o in outputs if o is not None and o.dtype.kind == "f" and not np.isfinite(o).all()]
        if bad:
            return ProbeResult(model, False, time.monotonic() - start, "answered with NaN or infinite values")
    except (InferenceServerException, OSError, ValueError, KeyError, http_lib.HTTPException) as exc:
        # HTTPException: geventhttpclient's parse errors, e.g. a gRPC port given as the HTTP URL
        reason = exc.message() if isinstance(exc, InferenceServerException) else f"{type(exc).__name__}: {exc}"
        return ProbeResult(model, False, time.monotonic() - start, (reason or type(exc).__name__).strip())
    return ProbeResult(model, True, time.monotonic() - start)


def repository_models(repository: Path) -> dict[str, bool]:
    """Model name -> whether it is an ensemble, read from the repository's configs."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    models = {}
    for folder in sorted(p for p in Path(repository).iterdir() if (p / "config.pbtxt").is_file()):
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        models[config.name or folder.name] = config.platform == "ensemble"
    return models


@dataclass
class SupervisorPolicy:
    interval_s: float = 5.0
    probe_timeout_s: float = 10.0
    failures_to_act: int = 2  # probes failed in a row before a model is reloaded
    max_restarts: int = 5  # server restarts allowed within restart_window_s before supervision gives up
    restart_window_s: float = 600.0


class Supervisor:
    """Watches one started ``TritonServer`` (see the module docstring); ``run(stop)`` until ``stop`` is set."""

    def __init__(self, server, policy: SupervisorPolicy | None = None, key: str | None = None) -> None:
        self.server, self.policy, self.key = server, policy or SupervisorPolicy(), key
        self.models = [m for m, composite in repository_models(server.config.model_repository).items() if not composite]
        self.failures: dict[str, int] = {}
        self.restarts: deque[float] = deque()
        self.events: list[str] = []  # what the supervisor did, in order (also logged)
        self._configs: dict[str, dict] = {}

    def note(self, level: int, message: str, *args) -> None:
        text = message % args if args else message
        self.events.append(text)
        log.log(level, "%s", text)

    def run(self, stop: threading.Event) -> int:
        while not stop.wait(self.policy.interval_s):
            if not self.tick(stop):
                return ExitCode.FAILED
        return ExitCode.OK

    def tick(self, stop: threading.Event | None = None) -> bool:
        """One round of checks and repairs; False when supervision has to give up."""
        process = self.server.process
        if process is None or process.poll() is not None:
            code = process.returncode if process is not None else None
            self.note(logging.ERROR, "Triton exited unexpectedly (%s); restarting it", describe_exit(code))
            return self.restart(stop)
        if self.server.proxy is not None and not self.server.proxy.alive():
            self.note(logging.ERROR, "the HTTP proxy (nginx) exited; starting it again")
            self.server.start_proxy()
        client = http_client(self.server.internal_http_url, self.policy.probe_timeout_s)
        try:
            failing = []
            for model in self.models:
                result = self.probe(client, model)
                if result.ok:
                    self.failures.pop(model, None)
                    continue
                self.failures[model] = self.failures.get(model, 0) + 1
                log.warning("probe of %s failed (%d in a row): %s", model, self.failures[model], result.reason)
                if self.failures[model] >= self.policy.failures_to_act:
                    failing.append(result)
            if not failing:
                return True
            if self.server.config.model_control_mode != "explicit":
                self.note(logging.ERROR, "%s; restarting the server", _describe(failing))
                return self.restart(stop)
            for result in failing:
                self.note(logging.WARNING, "%s; reloading it", _describe([result]))
                started = time.monotonic()
                reason = self.reload(result.model)
                after = self.probe(client, result.model) if reason is None else None
                if after is not None and after.ok:
                    self.failures.pop(result.model, None)
                    self.note(
                        logging.WARNING,
                        "%s answers again (reloaded in %.1f s)",
                        result.model,
                        time.monotonic() - started,
                    )
                    continue
                why = reason or (after.reason if after else "")
                self.note(logging.ERROR, "reloading %s did not help (%s); restarting the server", result.model, why)
                return self.restart(stop)
            return True
        finally:
            client.close()

    def probe(self, client, model: str) -> ProbeResult:
        if model not in self._configs:
            try:
                self._configs[model] = client.get_model_config(model)
            except Exception as exc:  # noqa: BLE001 - any failure to answer is a failed probe
                return ProbeResult(model, False, 0.0, f"its config cannot be read ({exc})")
        return probe(client, model, self._configs[model])

    def reload(self, model: str) -> str | None:
        """Unload and load ``model`` through the model-repository API; None on success, else the reason.
        Its old stub processes are killed first: a stopped or wedged one would outlive the unload."""
        for pid in stub_pids(self.server.process.pid, model):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        base = f"http://{self.server.internal_http_url}/v2/repository/models/{model}"
        headers = {API_KEY_HEADER: self.key} if self.key else {}
        for action in ("unload", "load"):
            request = urllib.request.Request(f"{base}/{action}", data=b"{}", method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=max(60.0, self.policy.probe_timeout_s)) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                return f"{action} answered {exc.code}: {exc.read()[:200].decode(errors='replace')}"
            except (OSError, http_lib.HTTPException) as exc:  # refused, reset, or cut off mid-answer
                return f"{action} failed: {type(exc).__name__}: {exc}"
        return None

    def restart(self, stop: threading.Event | None = None) -> bool:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.policy.restart_window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.policy.max_restarts:
            self.note(
                logging.ERROR,
                "giving up: %d restarts within %.0f s did not keep the server healthy; see the log above",
                len(self.restarts),
                self.policy.restart_window_s,
            )
            return False
        self.restarts.append(now)
        started = time.monotonic()
        self.server.stop()
        self.server.start(stop)  # ServerError (its reason) ends supervision; Ctrl-C during the start exits 0
        self.failures.clear()
        self._configs.clear()
        self.note(logging.WARNING, "Triton restarted and ready in %.1f s", time.monotonic() - started)
        return True


def _describe(results: list[ProbeResult]) -> str:
    return "; ".join(f"{r.model} did not answer its probe ({r.reason})" for r in results)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no process"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
