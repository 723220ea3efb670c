"""Benchmarks: engines side by side, served load against Triton, accuracy, and the CI accuracy gate.

    python benchmarks/run.py                       # quick suite (< 5 min on 2 cores)
    python benchmarks/run.py --suite full          # ResNet-20 and ResNet-50, all engines, longer runs
    python benchmarks/run.py --suite accuracy --check benchmarks/baselines.json
    python benchmarks/run.py --suite served --url HOST:8001 --http-url HOST:8000   # no torch needed
    python benchmarks/run.py --suite soak --duration 600   # the supervised server under 32 clients, 5% bad

Without --url the embedded Triton server is started on the repository (built first if missing).
Writes OUT/results.json (every figure, units in the key names), OUT/report.md (built only from the
JSON) and PNG plots; prints a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from resnet_serve import cli, settings
from resnet_serve.benchmarks import gate, report
from resnet_serve.benchmarks.context import Context
from resnet_serve.benchmarks.suites import ENGINES, PRECISIONS, SUITES
from resnet_serve.engines import default_threads
from resnet_serve.errors import ExitCode, ResnetServeError, UsageError
from resnet_serve.export.summary import ExportSummary, stale_export
from resnet_serve.resnets.env import environment

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=tuple(SUITES), default="quick")
    p.add_argument("--models", type=cli.csv, help="comma list (default: the suite's)")
    p.add_argument("--engines", type=cli.csv, help=f"comma list from {', '.join(ENGINES)} (default: all)")
    p.add_argument("--precisions", type=cli.csv, help=f"comma list from {', '.join(PRECISIONS)} (default: all)")
    p.add_argument("--batch-sizes", type=cli.csv_ints, help="offline batch sizes, e.g. 1,8,64")
    p.add_argument("--concurrency", type=cli.csv_ints, help="closed-loop concurrency levels, e.g. 1,4,16,64")
    p.add_argument("--duration", type=cli.positive_float, help="seconds per measurement (offline and served)")
    p.add_argument("--url", help="gRPC HOST:PORT of a running server (default: start the embedded one)")
    p.add_argument("--http-url", help="HTTP HOST:PORT of that server (HTTP runs are skipped without it)")
    p.add_argument(
        "--repository", type=Path, help=f"model repository (default: ${settings.REPOSITORY_ENV} or model_repository)"
    )
    p.add_argument("--build-dir", type=Path, help=f"exported engines (default: ${settings.BUILD_ENV} or build)")
    p.add_argument("--data-dir", type=Path, help="CIFAR-10 data (default: cifar-10-jpg under the data root)")
    p.add_argument("--no-server", action="store_true", help="offline only: no served load or served accuracy")
    p.add_argument("--check", type=Path, help="baselines JSON: exit 1 naming every accuracy regression")
    p.add_argument("--write-baselines", type=Path, help="write the measured offline accuracy as baselines JSON")
    p.add_argument(
        "--tolerance", type=cli.non_negative_float, default=0.3, help="points of top-1/top-5 a baseline allows (0.3)"
    )
    p.add_argument(
        "--threads", type=cli.positive_int, help="threads per engine (default: the cores this process may use)"
    )
    p.add_argument("--out", type=cli.out_dir, help="output folder (default benchmarks/results/<suite>)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def make_context(args) -> Context:
    overrides = {}
    if args.models:
        overrides["models"] = args.models
    if args.duration:
        overrides["offline_duration_s"] = overrides["served_duration_s"] = args.duration
    if args.concurrency:
        overrides["concurrency"] = args.concurrency
    if args.no_server:
        overrides["served"] = False
    suite = replace(SUITES[args.suite], **overrides)
    for name, given, known in (("engine", args.engines, ENGINES), ("precision", args.precisions, PRECISIONS)):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            raise UsageError(f"unknown {name}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return Context(
        suite=suite,
        engines=args.engines or ENGINES,
        precisions=args.precisions or PRECISIONS,
        threads=args.threads or default_threads(),
        build_dir=settings.build_dir(args.build_dir),
        repository=settings.repository_dir(args.repository),
        cifar_dir=settings.cifar_dir(args.data_dir),
        imagenet_dir=settings.imagenet_sample_dir(),
        batch_size_override=args.batch_sizes,
    )


def load_exports(ctx: Context, *, tune: bool = True) -> None:
    """The export summary of every model, read once (exporting again where the engines are stale, and then
    tuning the rebuilt repository for this host when ``tune``)."""
    stale = {m: why for m in ctx.suite.models if (why := stale_export(ctx.build_dir / m))}
    if stale:
        from resnet_serve.export.default_repository import NETWORKS, build_default_repository

        others = {m: why for m, why in stale.items() if m not in NETWORKS}
        if others:  # rebuilding the default repository would not make them, and costs minutes
            raise UsageError(
                "; ".join(f"{m} in {ctx.build_dir}: {why}" for m, why in others.items())
                + f"; export {'them' if len(others) > 1 else 'it'} first (python -m export --checkpoint ... --out "
                f"{ctx.build_dir / next(iter(others))} --repository {ctx.repository}), or pick from the default "
                f"repository's {', '.join(NETWORKS)}"
            )
        log.info(
            "building the default repository into %s: %s",
            ctx.build_dir,
            "; ".join(f"{m}: {why}" for m, why in stale.items()),
        )
        build_default_repository(ctx.repository, ctx.build_dir, cifar_dir=ctx.cifar_dir)
        if tune:  # the repository this run serves: tuned for this host, as the main job does
            from resnet_serve.benchmarks.tune import tune_default_repository

            tune_default_repository(ctx.repository, ctx.build_dir)
    ctx.exports = {m: ExportSummary.load(ctx.build_dir / m) for m in ctx.suite.models}


def check_live(flag: str, url: str, protocol: str) -> None:
    """A given server answers ``protocol`` at ``url`` (before any measuring: a gRPC port given as --http-url
    was an aiohttp traceback after the gRPC runs)."""
    from resnet_serve.client.sync import Connection

    connection = Connection(url, protocol, 10.0)
    try:
        connection.call(connection.client.is_server_live)
    except ResnetServeError as exc:
        raise UsageError(
            f"{flag} {url}: {exc}; --url takes the server's gRPC port (8001 by default), --http-url its HTTP port "
            "(8000)"
        ) from None
    finally:
        connection.close()


@contextmanager
def server_urls(args, ctx: Context):
    """(gRPC URL, HTTP URL or None): the given server's, or the embedded server's on free ports."""
    if args.url:
        if not args.http_url:
            log.warning("no --http-url: HTTP load is not measured (the HTTP port cannot be derived from gRPC's)")
        yield args.url, args.http_url
        return
    from resnet_serve.server import running

    with running(ctx.repository, http_port=0, grpc_port=0, metrics_port=0) as server:
        yield server.grpc_url, server.http_url


def ratios(offline: list[dict], served: list[dict], models: tuple[str, ...]) -> dict:
    out = {}
    for model in models:
        rows = [r for r in offline if r["model"] == model]
        if not rows:
            continue
        biggest = max(r["batch_size"] for r in rows)
        at = {(r["engine"], r["precision"]): r["throughput_img_s"] for r in rows if r["batch_size"] == biggest}
        cpu = {k: v for k, v in at.items() if not k[0].startswith("pytorch")}
        if cpu and ("pytorch", "fp32") in at:
            best = max(cpu, key=cpu.get)
            out[f"{model} best engine at batch {biggest}"] = f"{best[0]} {best[1]}"
            out[f"{model} best engine / pytorch fp32 (batch {biggest})"] = round(cpu[best] / at[("pytorch", "fp32")], 2)
            if ("openvino", "fp32") in at:
                out[f"{model} best engine / openvino fp32 (batch {biggest})"] = round(
                    cpu[best] / at[("openvino", "fp32")], 2
                )
        for r in served:
            if r["arch"] != model or r["mode"] != "closed":
                continue
            engine, precision = r["engine"].rsplit("-", 1)
            ref = at.get((engine, precision))
            if ref:
                key = (
                    f"{model} served/offline {r['engine']} ({r['protocol']} {r['payload']} c={r['concurrency']}"
                    f" vs offline batch {biggest})"
                )
                out[key] = round(r["throughput_img_s"] / ref, 3)
    return out


def benchmark(args) -> int:
    ctx = make_context(args)
    baselines = gate.load_baselines(args.check) if args.check else None  # a bad file fails before the run
    suite = ctx.suite
    if suite.name == "soak":
        from resnet_serve.benchmarks import soak

        return soak.main(args, ctx)
    needs_server = suite.served and (suite.concurrency or suite.accuracy or suite.transport)
    if needs_server and args.url:  # a wrong port fails now, not after the offline runs
        for flag, url, protocol in (("--url", args.url, "grpc"), ("--http-url", args.http_url, "http")):
            if url:
                check_live(flag, url, protocol)
    out = args.out or Path("benchmarks") / "results" / suite.name
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "schema_version": SCHEMA_VERSION,
        "suite": suite.name,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "environment": environment(),
        "config": {
            "suite": asdict(suite),
            "engines": list(ctx.engines),
            "precisions": list(ctx.precisions),
            "threads": ctx.threads,
            "server": args.url or "embedded (started by this run)",
            "build_dir": str(ctx.build_dir),
            "data_dir": str(ctx.cifar_dir),
        },
        "offline": [],
        "served": [],
        "accuracy": [],
        "ratios": {},
    }
    if suite.offline or (suite.accuracy and suite.offline_accuracy):
        load_exports(ctx, tune=not args.url)
    if needs_server:  # a repository without the suite's networks fails now, not after the offline runs
        for model in suite.models:
            ctx.index.network(model)
    if suite.offline:
        from resnet_serve.benchmarks.offline import run_offline

        results["offline"] = run_offline(ctx)
    if needs_server:
        with server_urls(args, ctx) as (grpc_url, http_url):
            if suite.concurrency:
                from resnet_serve.benchmarks.served import run_served

                results["served"] = run_served(ctx, grpc_url, http_url)
            if suite.transport:
                from resnet_serve.benchmarks.transport import run_transport, summarize

                results["transport"] = run_transport(ctx, grpc_url)
                for model, ratio in summarize(results["transport"]).items():
                    results["ratios"][f"{model} shared memory / in-band img/s"] = ratio
            if suite.accuracy:
                from resnet_serve.benchmarks.accuracy import run_accuracy

                results["accuracy"] = run_accuracy(ctx, grpc_url)
    elif suite.accuracy:
        from resnet_serve.benchmarks.accuracy import run_accuracy

        results["accuracy"] = run_accuracy(ctx, None)
    results["ratios"].update(ratios(results["offline"], results["served"], suite.models))
    code = ExitCode.OK
    if args.check:
        complete = suite.name == "accuracy" and not (args.engines or args.precisions or args.models or args.no_server)
        regressions = gate.check(results["accuracy"], baselines, require_all=complete)
        results["gate"] = {"baselines": str(args.check), "regressions": regressions}
        for problem in regressions:
            log.error("accuracy regression: %s", problem)
        code = ExitCode.FAILED if regressions else ExitCode.OK
    if args.write_baselines:
        gate.write_baselines(args.write_baselines, results, args.tolerance, ctx.cifar_dir.name)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    path = out / "results.json"
    results["plots"] = report.plot(results, out)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(report.render(results))
    summary = {
        "results": str(path),
        "report": str(out / "report.md"),
        "ratios": results["ratios"],
        "gate": results.get("gate"),
    }
    print(json.dumps(summary, indent=2))
    return code


def main(argv=None) -> int:
    return cli.run(build_parser(), benchmark, argv, quiet=("resnet_serve.server", "resnet_serve.export"))
