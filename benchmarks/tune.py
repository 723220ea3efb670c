"""Tune a network's served path on the host that will serve it, and write the winner into the repository.

    python -m benchmarks.tune --model resnet20 [--quick] [--concurrency 16] [--p99-ms 100]
        [--images-per-request 1] [--repository model_repository] [--build-dir build] [--out DIR] [--no-write]

Steps, all measured here (nothing assumed about the CPU):
1. the host: cores this process may use, VNNI/AMX/bf16 from /proc/cpuinfo, the GPU if any;
2. accuracy of every exported engine against FP32 on held-out images (not the calibration images): top-1
   within ``--top1-tolerance`` points where the images are labelled and the weights trained, else top-1
   agreement with FP32 of at least ``--min-agreement`` %; bf16 only where the CPU runs it natively;
3. offline figures of each accurate engine: engine only, and end to end (decode + preprocess + engine, the
   same JPEGs and threads as served);
4. served candidates on the real server, closed loop at ``--concurrency``: engine x request path (ensemble,
   one-step BYTES, one-step raw UINT8) x protocol (gRPC through tritonclient, HTTP through the client's
   lean wire, ``client.wire``), then classifier instances x threads (x OpenVINO streams) x batching window
   for the best of those. Every candidate runs ``--repeats`` times, interleaved with the others;
5. the winner: the highest median throughput whose median p99 is within the budget. If no candidate meets
   the budget, the closest one is named and nothing is written; if the repeats of the leading candidates
   disagree by more than 15% (a busy machine) that is said, and the fastest is written only if the rounds
   still back it (``choose``), else nothing is.

Writes OUT/tune.json (every candidate, every repeat, why each lost), OUT/tune.md and OUT/tune.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from resnet_serve import cli, settings
from resnet_serve.benchmarks.inputs import cifar_test_split, repeat_to
from resnet_serve.benchmarks.load import Payload, run_load
from resnet_serve.benchmarks.offline import time_engine
from resnet_serve.engines import Engine, load_engine
from resnet_serve.errors import ExitCode, ResnetServeError, UsageError
from resnet_serve.export.calibration import calibration_split
from resnet_serve.export.repository import (
    DEFAULT_ORDER,
    ServedModelFiles,
    host_profile,
    size_class,
    write_direct_model,
    write_ensemble_model,
    write_floor_model,
    write_preprocess_model,
    write_repository,
)
from resnet_serve.export.summary import ExportSummary
from resnet_serve.resnets.data import scan_labelled_folder
from resnet_serve.resnets.env import environment, host_capabilities
from resnet_serve.resnets.spec import CIFAR10_CLASSES, normalize, preprocess_pixels
from resnet_serve.scratch import scratch_dir
from resnet_serve.server import running
from resnet_serve.server.index import RepositoryIndex, classifier_of
from resnet_serve.server.triton import descendants, proc_stat

log = logging.getLogger(__name__)

WARMUP_S = 2.0  # at least this long under load before a candidate's first measurement
MAX_INSTANCES = 4  # stage 2 tries 1, 2 and up to this many classifier instances, sharing the cores
NOISE_LIMIT = 0.15  # repeats of a leading candidate that differ by more than this (max-min over median): busy
MIN_ROUNDS_OVER_DEFAULT = 2  # on a busy machine, a winner beats the untuned default in every one of at least this many
DEFAULT_BUDGET_MS = {"small": 100.0, "large": 1000.0}  # p99 budget by input size (CIFAR-sized / ImageNet-sized)
FLOOR = "serving floor"  # the head to head's model that answers zeros: the serving machinery's ceiling


class TuneFailed(ResnetServeError):
    """The tune step measured but could not choose (no candidate within budget, or a busy machine)."""

    exit_code = ExitCode.FAILED


@dataclass(frozen=True)
class Options:
    concurrency: int = 16
    images_per_request: int = 1
    p99_budget_ms: float | None = None  # None: DEFAULT_BUDGET_MS by input size
    duration_s: float = 3.0
    repeats: int = 2
    engines_served: int = 2  # engines (best offline end to end) taken to the served stage
    protocols: tuple[str, ...] = ("grpc", "http")
    delays_us: tuple[int, ...] = (0, 2000)
    top1_tolerance: float = 0.3
    min_agreement_pct: float = 99.0
    eval_images: int = 2000
    head_to_head_rounds: int = 0  # the leader and the references again, alone, in this many short rounds

    @classmethod
    def quick(cls, large: bool) -> Options:
        # ImageNet-sized: only the best engine offline goes on to the served stage, to stay within ~5 min here
        return cls(duration_s=5.0 if large else 3.0, eval_images=1000, engines_served=1 if large else 2)

    @classmethod
    def full(cls, large: bool) -> Options:
        return cls(
            duration_s=10.0 if large else 8.0,
            repeats=3,
            engines_served=2,
            delays_us=(0, 500, 2000, 5000),
            eval_images=10_000,
            head_to_head_rounds=6,
        )


@dataclass(frozen=True)
class Candidate:
    engine: str  # exported engine key, e.g. "openvino-int8"
    path: str  # ensemble | direct | direct-raw; floor | floor-raw: no work (``server/models/floor.py``)
    instances: int
    threads: int  # engine threads per instance
    delay_us: int  # dynamic batching window
    preferred: tuple[int, ...]  # preferred batch sizes
    protocol: str = "grpc"  # how the client sends: grpc (tritonclient) or http (client.wire)
    streams: int = 1  # OpenVINO streams per instance (engines.openvino): the batch cut into parts
    role: str = ""  # "untuned default", "FP32 default": the references every report compares against

    @property
    def label(self) -> str:
        if self.path.startswith("floor"):
            return f"no engine {self.path} {self.protocol} {self.instances}x delay {self.delay_us}us pref " + ",".join(
                map(str, self.preferred)
            )
        return (
            f"{self.engine} {self.path} {self.protocol} {self.instances}x{self.threads}t"
            f"{f'/{self.streams}s' if self.streams > 1 else ''} delay {self.delay_us}us "
            f"pref {','.join(map(str, self.preferred))}"
        )

    def profile(self, base, spec):
        return replace(
            base,
            classifier_instances=self.instances,
            classifier_threads=self.threads,
            classifier_streams=self.streams,
            max_queue_delay_us=self.delay_us,
            preferred_batch_sizes={**base.preferred_batch_sizes, size_class(spec): self.preferred},
        )


@dataclass
class Measured:
    candidate: Candidate
    runs: list[dict] = field(default_factory=list)
    verdict: str = ""

    @property
    def throughput(self) -> float:
        return statistics.median(r["throughput_img_s"] for r in self.runs) if self.runs else 0.0

    @property
    def p99(self) -> float:
        values = [r.get("latency_ms_p99") for r in self.runs if r.get("latency_ms_p99") is not None]
        return statistics.median(values) if values else float("inf")

    @property
    def errors(self) -> int:
        return sum(r["errors"] for r in self.runs)

    @property
    def spread(self) -> float:
        """How much the repeats disagree: (max - min) / median of the throughput."""
        values = [r["throughput_img_s"] for r in self.runs]
        return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 and min(values) > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "label": self.candidate.label,
            **asdict(self.candidate),
            "throughput_img_s": round(self.throughput, 1),
            "latency_ms_p99": round(self.p99, 2) if self.p99 != float("inf") else None,
            "errors": self.errors,
            "repeat_spread_pct": round(100 * self.spread, 1),
            "verdict": self.verdict,
            "runs": self.runs,
        }


# ---- held-out images and accuracy ------------------------------------------------------------------


@dataclass
class HeldOut:
    encoded: list[bytes]
    labels: np.ndarray | None
    pixels: np.ndarray  # uint8 NHWC, as served
    source: str


def held_out_images(summary: ExportSummary, limit: int, data_dir: Path | None) -> HeldOut:
    """Images the INT8 calibration did not see: the CIFAR-10 test split for CIFAR models, the ImageNet
    sample minus the calibration pick for ImageNet models, or ``data_dir`` (an ImageFolder, or flat files)."""
    spec = summary.model.spec
    if data_dir is None and spec.name == "cifar10":  # the test split, as files or the official batches
        split = cifar_test_split(settings.cifar_dir(), spec)
        order = np.random.default_rng(0).permutation(len(split.encoded))[:limit]
        # labelled only for a model of CIFAR-10's classes: another 10-class model of CIFAR's sizes (its own
        # labels) is checked by agreement with FP32 on these images
        labels = split.labels[order] if summary.labels() == list(CIFAR10_CLASSES) else None
        return HeldOut([split.encoded[i] for i in order], labels, split.pixels[order], split.source)
    data_dir = Path(data_dir or settings.imagenet_sample_dir())
    if not data_dir.is_dir():
        raise UsageError(f"held-out images for {spec.name}: {data_dir} does not exist; pass --eval-data DIR")
    subfolders = [d for d in data_dir.iterdir() if d.is_dir()]
    if subfolders:
        _, samples = scan_labelled_folder(data_dir, summary.labels())
        order = np.random.default_rng(0).permutation(len(samples))[:limit]
        files, labels = [samples[i][0] for i in order], np.array([samples[i][1] for i in order])
    else:
        calibration = calibration_details(summary)
        if calibration and Path(calibration["source"]).resolve() == data_dir.resolve():
            _, files = calibration_split(data_dir, calibration["images"], seed=calibration.get("seed", 0))
        else:
            files = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        files, labels = files[:limit], None
    if not files:
        raise UsageError(f"no held-out images in {data_dir}; pass --eval-data DIR")
    encoded = [f.read_bytes() for f in files]
    pixels = np.stack([preprocess_pixels(b, spec, source=str(f)) for b, f in zip(encoded, files, strict=True)])
    return HeldOut(encoded, labels, pixels, str(data_dir))


def calibration_details(summary: ExportSummary) -> dict | None:
    for artifact in summary.artifacts:
        details = artifact.details.get("calibration") if artifact.details else None
        if details and "source" in details:
            return details
    return None


def load_engines(summary: ExportSummary, threads: int) -> dict[str, Engine]:
    """Every exported CPU engine of ``summary``, loaded once for the accuracy check and the offline figures."""
    return {
        a.name: load_engine(a.path, threads=threads)
        for a in summary.artifacts
        if a.runnable and a.engine in ("onnxruntime", "openvino")
    }


def accuracy_check(
    summary: ExportSummary, held: HeldOut, host: dict, options: Options, engines: dict[str, Engine] | None = None
) -> dict[str, dict]:
    """Every exported engine against the FP32 reference on the held-out images; ``ok`` says whether it may
    be served. Top-1 where the images are labelled and the weights trained, else top-1 agreement; where
    FP32 itself predicts almost one class (e.g. random weights), agreement proves little, so the centred
    logits must also match (cosine >= 0.99), and the report says so."""
    spec = summary.model.spec
    x = normalize(held.pixels, spec)
    engines = engines if engines is not None else load_engines(summary, host["cores"])
    artifacts = [summary.artifact(name) for name in engines]
    reference = next((a for a in artifacts if a.precision == "fp32"), None)
    if reference is None:
        raise UsageError(f"{summary.model.name} has no FP32 engine to compare with; export fp32 too")
    ref = engines[reference.name].infer_all(x)
    labelled = held.labels is not None and summary.model.weights != "random"
    distinct = len(set(ref.argmax(1).tolist()))
    degenerate = distinct < min(10, max(2, len(x) // 5))
    results = {}
    for artifact in artifacts:
        logits = ref if artifact is reference else engines[artifact.name].infer_all(x)
        agree = 100.0 * float((logits.argmax(1) == ref.argmax(1)).mean())
        centred = [v - v.mean(1, keepdims=True) for v in (logits, ref)]
        cosine = float(
            np.min(
                (centred[0] * centred[1]).sum(1)
                / np.linalg.norm(centred[0], axis=1)
                / np.linalg.norm(centred[1], axis=1)
            )
        )
        row = {
            "engine": artifact.name,
            "images": len(x),
            "reference": reference.name,
            "top1_agreement_pct": round(agree, 2),
            "min_logit_cosine": round(cosine, 5),
        }
        if labelled:
            top1 = 100.0 * float((logits.argmax(1) == held.labels).mean())
            ref_top1 = 100.0 * float((ref.argmax(1) == held.labels).mean())
            row.update(top1_pct=round(top1, 2), top1_delta_pct=round(top1 - ref_top1, 2))
            ok, why = top1 >= ref_top1 - options.top1_tolerance, f"top-1 {top1 - ref_top1:+.2f} points vs FP32"
        else:
            ok, why = agree >= options.min_agreement_pct, f"top-1 agreement with FP32 {agree:.1f}%"
            if degenerate:
                ok = ok and cosine >= 0.99
                why += (
                    f" (FP32 predicts only {distinct} distinct classes on these images, so agreement proves little; "
                    f"centred logits cosine >= {cosine:.4f})"
                )
        if artifact.precision == "bf16" and not host["native_bf16"]:
            ok, why = False, "this CPU has no native bf16 (no avx512_bf16 / amx_bf16): it would run emulated"
        row.update(ok=bool(ok), why=why)
        results[artifact.name] = row
        log.info("tune accuracy %-18s %s: %s", artifact.name, "ok" if ok else "REJECTED", why)
    return results


# ---- offline figures -------------------------------------------------------------------------------


def offline_figures(engine: Engine, held: HeldOut, spec, batch: int, seconds: float) -> dict:
    """Engine-only img/s on preprocessed batches (``offline.time_engine``), and end to end (decode +
    preprocess + engine, one image after another as the served model does) on the same JPEGs, with the
    same engine and threads; the end to end's CPU per image counts every thread of this process (the
    engine's included)."""
    engine_only = time_engine(engine, normalize(repeat_to(held.pixels, batch), spec), duration_s=seconds)
    done, start, cpu, i = 0, time.perf_counter(), time.process_time(), 0
    decoding = waiting = 0.0  # CPU seconds: this thread decoding; the process's other threads meanwhile
    while time.perf_counter() - start < seconds:
        chunk = [held.encoded[(i + k) % len(held.encoded)] for k in range(batch)]
        process0, thread0 = time.process_time(), time.thread_time()
        inputs = normalize(np.stack([preprocess_pixels(b, spec) for b in chunk]), spec)
        process1, thread1 = time.process_time(), time.thread_time()
        decoding += thread1 - thread0
        waiting += max(0.0, (process1 - process0) - (thread1 - thread0))  # the engine's threads, between calls
        engine.infer(inputs)
        done, i = done + batch, i + batch
    end_to_end = done / (time.perf_counter() - start)
    total = time.process_time() - cpu
    per_image = 1e6 / max(1, done)
    return {
        "batch": batch,
        "threads": engine.info()["threads"],
        "engine_img_s": round(engine_only["throughput_img_s"], 1),
        "end_to_end_img_s": round(end_to_end, 1),
        "end_to_end_cpu_us_per_image": round(total * per_image, 1),
        # the same CPU split: decoding and preprocessing, the engine's calls, and what the engine's threads
        # spent between its calls while this thread decoded the next batch (they wait actively)
        "decode_cpu_us_per_image": round(decoding * per_image, 1),
        "engine_calls_cpu_us_per_image": round((total - decoding - waiting) * per_image, 1),
        "engine_waiting_cpu_us_per_image": round(waiting * per_image, 1),
    }


