"""nginx in front of Triton's HTTP endpoint, for an HTTP port reachable beyond this host.

Triton 2.51's HTTP frontend reads any body in full (300 MB, or a 1 MB gzip body that inflates to 1 GiB,
grow the server by gigabytes), crashes on a few hundred KB of deeply nested JSON, and serves every API
group on one port. Triton itself then listens on a loopback port only, and nginx (Debian's nginx-light,
installed by scripts/setup.sh) listens where clients connect, passing on only what a classifier's
clients need:

* GET  /v2, /v2/health/{live,ready}, /v2/models/<m>[/versions/<v>][/ready|/config]
* POST /v2/models/<m>[/versions/<v>]/infer: at most ``max_body_mb``; its JSON part (the whole body of
  a JSON request, or the ``Inference-Header-Content-Length`` bytes of a binary-extension request) at
  most ``MAX_JSON_BYTES``, far below the nesting depth that crashes Triton; a request whose JSON size
  cannot be told (chunked, without that header) is refused (411)
* POST /v2/repository/index: at most 1 KB (and still behind the API key where the server has one)

Everything else (shared memory, model loading, logging, trace, statistics) gets 403 here; compressed
request bodies get 415. Each refusal is a JSON ``{"error": ...}`` that says what to do instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from resnet_serve.errors import MissingToolError

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 99_999  # at most 5 digits; Triton 2.51 survives 200 KB of nesting and crashes at 240 KB
DEFAULT_MAX_BODY_MB = 64

MODEL = r"/v2/models/[^/]+(/versions/[0-9]+)?"

CONFIG = """\
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log stderr warn;
{user}
events {{ worker_connections 4096; }}

http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    default_type application/json;
    client_body_buffer_size 1m;
    client_header_buffer_size 4k;
    large_client_header_buffers 4 16k;
    client_body_timeout 30s;
    send_timeout 60s;

    # 1: the request's JSON part is small enough to parse safely; 0: too large, or its size cannot be told
    map "$http_inference_header_content_length:$content_length" $json_part_ok {{
        "~^[0-9]{{1,5}}:" 1;
        "~^:[0-9]{{1,5}}$" 1;
        default 0;
    }}
    map "$http_inference_header_content_length:$content_length" $json_part_known {{
        "~^:$" 0;
        default 1;
    }}

    upstream triton {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}

    server {{
        listen {listen};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 300s;
        proxy_buffering off;

        if ($http_content_encoding !~* "^(identity)?$") {{
            return 415 {compressed};
        }}

        location = /v2 {{
            limit_except GET {{ deny all; }}
            proxy_pass http://triton;
        }}
        location ~ ^/v2/health/(live|ready)$ {{
            limit_except GET {{ deny all; }}
            proxy_pass http://triton;
        }}
        location ~ ^{model}(/ready|/config)?$ {{
            limit_except GET {{ deny all; }}
            proxy_pass http://triton;
        }}
        location ~ ^{model}/infer$ {{
            limit_except POST {{ deny all; }}
            client_max_body_size {max_body_mb}m;
            if ($json_part_known = 0) {{
                return 411 {no_length};
            }}
            if ($json_part_ok = 0) {{
                return 413 {json_too_large};
            }}
            proxy_pass http://triton;
        }}
        location = /v2/repository/index {{
            limit_except POST {{ deny all; }}
            client_max_body_size 1k;
            proxy_pass http://triton;
        }}
        location / {{
            return 403 {not_exposed};
        }}
        error_page 413 = @too_large;
        location @too_large {{
            return 413 {too_large};
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise MissingToolError(
            "an HTTP port beyond loopback is served through nginx, which is not installed: run scripts/setup.sh "
            "(apt-get install nginx-light), or pass --http-exposure loopback to keep HTTP on this host "
            "(gRPC stays exposed)"
        )
    return found


def refusals(max_body_mb: int) -> dict[str, str]:
    """Each refusal's JSON body, quoted for nginx.conf."""
    messages = {
        "compressed": "compressed request bodies are not accepted; send the body uncompressed",
        "no_length": "send a Content-Length (or an Inference-Header-Content-Length) with the request",
        "json_too_large": f"the JSON part of the request is over {MAX_JSON_BYTES} bytes; send tensors with the "
        "binary data extension (tritonclient does by default)",
        "not_exposed": "this API is not exposed over HTTP here; use the loopback port on the server host, "
        "or gRPC with the API key",
        "too_large": f"the request body is over {max_body_mb} MB; send fewer images per request",
    }
    return {name: "'" + json.dumps({"error": text}) + "'" for name, text in messages.items()}


def render(listen: str, upstream_port: int, workdir: Path, *, max_body_mb: int, workers: int) -> str:
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""  # workers drop root where the master has it
    return CONFIG.format(
        **refusals(max_body_mb),
        workers=workers,
        workdir=workdir,
        user=user,
        upstream_port=upstream_port,
        listen=listen,
        model=MODEL,
        max_body_mb=max_body_mb,
    )


class HttpProxy:
    """One nginx master (and its workers) listening on ``host:port`` in front of ``127.0.0.1:upstream_port``."""

    def __init__(self, host: str, port: int, upstream_port: int, *, max_body_mb: int = DEFAULT_MAX_BODY_MB) -> None:
        self.host, self.port, self.upstream_port, self.max_body_mb = host, port, upstream_port, max_body_mb
        self.process: subprocess.Popen | None = None
        self.log_tail: deque[str] = deque(maxlen=100)
        self._workdir: Path | None = None

    def start(self, workdir: Path, prefix: list[str], timeout_s: float = 10.0) -> None:
        binary = nginx_binary()
        self._workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o711)  # nginx's workers (nobody, under root) create their temp folders here
        os.chmod(workdir.parent, 0o711)
        listen = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        workers = max(1, min(4, os.cpu_count() or 1))
        config = workdir / "nginx.conf"
        config.write_text(render(listen, self.upstream_port, workdir, max_body_mb=self.max_body_mb, workers=workers))
        command = [*prefix, binary, "-p", str(workdir), "-c", str(config), "-g", "daemon off;"]
        log.info("starting nginx on %s in front of Triton's HTTP port %d", listen, self.upstream_port)
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            errors="replace",
        )
        threading.Thread(target=self._pump_log, name="nginx-log", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.1)  # let the log reader catch the last lines
                raise OSError(f"nginx exited with code {self.process.returncode}: " + " | ".join(self.log_tail))
            try:
                with socket.create_connection(
                    ("127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host, self.port), timeout=1
                ):
                    return
            except OSError:
                time.sleep(0.05)
        raise OSError(f"nginx did not listen on {listen} within {timeout_s:.0f} s")

    def _pump_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log_tail.append(line.rstrip())
            log.warning("nginx: %s", line.rstrip())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)  # SIGTERM: nginx's fast shutdown
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
