"""The soak: ``python benchmarks/run.py --suite soak --duration S`` (default 600 s).

Starts the supervised launcher (``python -m server``) on free loopback ports, or uses ``--url``, and keeps
``--concurrency`` gRPC requests in flight (default 32) for the whole duration: JPEGs of the CIFAR-10 test
split to the ``resnet20`` ensemble, and every 20th request (5%) a bad input from a rotating set (broken
files, a 1x1 image, an 8 x 1,000,000 PNG, NaN pixels) that must be refused with INVALID_ARGUMENT.
Every good answer is compared with that image's answer before the soak (the same top-1 class; how many
are bit-identical and the largest difference are reported). Each window (a minute by default) reports
requests, errors, p50/p99 latency and the RSS of every process of the server (launcher, tritonserver,
each model's stub, nginx), sampled every few seconds, so memory growth after warm-up shows.
Loopback only, bounded by the duration; results.json and report.md in --out.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from resnet_serve.errors import ResnetServeError, UsageError
from resnet_serve.scratch import scratch_dir
from resnet_serve.server.triton import descendants

log = logging.getLogger(__name__)

BAD_EVERY = 20  # one request in 20 (5%) carries a bad input


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * ((width + 1) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def bad_inputs(jpeg: bytes) -> list[tuple[str, bytes]]:
    from PIL import Image

    nan = io.BytesIO()
    Image.fromarray(np.full((32, 32), np.nan, np.float32), mode="F").save(nan, format="TIFF")
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, format="PNG")
    return [
        ("truncated jpeg", jpeg[: len(jpeg) // 2]),
        ("text", b"not an image at all\n" * 8),
        ("1x1 png", tiny.getvalue()),
        ("8 x 1,000,000 png", _png(8, 1_000_000)),
        ("NaN float tiff", nan.getvalue()),
        ("empty", b""),
    ]


# ---- processes and their memory ------------------------------------------------------------------


def label_of(pid: int) -> str | None:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    text = b" ".join(args).decode(errors="replace")
    if "triton_python_backend_stub" in text:
        model = next((a.decode() for a in args if a.endswith(b"/model.py")), "?").split("/")[-3]
        return f"stub {model}"
    if "bin/tritonserver" in text:
        return "tritonserver"
    if "nginx" in text:
        return "nginx master" if "master" in text else "nginx worker"
    if "resnet_serve.server" in text:
        return "launcher"
    return None


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemorySampler:
    """RSS of the server's processes (by label: several nginx workers are summed) every ``interval_s``."""

    def __init__(self, root_pid: int | None, interval_s: float = 5.0) -> None:
        self.root_pid, self.interval_s = root_pid, interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> dict[str, float]:
        if self.root_pid is None:
            return {}
        usage: dict[str, float] = {}
        for pid in [self.root_pid, *descendants(self.root_pid)]:
            label, rss = label_of(pid), rss_mb(pid)
            if label and rss is not None:
                usage[label] = usage.get(label, 0.0) + rss
        return usage

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.sample()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---- load ----------------------------------------------------------------------------------------


@dataclass
class Window:
    index: int
    start_s: float
    good_ok: int = 0
    good_errors: int = 0
    wrong_class: int = 0
    bit_identical: int = 0
    max_abs_diff: float = 0.0
    bad_refused: int = 0
    bad_not_refused: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def summary(self, rss: dict[str, float], duration_s: float) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            good_per_s=round(self.good_ok / duration_s, 1),
            p50_ms=round(float(np.percentile(lat, 50)), 2),
            p99_ms=round(float(np.percentile(lat, 99)), 2),
            max_ms=round(float(lat.max()), 2),
            rss_mb={k: round(v, 1) for k, v in sorted(rss.items())},
        )
        return out