def cpu_split(final: list[Measured], summary: ExportSummary, held: HeldOut, spec) -> dict:
    """Where the head-to-head leader's CPU per image goes: the serving floor (client, server and the
    Python-backend hop with no work), the model's own work measured apart (``offline_figures`` in this
    process, with the leader's engine, threads and streams, at the batch its engine ran in the head to
    head), and the rest, lost to the processes taking turns on the cores. A leader that spent only floor +
    work would serve the untuned default's CPU per image over that sum times the default's throughput: a
    rough ceiling of the ratio on this host (the floor runs smaller batches than the leader, so it errs low).
    The work is split further, from the same measurement: decoding and preprocessing, the engine's calls,
    and what the engine's threads spent between calls; without that last part the ceiling is higher still."""
    leader, roles = final[0], {m.candidate.role: m for m in final[1:]}
    if FLOOR not in roles or "untuned default" not in roles:
        return {}

    def served(m: Measured) -> float:
        return statistics.median(sum(r["cpu_us_per_image"].values()) for r in m.runs)

    c = leader.candidate
    engine_batches = [max((v for v in r["avg_batch"].values() if v), default=1.0) for r in leader.runs]
    batch = max(1, round(statistics.median(engine_batches)))
    artifact = next(a for a in summary.artifacts if a.name == c.engine)
    engine = load_engine(artifact.path, threads=c.threads, **({"streams": c.streams} if c.streams > 1 else {}))
    offline = offline_figures(engine, held, spec, batch, 1.5)
    work, waiting = offline["end_to_end_cpu_us_per_image"], offline["engine_waiting_cpu_us_per_image"]
    total, floor, default = served(leader), served(roles[FLOOR]), served(roles["untuned default"])
    busy = work - waiting
    return {
        "leader": round(total, 1),
        "serving_floor": round(floor, 1),
        "work_offline": work,
        "work_batch": batch,
        "decode_preprocess": offline["decode_cpu_us_per_image"],
        "engine_calls": offline["engine_calls_cpu_us_per_image"],
        "engine_waiting_between_calls": waiting,
        "lost_sharing_cores": round(total - floor - work, 1),
        "untuned_default": round(default, 1),
        "ceiling_over_untuned_default": round(default / (floor + work), 2),
        "ceiling_without_engine_waiting": round(default / (floor + busy), 2),
    }


