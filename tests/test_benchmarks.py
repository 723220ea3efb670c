"""The benchmark suite: a quick run against the real server, served = offline accuracy, and the CI gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from resnet_serve.benchmarks import cli as bench
from resnet_serve.benchmarks import gate
from resnet_serve.benchmarks.inputs import cifar_test_split
from resnet_serve.export.config import ExportConfig
from resnet_serve.export.pipeline import run_export
from resnet_serve.export.summary import ExportSummary, ModelRecord, file_sha256, stale_export
from resnet_serve.resnets.checkpoint import load_checkpoint, save_checkpoint
from resnet_serve.resnets.spec import CIFAR10

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINES = REPO_ROOT / "benchmarks" / "baselines.json"


def common_args(default_repository, tmp_path, *extra):
    return [
        "--repository",
        str(default_repository / "models"),
        "--build-dir",
        str(default_repository / "build"),
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]


@pytest.mark.server
def test_quick_suite_writes_results_report_and_plots(triton, default_repository, tmp_path):
    args = common_args(
        default_repository,
        tmp_path,
        "--suite",
        "quick",
        "--duration",
        "0.5",
        "--url",
        triton.grpc_url,
        "--http-url",
        triton.http_url,
    )
    assert bench.main(args) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["schema_version"] == 1 and results["environment"]["cpu_cores"] >= 1
    assert results["environment"]["versions"]["onnxruntime"]
    offline = {(r["engine"], r["precision"], r["batch_size"]) for r in results["offline"]}
    assert {
        ("pytorch", "fp32", 64),
        ("pytorch", "bf16", 64),
        ("onnxruntime", "int8", 1),
        ("openvino", "int8", 64),
    } <= offline
    for r in results["offline"]:
        assert r["throughput_img_s"] > 0 and r["latency_ms_p50"] <= r["latency_ms_p99"] and r["iterations"] >= 5
    served = results["served"]
    assert {(r["protocol"], r["payload"], r["mode"]) for r in served} >= {
        ("grpc", "jpeg", "closed"),
        ("http", "jpeg", "closed"),
        ("grpc", "tensor", "closed"),
        ("grpc", "jpeg", "open"),
    }
    for r in served:
        assert r["errors"] == 0 and r["requests_ok"] > 0
    breakdown = next(r for r in served if r["concurrency"] == 16 and r["payload"] == "jpeg")["server"]
    classifier = next(v for k, v in breakdown.items() if k.endswith("_classifier"))
    assert classifier["compute_infer_ms"] > 0 and classifier["avg_batch_size"] > 1  # the batcher batched
    assert any(key.startswith("resnet20 served/offline") for key in results["ratios"])
    report = (out / "report.md").read_text()
    assert "## Offline engines" in report and "## Served through Triton" in report and "## Accuracy" in report
    assert (out / "throughput_resnet20.png").stat().st_size > 10_000
    assert (out / "latency_vs_throughput.png").stat().st_size > 10_000


@pytest.mark.server
@pytest.mark.slow
def test_served_top1_equals_offline_top1_for_every_engine(triton, default_repository, tmp_path):
    """The accuracy suite through the real server (.ci/run runs it once more with the baseline gate)."""
    args = common_args(default_repository, tmp_path, "--suite", "accuracy", "--url", triton.grpc_url)
    assert bench.main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    served = [r for r in results["accuracy"] if r["where"] == "served"]
    assert {(r["engine"], r["precision"]) for r in served} == {
        (e, p) for e in ("onnxruntime", "openvino") for p in ("fp32", "int8")
    }
    for r in served:
        offline = next(
            o
            for o in results["accuracy"]
            if o["where"] == "offline" and (o["engine"], o["precision"]) == (r["engine"], r["precision"])
        )
        assert r["n"] == 10_000 and r["top1_pct"] == offline["top1_pct"] and r["top5_pct"] == offline["top5_pct"]
        assert r["top1_agreement_with_offline_pct"] == 100.0


# what the server image lacks: importing any of it fails, as it would there
NOT_IN_THE_IMAGE = ("torch", "openvino", "nncf", "onnx", "onnxruntime")


@pytest.mark.server
@pytest.mark.slow
def test_docker_compose_benchmark_service_runs_without_torch(triton, default_repository, tmp_path):
    """The benchmark service's own command, from docker-compose.yml, against the real server, with the
    packages its image does not install made unimportable."""
    service = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["benchmark"]
    python, flag, module, *args = service["command"]
    assert (python, flag, module) == ("python3", "-m", "resnet_serve.benchmarks")
    urls = {"triton:8001": triton.grpc_url, "triton:8000": triton.http_url}  # the compose network's names
    args = [urls.get(a, a) for a in args]
    args[args.index("--out") + 1] = str(tmp_path / "out")
    args += ["--duration", "0.3"]  # a shorter run than the service's own
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in NOT_IN_THE_IMAGE)
    code = f"import runpy, sys; {blocked}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    env = {**os.environ, "RESNET_SERVE_REPOSITORY": str(default_repository / "models")}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    served_engines = {(r["engine"], r["protocol"], r["payload"]) for r in results["served"]}
    for engine in ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"):
        assert {(engine, "grpc", "jpeg"), (engine, "http", "jpeg"), (engine, "grpc", "tensor")} <= served_engines
    assert all(r["errors"] == 0 and r["requests_ok"] > 0 for r in results["served"])
    baselines = {(b["engine"], b["precision"]): b for b in gate.load_baselines(BASELINES)}
    assert len(results["accuracy"]) == 4
    for r in results["accuracy"]:
        assert r["where"] == "served" and r["n"] == 10_000
        assert abs(r["top1_pct"] - baselines[(r["engine"], r["precision"])]["top1"]) <= 0.3
    assert results["offline"] == []  # nothing ran in the benchmark process itself


def test_gate_logic():
    baselines = [{"model": "m", "engine": "e", "precision": "fp32", "top1": 90.0, "top5": 99.0, "tolerance_pct": 0.3}]
    ok = [{"model": "m", "engine": "e", "precision": "fp32", "where": "offline", "top1_pct": 89.8, "top5_pct": 99.0}]
    assert gate.check(ok, baselines) == []
    bad = [{**ok[0], "top1_pct": 89.6}]
    assert gate.check(bad, baselines) == ["m/e/fp32 (offline): top1 89.60% is below the baseline 90.00% - 0.3 points"]
    assert "no accuracy measured" in gate.check([], baselines)[0]
    assert gate.check([], baselines, require_all=False) == []


@pytest.mark.slow
def test_gate_fails_on_a_degraded_model_and_passes_on_the_real_one(resnet20_checkpoint, cifar_jpg, tmp_path, caplog):
    def accuracy_run(checkpoint: Path, name: str) -> tuple[int, dict]:
        build = tmp_path / name / "build"
        run_export(
            ExportConfig(
                checkpoint=checkpoint,
                out=build / "resnet20",
                engines=("onnxruntime",),
                precisions=("fp32",),
                tensorrt_ready=False,
                evaluate=False,
            )
        )
        out = tmp_path / name / "out"
        code = bench.main(
            [
                "--suite",
                "accuracy",
                "--no-server",
                "--engines",
                "pytorch,onnxruntime",
                "--precisions",
                "fp32",
                "--build-dir",
                str(build),
                "--data-dir",
                str(cifar_jpg),
                "--check",
                str(BASELINES),
                "--out",
                str(out),
            ]
        )
        return code, json.loads((out / "results.json").read_text())

    code, results = accuracy_run(resnet20_checkpoint, "real")
    assert code == 0 and results["gate"]["regressions"] == []

    model, ckpt = load_checkpoint(resnet20_checkpoint)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("conv2.weight"):
                param.add_(torch.randn(param.shape, generator=gen) * param.std() * 0.5)
    degraded = save_checkpoint(tmp_path / "degraded.pt", model, "resnet20", shortcut="A", meta={})
    code, results = accuracy_run(degraded, "degraded")
    regressions = results["gate"]["regressions"]
    assert code == 1
    assert any(r.startswith("resnet20/onnxruntime/fp32 (offline): top1") for r in regressions), regressions
    assert any(r.startswith("resnet20/pytorch/fp32 (offline): top1") for r in regressions), regressions
    assert "accuracy regression: resnet20/onnxruntime/fp32" in caplog.text


def test_bad_benchmark_arguments(tmp_path, caplog):
    assert bench.main(["--engines", "tensorflow", "--out", str(tmp_path)]) == 2
    assert "unknown engine(s) tensorflow; choose from pytorch, onnxruntime, openvino, gpu" in caplog.text
    with pytest.raises(SystemExit) as exit_info:  # argparse: a usage error exits 2
        bench.main(["--batch-sizes", "1,x"])
    assert exit_info.value.code == 2


def test_a_server_url_on_the_wrong_port_is_refused_before_measuring(triton, tmp_path, caplog):
    """Before: --http-url given the gRPC port ran the gRPC load, then died on an aiohttp traceback."""
    out = tmp_path / "out"
    common = ["--suite", "served", "--models", "resnet20", "--duration", "1", "--out", str(out)]
    assert bench.main([*common, "--url", triton.grpc_url, "--http-url", triton.grpc_url]) == 2
    assert f"--http-url {triton.grpc_url}: cannot reach the Triton server at {triton.grpc_url} over http" in caplog.text
    assert bench.main([*common, "--url", triton.http_url]) == 2
    assert f"--url {triton.http_url}: cannot reach the Triton server at {triton.http_url} over grpc" in caplog.text
    assert "--url takes the server's gRPC port (8001 by default), --http-url its HTTP port" in caplog.text
    assert not out.exists()  # refused before any measuring


def test_a_repository_without_the_suites_networks_is_refused_before_the_offline_runs(
    default_repository, tmp_path, caplog, monkeypatch
):
    from resnet_serve.benchmarks import offline

    def measure(*args, **kwargs):
        raise AssertionError("the offline runs began before the repository was read")

    monkeypatch.setattr(offline, "run_offline", measure)
    (tmp_path / "repo").mkdir()
    argv = [
        "--suite",
        "quick",
        "--build-dir",
        str(default_repository / "build"),
        "--repository",
        str(tmp_path / "repo"),
    ]
    assert bench.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "the model repository serves no resnet20 (it serves: none); export it first" in caplog.text


def test_run_py_is_a_script():
    import subprocess

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "--help"], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0 and "--suite" in result.stdout


def test_percentiles():
    from resnet_serve.benchmarks.offline import percentiles_ms

    figures = percentiles_ms(list(np.linspace(0.001, 0.1, 100)))
    assert figures["latency_ms_p50"] == pytest.approx(50.5, abs=0.1) and figures["latency_ms_p99"] > 98


def test_test_set_from_the_official_batches_is_lossless(tmp_path, cifar_exact):
    from test_data import write_official_batches

    from resnet_serve.resnets.spec import CIFAR10, preprocess_pixels

    _, test, labels = write_official_batches(tmp_path / "cifar-10-batches-py", cifar_exact, n=50)
    images = cifar_test_split(tmp_path, CIFAR10)
    assert list(images.labels) == list(labels) and len(images.classes) == 10
    # what the server decodes is exactly the official pixels
    assert all(
        np.array_equal(preprocess_pixels(b, CIFAR10), image) for b, image in zip(images.encoded, test, strict=True)
    )


def test_engines_exported_from_an_older_checkpoint_are_rebuilt(tmp_path):
    checkpoint = tmp_path / "resnet20.pt"
    checkpoint.write_bytes(b"weights v1")
    assert stale_export(tmp_path) == "no exported engines"
    record = ModelRecord(
        name="resnet20",
        arch="resnet20",
        weights="trained",
        source=str(checkpoint),
        source_sha256=file_sha256(checkpoint),
        source_kind="resnet-serve checkpoint",
        checkpoint=str(checkpoint),
        contract=CIFAR10.as_parameters(),
    )
    ExportSummary(model=record, out=tmp_path).save()
    assert stale_export(tmp_path) is None
    checkpoint.write_bytes(b"weights v2")  # retrained: the engines no longer run these weights
    assert stale_export(tmp_path) == f"{checkpoint} changed since the engines were exported"
    checkpoint.unlink()
    assert stale_export(tmp_path) == f"its source {checkpoint} is gone"


@pytest.mark.slow
@pytest.mark.server
def test_soak_suite_reports_windows_errors_latency_and_memory(default_repository, cifar_jpg, tmp_path):
    """A short soak through the real command: the supervised launcher, 5% bad inputs, per-window figures."""
    out = tmp_path / "soak"
    args = ["--suite", "soak", "--duration", "12", "--concurrency", "8", "--repository",
            str(default_repository / "models"), "--data-dir", str(cifar_jpg), "--out", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    totals, windows = results["totals"], results["windows"]
    assert results["config"]["concurrency"] == 8 and len(windows) >= 2
    assert totals["good_errors"] == 0 and totals["wrong_class"] == 0 and totals["bad_not_refused"] == 0
    assert totals["good_ok"] > 100 and totals["bad_refused"] >= totals["good_ok"] // 25
    for w in windows:
        assert w["p50_ms"] <= w["p99_ms"] <= w["max_ms"]
        assert {"launcher", "tritonserver", "stub preprocess_cifar10"} <= set(w["rss_mb"])
    assert "Soak: resnet20, concurrency 8" in (out / "report.md").read_text()
    assert not list(out.glob("*.key"))  # the server's key stays out of the report folder