async def drive(url: str, model: str, images: list[bytes], references: list[np.ndarray], bad, *,
                concurrency: int, duration_s: float, window_s: float) -> list[Window]:  # fmt: skip
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.utils import InferenceServerException

    client = grpcaio.InferenceServerClient(url)
    started = time.monotonic()
    deadline = started + duration_s
    windows: list[Window] = []
    counter = iter(range(10**12))

    def window() -> Window:
        last = max(0, int(np.ceil(duration_s / window_s)) - 1)  # answers after the deadline count in the last
        index = min(last, int((time.monotonic() - started) // window_s))
        while len(windows) <= index:
            windows.append(Window(len(windows), round(len(windows) * window_s, 1)))
        return windows[index]

    async def one(i: int) -> None:
        is_bad = i % BAD_EVERY == BAD_EVERY - 1
        name, data = bad[(i // BAD_EVERY) % len(bad)] if is_bad else ("good", images[i % len(images)])
        tensor = grpcaio.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        sent = time.monotonic()
        try:
            result = await client.infer(model, [tensor], client_timeout=60)
        except InferenceServerException as exc:
            w = window()
            if is_bad and str(exc.status()) == "StatusCode.INVALID_ARGUMENT":
                w.bad_refused += 1
            else:
                key = f"{name}: {exc.status()} {(exc.message() or '')[:100]}"
                w.errors[key] = w.errors.get(key, 0) + 1
                if is_bad:
                    w.bad_not_refused += 1
                else:
                    w.good_errors += 1
            return
        w = window()
        if is_bad:
            w.bad_not_refused += 1
            w.errors[f"{name}: answered"] = w.errors.get(f"{name}: answered", 0) + 1
            return
        logits, reference = result.as_numpy("logits"), references[i % len(images)]
        w.good_ok += 1
        w.latencies_ms.append((time.monotonic() - sent) * 1000)
        w.wrong_class += int(logits.argmax() != reference.argmax())
        w.bit_identical += int(np.array_equal(logits, reference))
        w.max_abs_diff = max(w.max_abs_diff, float(np.abs(logits - reference).max()))

    async def worker() -> None:
        while time.monotonic() < deadline:
            await one(next(counter))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return windows


def references_for(url: str, model: str, images: list[bytes]) -> list[np.ndarray]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    out = []
    for data in images:
        tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        out.append(client.infer(model, [tensor], client_timeout=60).as_numpy("logits"))
    client.close()
    return out


# ---- the run -------------------------------------------------------------------------------------


class Launcher:
    """``python -m resnet_serve.server`` (supervised) on free loopback ports, for the soak's duration."""

    def __init__(self, repository: Path, workdir: Path) -> None:
        from resnet_serve.server import free_ports

        self.ports = dict(zip(("http", "grpc", "metrics"), free_ports(3), strict=True))
        self.log_path = workdir / "server.log"
        ports = [f"--{name}-port={port}" for name, port in self.ports.items()]
        command = [sys.executable, "-m", "resnet_serve.server", "--model-repository", str(repository), *ports,
                   "--api-key-file", str(workdir / "server.key")]  # fmt: skip
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        try:
            while "Triton is serving" not in self.log_path.read_text():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ResnetServeError(f"the server did not start; see {self.log_path}")
                time.sleep(0.5)
        except BaseException:  # that error, or a stop signal while waiting: the launcher goes too
            self.stop()
            raise

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def supervisor_events(self) -> list[str]:
        return [
            line.strip() for line in self.log_path.read_text().splitlines() if "resnet_serve.server.supervisor" in line
        ]


def run_soak(args, ctx) -> dict:
    from resnet_serve.benchmarks.inputs import cifar_test_split
    from resnet_serve.resnets.env import environment
    from resnet_serve.resnets.spec import CIFAR10

    duration = args.duration or 600.0
    concurrency = args.concurrency[0] if args.concurrency else 32
    window_s = min(60.0, max(5.0, duration / 4)) if duration < 240 else 60.0
    model = (args.models or ("resnet20",))[0]
    if not args.url and not (ctx.repository / "index.json").is_file():
        raise UsageError(
            f"no model repository at {ctx.repository}; build it with `python -m export.default_repository` "
            "(scripts/setup.sh does) or pass --repository / --url"
        )
    split = cifar_test_split(ctx.cifar_dir, CIFAR10)
    images = split.encoded[:: max(1, len(split.encoded) // 500)][:500]  # 500 images, every class
    workdir = scratch_dir("resnet-serve-soak-")  # the server's key and log, not the report
    launcher = None if args.url else Launcher(ctx.repository, Path(workdir.name))
    url = args.url or launcher.grpc_url
    try:
        log.info("soak: %s at concurrency %d for %.0f s against %s", model, concurrency, duration, url)
        references = references_for(url, model, images)
        bad = bad_inputs(images[0])
        root = launcher.process.pid if launcher else None
        with MemorySampler(root) as sampler:
            windows = asyncio.run(
                drive(
                    url, model, images, references, bad, concurrency=concurrency, duration_s=duration, window_s=window_s
                )  # fmt: skip
            )
            final = sampler.sample()
        events = launcher.supervisor_events() if launcher else []
    finally:
        if launcher is not None:
            launcher.stop()
        workdir.cleanup()
    rows = []
    for w in windows:
        end = w.start_s + window_s
        in_window = [s for t, s in sampler.samples if t - sampler.samples[0][0] <= end] or [final]
        rows.append(w.summary(in_window[-1], min(window_s, duration - w.start_s)))
    return {
        "suite": "soak",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "environment": environment(),
        "config": {
            "model": model,
            "concurrency": concurrency,
            "duration_s": duration,
            "window_s": window_s,
            "bad_fraction": 1 / BAD_EVERY,
            "bad_inputs": [name for name, _ in bad],
            "images": len(images),
            "server": args.url or "the supervised launcher on loopback (started by this run)",
            "repository": str(ctx.repository),
        },  # fmt: skip
        "windows": rows,
        "totals": totals(rows),
        "supervisor_events": events,
    }


def totals(rows: list[dict]) -> dict:
    keys = ("good_ok", "good_errors", "wrong_class", "bit_identical", "bad_refused", "bad_not_refused")
    out = {k: sum(r[k] for r in rows) for k in keys}
    out["max_abs_diff"] = max((r["max_abs_diff"] for r in rows), default=0.0)
    if len(rows) >= 2:  # growth after the first window (warm-up), per process
        first, last = rows[0]["rss_mb"], rows[-1]["rss_mb"]
        out["rss_growth_after_warmup_mb"] = {k: round(last[k] - first[k], 1) for k in last if k in first}
    out["p99_ms_per_window"] = [r["p99_ms"] for r in rows]
    return out


def markdown(results: dict) -> str:
    env, cfg, t = results["environment"], results["config"], results["totals"]
    lines = [
        f"# Soak: {cfg['model']}, concurrency {cfg['concurrency']}, {cfg['duration_s']:.0f} s, "
        f"{cfg['bad_fraction']:.0%} bad inputs",
        "",
        f"{results['started']}; {env['cpu_model']}, {env['cpu_cores']} cores; server: {cfg['server']}.",
        "Reproduce: `python benchmarks/run.py --suite soak --duration "
        f"{cfg['duration_s']:.0f} --out benchmarks/reports/soak`.",
        "",
        f"Good requests answered: {t['good_ok']:,}; errors on good requests: {t['good_errors']}; "
        f"a different top-1 class than before the soak: {t['wrong_class']}; bit-identical logits: "
        f"{t['bit_identical']:,} (largest difference {t['max_abs_diff']:.2e}).",
        f"Bad inputs refused with INVALID_ARGUMENT: {t['bad_refused']:,}; not refused: {t['bad_not_refused']}.",
        "",
        "| window | from s | good/s | p50 ms | p99 ms | max ms | good errors | bad refused | RSS MB by process |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["windows"]:
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mb"].items())
        lines.append(
            f"| {r['index']} | {r['start_s']:.0f} | {r['good_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.0f} | {r['good_errors']} | {r['bad_refused']} | {rss} |"
        )
    growth = t.get("rss_growth_after_warmup_mb")
    if growth:
        lines += ["", "RSS growth from the end of the first window to the end: "
                  + ", ".join(f"{k} {v:+.1f} MB" for k, v in growth.items()) + "."]  # fmt: skip
    if results["supervisor_events"]:
        lines += ["", "Supervisor events:", *[f"- {e}" for e in results["supervisor_events"]]]
    else:
        lines += ["", "The supervisor probed every model throughout and had nothing to repair."]
    return "\n".join(lines) + "\n"


def main(args, ctx) -> int:
    out = args.out or Path("benchmarks") / "results" / "soak"
    out.mkdir(parents=True, exist_ok=True)
    results = run_soak(args, ctx)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(markdown(results))
    print(markdown(results))
    failed = (
        results["totals"]["good_errors"] or results["totals"]["wrong_class"] or results["totals"]["bad_not_refused"]
    )
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover - run through benchmarks/run.py
    sys.exit("run it as: python benchmarks/run.py --suite soak --duration S")
