"""OpenVINO CPU pinning with several engine processes on one host (as a Triton model with several
instances runs them): N processes of T threads each run batches of one exported OpenVINO engine back to
back, started together, with the threads pinned and unpinned, in alternating rounds.

    python -m benchmarks.pinning --engine build/resnet20/openvino-int8 [--processes 2] [--threads T]

T defaults to cores // N, the split the tune step tries. This measures why a model with several
instances runs its OpenVINO threads unpinned (``engines/openvino.py``). Prints a table and writes
OUT/pinning.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import statistics
import sys
from pathlib import Path

import numpy as np

from resnet_serve import cli
from resnet_serve.errors import ResnetServeError, UsageError
from resnet_serve.resnets.env import available_cores, environment


def _worker(engine_dir: str, threads: int, pinned: bool, batch: int, seconds: float, start, results) -> None:
    from resnet_serve.benchmarks.offline import time_engine
    from resnet_serve.engines import load_engine

    engine = load_engine(engine_dir, threads=threads, pin_threads=pinned)
    shape = engine.info()["input_shape"][1:]
    images = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    engine.infer(images)  # compiled and warm before the clock starts
    start.wait()
    results.put(time_engine(engine, images, duration_s=seconds)["throughput_img_s"])


def measure(engine_dir: Path, processes: int, threads: int, pinned: bool, batch: int, seconds: float) -> list[float]:
    """img/s of each of ``processes`` engines running at the same time."""
    context = mp.get_context("spawn")  # a fresh interpreter per process, as Triton's model instances are
    start, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_worker, args=(str(engine_dir), threads, pinned, batch, seconds, start, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        figures = [results.get(timeout=seconds + 120) for _ in workers]
    except queue.Empty:
        codes = [w.exitcode for w in workers]
        raise ResnetServeError(
            f"an engine process did not report within {seconds + 120:g} s (exit codes {codes}); "
            "run again with -v, or with fewer --processes"
        ) from None
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    return figures


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pinning", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", type=Path, required=True, help="an exported OpenVINO engine directory")
    p.add_argument("--processes", type=cli.positive_int, default=2, help="engine processes at once (default 2)")
    p.add_argument("--threads", type=cli.positive_int, help="threads per process (default: cores // processes)")
    p.add_argument("--batch", type=cli.positive_int, default=16, help="images per engine call (default 16)")
    p.add_argument("--seconds", type=cli.positive_float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--rounds", type=cli.positive_int, default=2, help="rounds of pinned then unpinned (default 2)")
    p.add_argument("--out", type=cli.out_dir, default=Path("benchmarks/results/pinning"), help="report folder")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args) -> int:
    manifest = args.engine / "engine.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("engine") != "openvino":
        raise UsageError(f"{args.engine} is not an exported OpenVINO engine directory (python -m export makes them)")
    threads = args.threads or max(1, available_cores() // args.processes)
    rounds = []
    for _ in range(args.rounds):
        for pinned in (True, False):
            figures = measure(args.engine, args.processes, threads, pinned, args.batch, args.seconds)
            rounds.append({"pinned": pinned, "img_s": figures, "total_img_s": round(sum(figures), 1)})
            print(f"pinned={pinned!s:5}  " + " + ".join(f"{f:,.0f}" for f in figures) + f" = {sum(figures):,.0f} img/s")
    totals = {p: statistics.median(r["total_img_s"] for r in rounds if r["pinned"] == p) for p in (True, False)}
    result = {
        "engine": str(args.engine),
        "processes": args.processes,
        "threads_per_process": threads,
        "cores": available_cores(),
        "batch": args.batch,
        "seconds": args.seconds,
        "rounds": rounds,
        "median_total_img_s": {"pinned": totals[True], "unpinned": totals[False]},
        "unpinned_over_pinned": round(totals[False] / totals[True], 2),
        "environment": environment(),
        "command": "python -m benchmarks.pinning " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pinning.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.processes} processes x {threads} threads on {available_cores()} cores: unpinned "
        f"{result['unpinned_over_pinned']}x pinned (median totals {totals[False]:,.0f} vs {totals[True]:,.0f} img/s)"
    )
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
