"""CPU per image of an engine called the way a server calls it: a batch, a pause while the client and
tritonserver turn the answers into the next requests, the next batch.

    python -m benchmarks.idle_wait --engine build/resnet20/openvino-int8 [--engine build/resnet20/onnxruntime-int8]

Every thread layout of each engine (OpenVINO: one thread; all cores in one stream; all cores in one
stream per core. ONNX Runtime: one thread; all cores) runs its batches back to back and with each
pause, in interleaved rounds, and the CPU time of this process (all its threads) is divided by the
images. Back to back, the figure is the engine's own work. What a pause adds is CPU the engine's threads
spend between calls (waiting actively for the next one, or warming up again), CPU that the client and
tritonserver on the same cores do not get: the served path's one-step model pays it after every batch.
Why a server spreads the work as it does (``engines/openvino.py``: streams, pinning; the tune step's
instance x thread splits) follows from these figures. Prints a table and writes OUT/idle_wait.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve import cli
from resnet_serve.engines import Engine, load_engine
from resnet_serve.engines.base import EngineError, read_manifest
from resnet_serve.errors import UsageError
from resnet_serve.resnets.env import available_cores, environment


@dataclass(frozen=True)
class Layout:
    engine_dir: Path
    kind: str  # openvino | onnxruntime
    threads: int
    streams: int = 1

    @property
    def label(self) -> str:
        streams = f" in {self.streams} streams" if self.streams > 1 else ""
        return f"{self.engine_dir.name} {self.threads} thread{'s' if self.threads > 1 else ''}{streams}"

    def load(self) -> Engine:
        options = {"streams": self.streams} if self.kind == "openvino" else {}
        return load_engine(self.engine_dir, threads=self.threads, **options)


def layouts(engine_dir: Path, cores: int) -> list[Layout]:
    """The thread layouts a server on ``cores`` cores may give one instance of this engine."""
    kind = read_manifest(engine_dir).get("engine")
    if kind not in ("openvino", "onnxruntime"):
        raise UsageError(f"{engine_dir} is a {kind} engine; this measures CPU engines (openvino, onnxruntime)")
    found = [Layout(engine_dir, kind, 1)]
    if cores > 1:
        found.append(Layout(engine_dir, kind, cores))
        if kind == "openvino":
            found.append(Layout(engine_dir, kind, cores, cores))
    return found


def run_calls(engine: Engine, images: np.ndarray, pause_s: float, seconds: float) -> dict:
    """Call ``engine.infer`` for ``seconds``, sleeping ``pause_s`` after each call; images per second of
    wall time and CPU seconds of this process per image and per call."""
    calls = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while calls < 5 or time.perf_counter() - wall0 < seconds:
        engine.infer(images)
        calls += 1
        if pause_s:
            time.sleep(pause_s)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    count = calls * len(images)
    return {
        "img_s": round(count / wall, 1),
        "cpu_us_per_image": round(1e6 * cpu / count, 1),
        "cpu_us_per_call": round(1e6 * cpu / calls, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle_wait", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--engine", type=Path, action="append", required=True, help="an exported CPU engine directory (repeatable)"
    )
    p.add_argument("--batch", type=cli.csv_ints, default=(8, 16), help="images per call (default 8,16)")
    p.add_argument(
        "--pause-ms",
        type=pauses,
        default=(0.0, 0.5, 1.0),
        help="pauses after each call, ms; 0 = back to back (default 0,0.5,1)",
    )
    p.add_argument("--seconds", type=cli.positive_float, default=1.5, help="seconds per measurement (default 1.5)")
    p.add_argument("--rounds", type=cli.positive_int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--out", type=cli.out_dir, default=Path("benchmarks/results/idle_wait"), help="report folder")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def pauses(value: str) -> tuple[float, ...]:
    """argparse type: comma list of pauses in ms, each finite and at least 0."""
    try:
        values = tuple(cli.non_negative_float(v.strip()) for v in value.split(",") if v.strip())
    except argparse.ArgumentTypeError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated pauses in ms, each a finite number of at least 0, got {value!r}"
        )
    return values


def run(args) -> int:
    cores = available_cores()
    grid: list[Layout] = []
    for engine_dir in args.engine:
        if not engine_dir.is_dir():
            raise UsageError(f"--engine {engine_dir} is not a folder; pass an exported engine directory")
        try:
            grid += layouts(engine_dir, cores)
        except EngineError as exc:
            raise UsageError(f"--engine {engine_dir}: {exc}") from None
    runs: list[dict] = []
    for round_ in range(args.rounds):
        order = grid[round_ % len(grid) :] + grid[: round_ % len(grid)]  # no layout always first
        for layout in order:
            engine = layout.load()  # one engine at a time: no other engine's threads in the process
            shape = engine.info()["input_shape"][1:]
            for batch in args.batch:
                images = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
                run_calls(engine, images, 0.0, min(0.3, args.seconds))  # warm
                for pause_ms in args.pause_ms:
                    figures = run_calls(engine, images, pause_ms / 1000, args.seconds)
                    where = {"layout": layout.label, "batch": batch, "pause_ms": pause_ms, "round": round_}
                    runs.append({**where, **figures})
            del engine
    rows = summarize(grid, args.batch, args.pause_ms, runs)
    print(table(rows))
    result = {
        "cores": cores,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rows": rows,
        "runs": runs,
        "environment": environment(),
        "command": "python -m benchmarks.idle_wait " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "idle_wait.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def summarize(grid: list[Layout], batches, pauses_ms, runs: list[dict]) -> list[dict]:
    """Medians over the rounds per layout, batch and pause, and the CPU per call each pause adds to the
    same layout's back-to-back figure (round by round, then the median)."""
    rows = []
    for layout in grid:
        for batch in batches:
            mine = [r for r in runs if r["layout"] == layout.label and r["batch"] == batch]
            base = {r["round"]: r["cpu_us_per_call"] for r in mine if r["pause_ms"] == 0}
            for pause_ms in pauses_ms:
                these = [r for r in mine if r["pause_ms"] == pause_ms]
                added = [r["cpu_us_per_call"] - base[r["round"]] for r in these if r["round"] in base]
                rows.append(
                    {
                        "layout": layout.label,
                        "threads": layout.threads,
                        "streams": layout.streams,
                        "batch": batch,
                        "pause_ms": pause_ms,
                        "img_s": statistics.median(r["img_s"] for r in these),
                        "cpu_us_per_image": statistics.median(r["cpu_us_per_image"] for r in these),
                        "cpu_us_added_per_call": round(statistics.median(added), 1) if added and pause_ms else None,
                    }
                )
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'layout':48} {'batch':>5} {'pause ms':>8} {'img/s':>8} {'CPU us/image':>12} {'added CPU us/call':>17}"]
    for r in rows:
        added = "-" if r["cpu_us_added_per_call"] is None else f"{r['cpu_us_added_per_call']:,.0f}"
        lines.append(
            f"{r['layout']:48} {r['batch']:>5} {r['pause_ms']:>8g} {r['img_s']:>8,.0f} "
            f"{r['cpu_us_per_image']:>12,.1f} {added:>17}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