# ---- served measurement ----------------------------------------------------------------------------


def payload_for(model: str, path: str, held: HeldOut, images_per_request: int, requests: int = 256) -> Payload:
    encoded = held.encoded
    if path in ("direct-raw", "floor-raw"):
        batches = [np.frombuffer(encoded[i % len(encoded)], np.uint8)[None, :] for i in range(requests)]
        return Payload(model, "image", "UINT8", batches, "jpeg (raw bytes)")
    batches = []
    for r in range(requests):
        rows = [encoded[(r * images_per_request + k) % len(encoded)] for k in range(images_per_request)]
        batches.append(np.array(rows, dtype=np.object_).reshape(-1, 1))
    return Payload(model, "image", "BYTES", batches, f"jpeg x{images_per_request}")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = proc_stat(pid)
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return out


def process_role(pid: int, own: int) -> str:
    if pid == own:
        return "client"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "other"
    return "server" if command.endswith("tritonserver") else "models"


def drive(server, protocol: str, payload: Payload, stats: list[str], concurrency: int, seconds: float) -> dict:
    """One closed-loop run (``benchmarks.load.run_load``) over ``protocol``."""
    url = server.grpc_url if protocol == "grpc" else server.http_url
    load = run_load(url, protocol, payload, stats_models=stats, concurrency=concurrency, duration_s=seconds)
    return asyncio.run(load)


