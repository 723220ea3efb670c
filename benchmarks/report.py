"""report.md and PNG plots, built only from results.json.

python -m resnet_serve.benchmarks.report benchmarks/results/quick/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_serve import cli
from resnet_serve.errors import UsageError


def _table(headers: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def render(results: dict) -> str:
    env, cfg = results["environment"], results["config"]
    lines = [
        f"# resnet-serve benchmark: {results['suite']} suite",
        "",
        f"{env['cpu_model']}, {env['cpu_cores']} cores{', GPU ' + env['gpu'] if env.get('gpu') else ''}; "
        f"git {env['git_commit']}; {results['started']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k in ("torch", "onnxruntime", "openvino")),
        "",
        f"Threads per engine: {cfg['threads']}. Server: {cfg['server']}. Figures are measured in this run; "
        "units are in the column names.",
    ]
    if results.get("offline"):
        lines += ["", "## Offline engines (same process, same input, warm-up excluded)", ""]
        rows = [
            [
                r["model"],
                r["engine"],
                r["precision"],
                r["batch_size"],
                r["throughput_img_s"],
                r["latency_ms_mean"],
                r["latency_ms_p50"],
                r["latency_ms_p90"],
                r["latency_ms_p99"],
                r.get("vs_pytorch_fp32"),
            ]
            for r in results["offline"]
        ]
        lines += _table(
            [
                "model",
                "engine",
                "precision",
                "batch",
                "img/s",
                "mean ms",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "x PyTorch FP32",
            ],
            rows,
        )
    if results.get("served"):
        lines += ["", "## Served through Triton (client and server share this machine)", ""]
        rows = []
        for r in results["served"]:
            server = next(iter(r["server"].values()), {}) if r["server"] else {}
            classifier = {k: v for k, v in r["server"].items() if k.endswith("_classifier")}
            clf = next(iter(classifier.values()), server)
            load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate_rps']:g} req/s"
            rows.append(
                [
                    r["model"],
                    r["protocol"],
                    r["payload"],
                    load,
                    r["throughput_img_s"],
                    r.get("latency_ms_p50"),
                    r.get("latency_ms_p90"),
                    r.get("latency_ms_p99"),
                    r["errors"],
                    clf.get("queue_ms"),
                    clf.get("compute_infer_ms"),
                    clf.get("avg_batch_size"),
                ]
            )
        lines += _table(
            [
                "model",
                "protocol",
                "payload",
                "load",
                "img/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "errors",
                "classifier queue ms",
                "classifier infer ms",
                "avg batch",
            ],
            rows,
        )
    if results.get("transport"):
        lines += ["", "## Tensor transport: system shared memory vs in-band (loopback gRPC)", ""]
        rows = [
            [
                r["model"],
                "shared memory" if r["shared_memory"] else "in-band",
                r["batch_size"],
                r["request_bytes"],
                r["throughput_img_s"],
                r["latency_ms_p50"],
                r["server_compute_input_ms"],
                r["server_compute_infer_ms"],
            ]
            for r in results["transport"]
        ]
        lines += _table(
            [
                "classifier",
                "transport",
                "batch",
                "request bytes",
                "img/s",
                "p50 ms",
                "server compute input ms",
                "server compute infer ms",
            ],
            rows,
        )
    if results.get("ratios"):
        lines += ["", "## Ratios", ""]
        lines += _table(["what", "value"], [[k, v] for k, v in results["ratios"].items()])
    if results.get("accuracy"):
        lines += ["", f"## Accuracy ({results['accuracy'][0]['n']:,} test images, cifar-10-jpg)", ""]
        rows = [
            [
                r["model"],
                r["engine"],
                r["precision"],
                r["where"],
                r["top1_pct"],
                r["top5_pct"],
                r.get("top1_delta_pct"),
                r.get("top5_delta_pct"),
                r.get("top1_agreement_with_offline_pct"),
            ]
            for r in results["accuracy"]
        ]
        lines += _table(
            [
                "model",
                "engine",
                "precision",
                "where",
                "top-1 %",
                "top-5 %",
                "top-1 delta",
                "top-5 delta",
                "served = offline top-1 %",
            ],
            rows,
        )
    if results.get("gate"):
        gate = results["gate"]
        lines += [
            "",
            "## Accuracy gate",
            "",
            f"Baselines: `{gate['baselines']}`: " + ("**pass**" if not gate["regressions"] else "**FAIL**"),
        ]
        lines += [f"- {p}" for p in gate["regressions"]]
    if results.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    offline = results.get("offline") or []
    for model in sorted({r["model"] for r in offline}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        rows = [r for r in offline if r["model"] == model]
        for name in sorted({(r["engine"], r["precision"]) for r in rows}):
            series = sorted(
                (r["batch_size"], r["throughput_img_s"]) for r in rows if (r["engine"], r["precision"]) == name
            )
            ax.plot([b for b, _ in series], [t for _, t in series], marker="o", label=f"{name[0]} {name[1]}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("img/s")
        ax.set_title(f"{model}: offline throughput vs batch size")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"throughput_{model}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    served = [r for r in results.get("served") or [] if r.get("latency_ms_p50") is not None]
    if served:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key in sorted({(r["model"], r["protocol"], r["payload"], r["mode"]) for r in served}):
            rows = sorted(
                (r for r in served if (r["model"], r["protocol"], r["payload"], r["mode"]) == key),
                key=lambda r: r["throughput_img_s"],
            )
            x = [r["throughput_img_s"] for r in rows]
            for pct, style in (("p50", "-"), ("p99", "--")):
                ax.plot(
                    x,
                    [r[f"latency_ms_{pct}"] for r in rows],
                    style,
                    marker="o",
                    label=f"{key[0]} {key[1]} {key[2]} {key[3]} {pct}",
                )
        ax.set_xlabel("served img/s")
        ax.set_ylabel("client latency, ms")
        ax.set_yscale("log")
        ax.set_title("latency percentiles vs served throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        path = out_dir / "latency_vs_throughput.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnet_serve.benchmarks.report", description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a results.json written by benchmarks/run.py")
    return p


def rebuild(args) -> int:
    try:
        results = json.loads(args.results.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {args.results} as a benchmark results file: {exc}") from None
    results["plots"] = plot(results, args.results.parent)
    (args.results.parent / "report.md").write_text(render(results))
    print(args.results.parent / "report.md")
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), rebuild, argv)


if __name__ == "__main__":
    sys.exit(main())