def measure(
    candidates: list[Candidate], files: ServedModelFiles, held: HeldOut, options: Options, base, stage: int = 1
) -> list[Measured]:
    """Serve every candidate from one repository on the real server and drive each in closed loop,
    ``options.repeats`` rounds with the candidates interleaved (a busy spell shows up as disagreement)."""
    spec = files.spec
    results = [Measured(c) for c in candidates]
    with scratch_dir("resnet-serve-tune-") as tmp:
        repo = Path(tmp) / "repository"
        preprocess = write_preprocess_model(repo, files, base)
        names = []
        for i, c in enumerate(candidates):
            name = f"candidate_{i:02d}"
            profile = c.profile(base, spec)
            if c.path == "ensemble":
                write_ensemble_model(repo, name, files, c.engine, profile, preprocess)
            elif c.path.startswith("floor"):
                write_floor_model(repo, name, files, profile, raw=c.path == "floor-raw")
            else:
                write_direct_model(repo, name, files, c.engine, profile, raw=c.path == "direct-raw")
            names.append(name)
        with running(repo, http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=600.0) as server:
            own = os.getpid()
            for round_ in range(options.repeats):
                order = list(range(len(candidates)))
                order = order[round_ % len(order) :] + order[: round_ % len(order)]
                for i in order:
                    c, name = candidates[i], names[i]
                    payload = payload_for(name, c.path, held, options.images_per_request)
                    stats = [name] if c.path != "ensemble" else [name, preprocess, classifier_of(name)]

                    if round_ == 0:  # warm the engine, the batcher and the connection before measuring
                        warmup_s = max(WARMUP_S, options.duration_s / 2)
                        drive(server, c.protocol, payload, stats, options.concurrency, warmup_s)
                    pids = [own, *descendants(own)]
                    before = cpu_seconds(pids)
                    r = drive(server, c.protocol, payload, stats, options.concurrency, options.duration_s)
                    after = cpu_seconds(pids)
                    cpu: dict[str, float] = {}
                    for pid, end in after.items():
                        role = process_role(pid, own)
                        cpu[role] = cpu.get(role, 0.0) + end - before.get(pid, end)
                    images = max(1, r["requests_ok"] * payload.images_per_request)
                    run = {
                        "stage": stage,
                        "round": round_,
                        **{
                            k: r.get(k)
                            for k in ("throughput_img_s", "latency_ms_p50", "latency_ms_p99", "errors", "requests_ok")
                        },
                        "error_examples": r["error_examples"],
                        "cpu_us_per_image": {k: round(1e6 * v / images, 1) for k, v in sorted(cpu.items())},
                        "avg_batch": {m: s.get("avg_batch_size") for m, s in r["server"].items()},
                    }
                    results[i].runs.append(run)
                    log.info(
                        "tune %-62s round %d: %8.1f img/s  p99 %7.2f ms  errors %d",
                        c.label,
                        round_,
                        run["throughput_img_s"],
                        run["latency_ms_p99"] or float("nan"),
                        run["errors"],
                    )
    return results


# ---- choosing --------------------------------------------------------------------------------------


def choose(measured: list[Measured], budget_ms: float) -> tuple[Measured | None, str]:
    """The winner and the verdict ("ok", "impossible budget: ...", "noisy: ..."); every candidate's
    ``verdict`` says why it won or lost.

    The fastest median within the budget wins. Where the repeats of a leading candidate disagree by more
    than ``NOISE_LIMIT`` (a busy machine), it still wins if it served more than every other candidate in
    every round they shared, or, where some other candidate beat it in a round (the two are not told apart),
    if it served more than the untuned default in every round they shared (``ratios_over_the_default``):
    which of the fastest is chosen may then be noise, that it beats the deployed model is not. Otherwise no
    winner: the verdict is "noisy"."""
    eligible = [m for m in measured if m.errors == 0 and m.p99 <= budget_ms]
    for m in measured:
        if m.errors:
            m.verdict = f"{m.errors} failed requests ({(m.runs[-1]['error_examples'] or ['?'])[0]})"
        elif m.p99 > budget_ms:
            m.verdict = f"p99 {m.p99:.1f} ms is over the {budget_ms:g} ms budget"
    if not eligible:
        finite = [m for m in measured if m.errors == 0] or measured
        closest = min(finite, key=lambda m: m.p99)
        over = closest.p99 - budget_ms
        return None, (
            f"impossible budget: no candidate kept p99 within {budget_ms:g} ms; "
            f"the closest was {closest.candidate.label} "
            f"with p99 {closest.p99:.1f} ms ({over:.1f} ms, {100 * over / budget_ms:.0f}% over) at "
            f"{closest.throughput:.0f} img/s; raise --p99-ms or lower --concurrency"
        )
    eligible.sort(key=lambda m: m.throughput, reverse=True)
    winner, leaders = eligible[0], eligible[:3]
    noisy = [m for m in leaders if m.spread > NOISE_LIMIT]
    verdict, close = "ok", []  # close: candidates that beat the winner in some round, on a noisy machine
    if noisy:
        worst = max(noisy, key=lambda m: m.spread)
        noise = (
            f"the repeats of {len(noisy)} leading candidate(s) disagree by up to {100 * worst.spread:.0f}% "
            f"(more than {100 * NOISE_LIMIT:.0f}%; worst: {worst.candidate.label})"
        )
        close = [m for m in eligible[1:] if not led_every_round(winner, m)]
        over_default = ratios_over_the_default(winner, measured) if close else []
        if close and not over_default:
            for m in noisy:
                m.verdict = f"repeats disagree by {100 * m.spread:.0f}%"
            return None, (
                f"noisy: {noise}; this machine is busy, so the ranking would be noise. Rerun when it is quiet "
                "(or with more --repeats / a longer --duration)"
            )
        if close:
            verdict = (
                f"ok, on a noisy machine: {noise}; the winner was not told apart from {len(close)} other "
                f"candidate(s) (each served more than it in some round: {listed(close)}), "
                f"but it served more than the untuned default in each of the {len(over_default)} rounds both ran "
                f"({min(over_default):.2f}-{max(over_default):.2f}x)"
            )
        else:
            verdict = (
                f"ok, on a noisy machine: {noise}, but the winner was ahead of every other candidate in every round"
            )
    winner.verdict = "winner"
    for m in eligible[1:]:
        m.verdict = f"{100 * (1 - m.throughput / winner.throughput):.1f}% less throughput than the fastest"
        if m in close:
            m.verdict += " (not told apart from it on this machine)"
    return winner, verdict


def listed(measured: list[Measured], most: int = 3) -> str:
    names = [m.candidate.label for m in measured[:most]]
    return ", ".join(names) + (f" and {len(measured) - most} more" if len(measured) > most else "")


def ratios_over_the_default(winner: Measured, measured: list[Measured]) -> list[float]:
    """The winner's throughput over the untuned default's in each round both ran, where it served more in every
    one of at least ``MIN_ROUNDS_OVER_DEFAULT`` rounds; else [] (no default among the candidates, the winner is
    the default, too few rounds, or a round the default won). On a busy machine the ranking among the fastest
    candidates can be noise, but a candidate that beats the deployed model round after round is worth deploying
    whichever of them it is."""
    default = next((m for m in measured if m.candidate.role == "untuned default"), None)
    if default is None or default is winner:
        return []
    ratios = [mine / theirs for mine, theirs in paired(winner, default) if theirs > 0]
    return ratios if len(ratios) >= MIN_ROUNDS_OVER_DEFAULT and min(ratios) > 1.0 else []


def paired(a: Measured, b: Measured) -> list[tuple[float, float]]:
    """The throughputs of ``a`` and ``b`` in each round both ran (a round interleaves the candidates of one
    stage, so a busy spell hits both alike)."""
    theirs = {(r.get("stage", 1), r["round"]): r["throughput_img_s"] for r in b.runs}
    mine = {(r.get("stage", 1), r["round"]): r["throughput_img_s"] for r in a.runs}
    return [(value, theirs[key]) for key, value in mine.items() if key in theirs]


def led_every_round(leader: Measured, other: Measured) -> bool:
    """Whether ``leader`` served more than ``other`` in each round both ran; for candidates never measured in
    the same round, whether its slowest repeat beat the other's fastest."""
    pairs = paired(leader, other)
    if not pairs:
        slowest = min(r["throughput_img_s"] for r in leader.runs) if leader.runs else 0.0
        return slowest > max((r["throughput_img_s"] for r in other.runs), default=0.0)
    return all(mine > their for mine, their in pairs)


def paired_ratio(a: Measured, b: Measured) -> float:
    """``a``'s throughput over ``b``'s: the median over the rounds both ran (robust to a machine whose speed
    drifts between rounds), else the ratio of the medians."""
    ratios = [mine / their for mine, their in paired(a, b) if their > 0]
    if ratios:
        return statistics.median(ratios)
    return a.throughput / b.throughput if b.throughput else float("nan")


def ratio_figures(best: Measured, references: dict[str, Measured]) -> dict:
    """``best`` over each reference: the paired ratio, the range of the per-round ratios, the rounds paired;
    keyed by the reference's role (``untuned_default``), named for the reader by ``named``."""
    figures: dict = {"ratios": {}, "ratio_ranges": {}, "ratios_paired_rounds": {}}
    for role, m in references.items():
        if m is best or not m.throughput:
            continue
        key = role.replace(" ", "_")
        rounds = [mine / their for mine, their in paired(best, m) if their > 0]
        figures["ratios"][key] = round(paired_ratio(best, m), 2)
        figures["ratios_paired_rounds"][key] = len(rounds)
        if rounds:
            figures["ratio_ranges"][key] = [round(min(rounds), 2), round(max(rounds), 2)]
    return figures


def named(figures: dict, who: str) -> dict:
    """``ratio_figures`` with every key named for whose ratio it is: ``winner_over_untuned_default``."""
    return {part: {f"{who}_over_{key}": v for key, v in values.items()} for part, values in figures.items()}


def head_to_head_seconds(options: Options) -> float:
    """Half the stages' duration, at least 3 s (or all of it where that is shorter)."""
    return max(min(options.duration_s, 3.0), options.duration_s / 2)


def head_to_head(
    best: Measured, references: dict[str, Measured], files, held: HeldOut, options: Options, base
) -> list[Measured]:
    """The chosen (or leading) candidate and the references alone on one server, ``head_to_head_rounds``
    short interleaved rounds: seconds apart instead of the minutes a stage's round takes, so the per-round
    ratios see the same machine. Beside them the serving floor: the leader's input form (an ensemble's is the
    one-step BYTES form), protocol, batching and instances with a model that does no work, the ceiling the
    serving machinery leaves."""
    path = "floor-raw" if best.candidate.path == "direct-raw" else "floor"
    floor = replace(best.candidate, engine="none", path=path, threads=0, streams=1, role=FLOOR)
    candidates = [best.candidate] + [m.candidate for m in references.values() if m is not best] + [floor]
    quick = replace(options, repeats=options.head_to_head_rounds, duration_s=head_to_head_seconds(options))
    log.info("tune: head to head, %d rounds of %g s: %s", quick.repeats, quick.duration_s, best.candidate.label)
    return measure(candidates, files, held, quick, base, stage=3)


# ---- the stages ------------------------------------------------------------------------------------


def baseline_engine(keys: list[str]) -> str:
    return next((k for k in DEFAULT_ORDER if k in keys), keys[0])


def tune(
    export_dir: Path,
    repository: Path | None,
    options: Options,
    *,
    data_dir: Path | None = None,
    sample_image: Path | None = None,
    report: Path | None = None,
) -> dict:
    summary = ExportSummary.load(export_dir)
    spec = summary.model.spec
    host = host_capabilities()
    cores = host["cores"]
    budget = options.p99_budget_ms or DEFAULT_BUDGET_MS[size_class(spec)]
    base = host_profile()
    files = ServedModelFiles.load(export_dir, sample_image)
    held = held_out_images(summary, options.eval_images, data_dir)
    started = time.time()

    engines = load_engines(summary, cores)
    accuracy = accuracy_check(summary, held, host, options, engines)
    accurate = [k for k, row in accuracy.items() if row["ok"]]
    if not accurate:
        raise TuneFailed(
            f"no engine of {summary.model.name} passed the accuracy check on {len(held.encoded)} held-out images: "
            + "; ".join(f"{k}: {row['why']}" for k, row in accuracy.items())
        )
    batch = min(64, base.max_batch(spec))
    offline = {k: offline_figures(engines[k], held, spec, batch, 1.5) for k in accurate}
    engines.clear()  # the served stage loads its own copies in the model processes
    ranked = sorted(accurate, key=lambda k: offline[k]["end_to_end_img_s"], reverse=True)

    keys = [a.name for a in summary.artifacts if a.runnable]
    untuned = Candidate(
        baseline_engine(keys),
        "ensemble",
        1,
        cores,
        base.max_queue_delay_us,
        base.preferred(spec),
        role="untuned default",
    )
    fp32_keys = [k for k in keys if k.endswith("-fp32")]
    fp32 = replace(untuned, engine=baseline_engine(fp32_keys), role="FP32 default") if fp32_keys else None
    paths = ("ensemble", "direct") + (("direct-raw",) if options.images_per_request == 1 else ())
    stage1 = [untuned] + ([fp32] if fp32 and fp32.engine != untuned.engine else [])
    for engine in ranked[: options.engines_served]:
        for path in paths:
            for protocol in options.protocols:
                c = replace(untuned, engine=engine, path=path, protocol=protocol, role="")
                if c not in [replace(s, role="") for s in stage1]:
                    stage1.append(c)
    log.info("tune %s: stage 1, %d candidates (engine x request path x protocol)", summary.model.name, len(stage1))
    first = measure(stage1, files, held, options, base)
    servable = [m for m in first if m.candidate.engine in accurate]
    best, _ = choose(servable, budget) if servable else (None, "")
    lead = best or max(servable or first, key=lambda m: m.throughput)

    # stage 2: how the leading engine and path are served (instances x threads x batching window)
    c0 = lead.candidate
    in_flight = options.concurrency * options.images_per_request
    most = min(cores, MAX_INSTANCES)  # each instance is a Python process holding its own engine
    # (instances, threads, streams, batches in flight per instance)
    splits = sorted({(1, cores, 1, 1), (2, max(1, cores // 2), 1, 1), (most, max(1, cores // most), 1, 1)})
    if c0.engine.startswith("openvino") and cores > 1:  # one instance, its batch cut across streams
        splits.append((1, cores, min(cores, in_flight), 1))
    if in_flight > 1:
        # one instance, two batches in flight: the engine runs one while the client and the server turn
        # the other's answers into new requests (with every request in one batch they take turns)
        splits.append((1, cores, 1, 2))
    stage2 = []
    for instances, threads, streams, batches in splits:
        preferred = (max(1, min(base.max_batch(spec), in_flight // (instances * batches))),)
        for delay in options.delays_us:
            c = Candidate(c0.engine, c0.path, instances, threads, delay, preferred, c0.protocol, streams)
            if c != replace(c0, role=""):
                stage2.append(c)
    log.info(
        "tune %s: stage 2, %d candidates (instances x threads x streams x batching)", summary.model.name, len(stage2)
    )
    # stage 1's leader and the references run again beside them, so the winner is compared with them
    # round by round, not only across stages measured minutes apart
    again = [lead] + [m for m in first if m.candidate.role and m is not lead]
    second = measure([m.candidate for m in again] + stage2, files, held, options, base, stage=2) if stage2 else []
    for m, rerun in zip(again, second, strict=False):  # nothing to add where stage 2 has no candidates
        m.runs += rerun.runs
    second = second[len(again) :]

    everything = [m for m in first + second if m.candidate.engine in accurate or m.candidate.role]
    contenders = [m for m in everything if m.candidate.engine in accurate]
    for m in everything:
        m.verdict = ""  # stage 1's provisional choice is decided again among all the candidates
    winner, verdict = choose(contenders, budget)
    for m in everything:
        if m.candidate.engine not in accurate:
            m.verdict = f"not servable: {accuracy.get(m.candidate.engine, {}).get('why', 'no accuracy check')}"

    references = {m.candidate.role: m for m in everything if m.candidate.role}
    result = {
        "model": summary.model.name,
        "weights": summary.model.weights,
        "host": host,
        "environment": environment(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "options": {**asdict(options), "p99_budget_ms": budget},
        "held_out": {"images": len(held.encoded), "labelled": held.labels is not None, "source": held.source},
        "accuracy": accuracy,
        "offline": offline,
        "references": {
            role: {"label": m.candidate.label, "throughput_img_s": round(m.throughput, 1), "latency_ms_p99": m.p99}
            for role, m in references.items()
        },
    }
    # the ratios of the winner or, where none was chosen (a noisy machine), of the fastest candidate within
    # the budget, named as such: the figures are measured either way, only the choice is withheld
    best = winner or max(
        (m for m in contenders if m.errors == 0 and m.p99 <= budget), key=lambda m: m.throughput, default=None
    )
    if best:
        stages = ratio_figures(best, references)
        figures, ratios_from, h2h = stages, "stages", None
        if options.head_to_head_rounds and any(m is not best for m in references.values()):
            final = head_to_head(best, references, files, held, options, base)
            h2h = {
                "rounds": options.head_to_head_rounds,
                "duration_s": head_to_head_seconds(options),
                "candidates": [m.as_dict() for m in final],
            }
            figures, ratios_from = ratio_figures(final[0], {m.candidate.role: m for m in final[1:]}), "head to head"
            h2h["cpu_us_per_image"] = cpu_split(final, summary, held, spec)
        winner, verdict = confirm(winner, verdict, figures, ratios_from)
        who = "winner" if winner else "leader"
        result["ratios_of"] = who if winner else f"leader, not chosen: {best.candidate.label}"
        result |= named(figures, who)
        result["ratios_from"] = ratios_from
        if h2h:  # the same ratios from the stages' rounds, for comparison
            result["head_to_head"] = {**h2h, "stage_ratios": named(stages, who)["ratios"]}
        alone = offline.get(best.candidate.engine)
        if alone:
            result["ratios"]["served_over_offline_engine_only"] = round(best.throughput / alone["engine_img_s"], 2)
            result["ratios"]["served_over_offline_end_to_end"] = round(best.throughput / alone["end_to_end_img_s"], 2)
    result |= {
        "candidates": [m.as_dict() for m in everything],  # after the final comparison: its verdicts included
        "verdict": verdict,
        "winner": winner.as_dict() if winner else None,
        "report": str(report) if report else None,
        "seconds": round(time.time() - started, 1),  # the head to head included
    }
    if winner and repository is not None:
        write_winner(repository, export_dir, files, winner, base, result, sample_image)
    return result


def unconfirmed(figures: dict, ratios_from: str) -> str:
    """Why the final comparison overrules the stages' winner, "" where it does not. The winner must serve
    more than the untuned default in the ratio the report gives (``ratio_figures`` of the head to head where
    one ran, else of the stages' paired rounds): a stage leader that then serves no more than the deployed
    model led by noise, and changing the deployment for it gains nothing."""
    ratio = figures["ratios"].get("untuned_default")
    if ratio is None or ratio > 1.0:
        return ""
    low, high = figures["ratio_ranges"].get("untuned_default", (ratio, ratio))
    where = "in the head to head" if ratios_from == "head to head" else "in the paired rounds"
    return f"{where} it served {ratio:.2f}x the untuned default ({low:.2f}-{high:.2f}x per round)"


def confirm(winner: Measured | None, verdict: str, figures: dict, ratios_from: str) -> tuple[Measured | None, str]:
    """The stages' winner and verdict after the final comparison (``figures``, from ``ratios_from``): unchanged,
    or no winner and a "not confirmed" verdict where ``unconfirmed`` gives a reason, which becomes the leader's
    own verdict."""
    doubt = unconfirmed(figures, ratios_from) if winner else ""
    if not doubt:
        return winner, verdict
    winner.verdict = doubt
    return None, f"not confirmed: {doubt}; a winner that serves no more than the default is not written"


def evidence(result: dict) -> dict:
    """What the repository index records of a tuning: the choice, its figures and where the report is."""
    w = result["winner"]
    return {
        "choice": w["label"],
        "protocol": w["protocol"],  # how clients should send to get these figures
        "throughput_img_s": w["throughput_img_s"],
        "latency_ms_p99": w["latency_ms_p99"],
        "budget_ms": result["options"]["p99_budget_ms"],
        "concurrency": result["options"]["concurrency"],
        "accuracy": result["accuracy"][w["engine"]]["why"],
        "ratios": result.get("ratios", {}),
        "host": {k: result["host"][k] for k in ("cpu_model", "cores", "flags")},
        "tuned": result["started"],
        "report": result.get("report"),
    }


def write_winner(repository: Path, export_dir: Path, files, winner: Measured, base, result: dict, sample_image) -> None:
    """Rewrite the network's models with the winner as its default. A repository that served only some of the
    exported engines keeps serving them and gains the winner's engine, if it was not among them (the tune step
    measures every engine exported in ``export_dir``)."""
    c = winner.candidate
    existing = RepositoryIndex.load(repository).networks.get(files.arch)
    engines = tuple(e.key for e in existing.engines) if existing else None
    if engines is not None and c.engine not in engines:
        log.info("tune %s: %s was not served in %s; adding it for the winner", files.arch, c.engine, repository)
        engines += (c.engine,)
    write_repository(
        repository,
        export_dir,
        profile=c.profile(base, files.spec),
        sample_image=sample_image,
        engines=engines,
        default_engine=c.engine,
        default_path=c.path,
        tuning=evidence(result),
    )
    log.info("tune %s: wrote the winner into %s: %s", files.arch, repository, c.label)


def tune_default_repository(repository: Path, build_dir: Path, out_root: Path | None = None) -> dict[str, str]:
    """Tune every network of a repository built by ``export.default_repository`` (quick mode) and write each
    winner into it; a network whose tuning cannot choose keeps its untuned default, and the index says why.
    Returns each network's verdict."""
    from resnet_serve.benchmarks import tune_report

    verdicts = {}
    index = RepositoryIndex.load(repository)
    for arch in list(index.networks):
        export_dir = build_dir / arch
        large = size_class(ExportSummary.load(export_dir).model.spec) == "large"
        out = (out_root or build_dir / "tune") / arch
        try:
            result = tune(export_dir, repository, Options.quick(large), report=out / "tune.md")
        except ResnetServeError as exc:  # e.g. no held-out images for this dataset here
            result = {"winner": None, "verdict": f"not tuned: {exc}"}
        else:
            result["command"] = f"python -m benchmarks.tune --model {arch} --quick"
            tune_report.write(result, out)
        verdicts[arch] = result["verdict"]
        if result["winner"] is None:
            log.warning("tune %s: kept the untuned default (%s)", arch, result["verdict"])
            index = RepositoryIndex.load(repository)
            index.networks[arch].tuning = {"verdict": result["verdict"], "report": str(out / "tune.md")}
            index.save(repository)
    return verdicts


# ---- CLI -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", help="the exported network (a folder of --build-dir)")
    p.add_argument("--build-dir", type=Path, help=f"exported engines (default: ${settings.BUILD_ENV} or build)")
    p.add_argument("--repository", type=Path, help=f"where the winner goes (default: ${settings.REPOSITORY_ENV})")
    p.add_argument("--no-write", action="store_true", help="measure and report only")
    p.add_argument(
        "--quick", action="store_true", help="short runs, 2 repeats, 2 engines served (1 for ImageNet sizes): < 5 min"
    )
    p.add_argument("--concurrency", type=cli.positive_int, help="requests in flight (default 16)")
    p.add_argument("--images-per-request", type=cli.positive_int, help="JPEGs per request (default 1)")
    p.add_argument(
        "--p99-ms",
        type=cli.positive_float,
        help="p99 latency budget (default 100 ms CIFAR-sized, 1000 ms ImageNet-sized)",
    )
    p.add_argument("--protocols", help="comma-separated protocols the client may use: grpc,http (default both)")
    p.add_argument("--duration", type=cli.positive_float, help="seconds per measurement")
    p.add_argument(
        "--repeats", type=cli.positive_int, help="measurements per candidate (>= 2 to detect a busy machine)"
    )
    p.add_argument(
        "--head-to-head",
        type=cli.non_negative_int,
        help="rounds of the final comparison of the leader with the references (default 6; quick mode 0: the "
        "ratios come from the stages' rounds)",
    )
    p.add_argument("--eval-data", type=Path, help="held-out images (ImageFolder with labels, or a flat folder)")
    p.add_argument("--sample-image", type=Path, help="warmup image for the written models")
    p.add_argument("--out", type=cli.out_dir, help="report folder (default benchmarks/results/tune/<model>)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def options_from(args, large: bool) -> Options:
    options = Options.quick(large) if args.quick else Options.full(large)
    changes = {
        "concurrency": args.concurrency,
        "images_per_request": args.images_per_request,
        "p99_budget_ms": args.p99_ms,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "head_to_head_rounds": args.head_to_head,
    }
    if args.protocols is not None:
        protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
        unknown = sorted(set(protocols) - {"grpc", "http"})
        if not protocols or unknown:
            raise UsageError(f"--protocols takes grpc and/or http, comma-separated; got {args.protocols!r}")
        changes["protocols"] = protocols
    options = replace(options, **{k: v for k, v in changes.items() if v is not None})
    return options


def run(args) -> int:
    from resnet_serve.benchmarks import tune_report

    repository = None if args.no_write else settings.repository_dir(args.repository)
    if repository is not None:  # one the winner cannot go into fails now, not after minutes of measuring
        if repository.exists() and not repository.is_dir():
            raise UsageError(f"--repository {repository} is not a folder; pass the model repository, or --no-write")
        RepositoryIndex.load(repository)  # an index of another format is a RepositoryIndexError naming it
    export_dir = settings.build_dir(args.build_dir) / args.model
    if not (export_dir / "export.json").is_file():
        raise UsageError(f"no export of {args.model} in {export_dir}; run python -m export first")
    spec = ExportSummary.load(export_dir).model.spec
    options = options_from(args, size_class(spec) == "large")
    most = host_profile().max_batch(spec)
    if options.images_per_request > most:  # Triton would refuse every request (errors only, no figure)
        raise UsageError(
            f"--images-per-request {options.images_per_request} is more than a served {args.model} model takes in "
            f"one request (max_batch_size {most}); pass at most {most}"
        )
    if args.sample_image:  # found only when the first candidate repository was written, before
        if not args.sample_image.is_file():
            raise UsageError(f"--sample-image {args.sample_image} is not a file; pass an image, or leave it out")
        preprocess_pixels(args.sample_image.read_bytes(), spec, source=str(args.sample_image))
    out = args.out or Path("benchmarks") / "results" / "tune" / args.model
    result = tune(
        export_dir, repository, options, data_dir=args.eval_data, sample_image=args.sample_image, report=out / "tune.md"
    )
    result["command"] = "python -m benchmarks.tune " + " ".join(sys.argv[1:])
    tune_report.write(result, out)
    print(
        json.dumps(
            {k: result[k] for k in ("model", "verdict", "ratios") if k in result}
            | {"winner": (result["winner"] or {}).get("label")},
            indent=2,
        )
    )
    if result["winner"] is None:
        raise TuneFailed(result["verdict"])
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), run, argv, quiet=("resnet_serve.server",))


if __name__ == "__main__":
    sys.exit(main())
