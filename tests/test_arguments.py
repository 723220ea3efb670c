"""Numbers given to a command or to the client library are checked where they come in: a value out of range
(0 threads, a negative or NaN timeout, an infinite learning rate, a baselines file whose tolerance is NaN)
is a usage error naming the flag and the value, before anything is loaded, started, trained or written.

Each of these was accepted before and then crashed with a traceback (``--seconds nan``, ``--batch-size 0``,
``--lr -1``, an HTTP ``--timeout -1``), failed every image with "timed out after nan s", reported a healthy
server as unhealthy (``health --timeout 0``), exported a model whose inputs were all zeros (``--std inf``),
or wrote a gate that could never fail (``--tolerance nan``)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from resnet_serve.benchmarks import cli as benchmarks_cli
from resnet_serve.benchmarks import gate, gpu_check, idle_wait, pinning, tune
from resnet_serve.client import AsyncClassifier, Classifier
from resnet_serve.client import cli as client_cli
from resnet_serve.client.core import RetryPolicy
from resnet_serve.errors import UsageError
from resnet_serve.export import cli as export_cli
from resnet_serve.export import default_repository as export_default_repository
from resnet_serve.resnets import evaluate, experiments, train
from resnet_serve.server import cli as server_cli
from resnet_serve.server import health
from resnet_serve.settings import normalize_url

NOT_FINITE = ["nan", "inf", "-inf"]

# (parser, the arguments it needs besides the flag, flag, values it must refuse, a value it must take)
CASES = [
    (server_cli.build_parser, [], "--http-port", ["-1", "65536", "80.5"], "0"),
    (server_cli.build_parser, [], "--log-verbose", ["-1"], "1"),
    (server_cli.build_parser, [], "--startup-timeout", ["0", "-5", *NOT_FINITE], "30"),
    (server_cli.build_parser, [], "--probe-interval", ["0", *NOT_FINITE], "0.5"),
    (server_cli.build_parser, [], "--probe-timeout", ["-1", "nan"], "2"),
    (server_cli.build_parser, [], "--max-body-mb", ["0"], "8"),
    (health.build_parser, [], "--timeout", ["0", "-1", *NOT_FINITE], "2.5"),
    (client_cli.build_parser, ["classify", "x.jpg"], "--timeout", ["0", "-1", *NOT_FINITE], "5"),
    (client_cli.build_parser, ["classify", "x.jpg"], "--wait-for-server", ["-1", "nan", "inf"], "0"),
    (client_cli.build_parser, ["classify", "x.jpg"], "--retries", ["-1", "1.5"], "0"),
    (client_cli.build_parser, ["classify", "x.jpg"], "--top-k", ["0"], "3"),
    (client_cli.build_parser, ["classify", "x.jpg"], "--batch-size", ["0"], "4"),
    (train.build_parser, [], "--lr", ["0", "-1", *NOT_FINITE], "0.05"),
    (train.build_parser, [], "--weight-decay", ["-0.1", "nan"], "0"),
    (train.build_parser, [], "--label-smoothing", ["1", "1.5", "-0.1", "nan"], "0.1"),
    (train.build_parser, [], "--batch-size", ["0", "-3", "2.5"], "64"),
    (train.build_parser, [], "--threads", ["0", "-2"], "1"),
    (train.build_parser, [], "--epochs", ["0"], "1"),
    (train.build_parser, [], "--warmup-iters", ["-1"], "0"),
    (train.build_parser, [], "--limit-train", ["0"], "10"),
    (evaluate.build_parser, ["--checkpoint", "x"], "--batch-size", ["0"], "8"),
    (evaluate.build_parser, ["--checkpoint", "x"], "--workers", ["-1"], "0"),
    (evaluate.build_parser, ["--checkpoint", "x"], "--limit", ["0"], "5"),
    (experiments.build_parser, ["degradation"], "--threads", ["0"], "2"),
    (experiments.build_parser, ["layer-responses"], "--limit-test", ["0"], "100"),
    (export_cli.build_parser, ["--out", "x"], "--mean", ["nan,0.5,0.5", "0.5,inf,0.5", "0.5,0.5"], "0.5,0.4,0.3"),
    (export_cli.build_parser, ["--out", "x"], "--std", ["0.2,0.2,-inf"], "0.2,0.2,0.2"),
    (export_cli.build_parser, ["--out", "x"], "--threads", ["0"], "2"),
    (export_cli.build_parser, ["--out", "x"], "--eval-limit", ["0"], "100"),
    (export_cli.build_parser, ["--out", "x"], "--image-size", ["0"], "32"),
    (benchmarks_cli.build_parser, [], "--duration", ["0", "-2", *NOT_FINITE], "1.5"),
    (benchmarks_cli.build_parser, [], "--tolerance", ["-0.1", *NOT_FINITE], "0"),
    (benchmarks_cli.build_parser, [], "--threads", ["0"], "2"),
    (benchmarks_cli.build_parser, [], "--batch-sizes", ["0,8", "8,x", ",", "-1"], "1,8"),
    (benchmarks_cli.build_parser, [], "--concurrency", ["0"], "1,16"),
    (tune.build_parser, [], "--p99-ms", ["0", "-1", *NOT_FINITE], "250"),
    (tune.build_parser, [], "--duration", ["0", "nan"], "2"),
    (tune.build_parser, [], "--concurrency", ["0"], "4"),
    (tune.build_parser, [], "--images-per-request", ["0"], "64"),
    (tune.build_parser, [], "--repeats", ["0"], "2"),
    (tune.build_parser, [], "--head-to-head", ["-1"], "0"),
    (pinning.build_parser, ["--engine", "x"], "--seconds", ["0", *NOT_FINITE], "1"),
    (pinning.build_parser, ["--engine", "x"], "--processes", ["0"], "1"),
    (pinning.build_parser, ["--engine", "x"], "--batch", ["0"], "1"),
    (pinning.build_parser, ["--engine", "x"], "--rounds", ["0"], "1"),
    (idle_wait.build_parser, ["--engine", "x"], "--seconds", ["0", *NOT_FINITE], "1"),
    (idle_wait.build_parser, ["--engine", "x"], "--rounds", ["0"], "1"),
    (idle_wait.build_parser, ["--engine", "x"], "--batch", ["0", "8,x"], "4,8"),
    (idle_wait.build_parser, ["--engine", "x"], "--pause-ms", ["-1", "0,nan", ",", "x"], "0,0.5"),
    (gpu_check.build_parser, ["run", "out"], "--budget-s", ["0", "-5", "nan"], "60"),
    (gpu_check.build_parser, ["pack"], "--test-limit", ["0"], "16"),
]


@pytest.mark.parametrize(
    ("build", "needed", "flag", "bad", "good"),
    CASES,
    ids=[f"{build.__module__.removeprefix('resnet_serve.')} {flag}" for build, _, flag, _, _ in CASES],
)
def test_a_number_out_of_range_exits_2_naming_the_flag(build, needed, flag, bad, good, capsys):
    parser = build()
    for value in bad:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*needed, f"{flag}={value}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: expected " in err and f"got {value!r}" in err, err
    args = parser.parse_args([*needed, f"{flag}={good}"])
    taken = getattr(args, flag.lstrip("-").replace("-", "_"))
    assert taken is not None and taken != () and all(math.isfinite(v) for v in _numbers(taken))


LIST_FLAGS = [
    (export_cli.build_parser, ["--out", "x"], "--engines"),
    (export_cli.build_parser, ["--out", "x"], "--precisions"),
    (benchmarks_cli.build_parser, [], "--models"),
    (benchmarks_cli.build_parser, [], "--engines"),
    (benchmarks_cli.build_parser, [], "--precisions"),
    (experiments.build_parser, ["degradation"], "--archs"),
    (experiments.build_parser, ["layer-responses"], "--checkpoints"),
]


@pytest.mark.parametrize(
    ("build", "needed", "flag"),
    LIST_FLAGS,
    ids=[f"{build.__module__.removeprefix('resnet_serve.')} {flag}" for build, _, flag in LIST_FLAGS],
)
def test_an_empty_list_exits_2_naming_the_flag(build, needed, flag, capsys):
    """``--engines ""`` (an unset shell variable) used to export nothing, and run every engine in benchmarks."""
    parser = build()
    for value in ("", ",", " , "):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*needed, f"{flag}={value}"])
        assert exit_info.value.code == 2
        assert f"argument {flag}: expected a comma-separated list of names, got {value!r}" in capsys.readouterr().err
    assert getattr(parser.parse_args([*needed, f"{flag}=a, b"]), flag.lstrip("-")) == ("a", "b")


def _numbers(value):
    return value if isinstance(value, tuple) else (value,)


def test_the_client_library_refuses_bad_numbers_before_it_connects():
    # no server on this port: a check that came after connecting would fail differently, or hang
    url = "127.0.0.1:9"
    for kwargs, match in (
        ({"timeout_s": float("nan")}, "timeout_s must be a finite number of seconds above 0, got nan"),
        ({"timeout_s": 0}, "timeout_s must be a finite number of seconds above 0, got 0"),
        ({"timeout_s": float("inf")}, "got inf"),
        ({"retries": -1}, "retries must be a whole number of at least 0, got -1"),
        ({"wait_for_server_s": float("nan")}, "wait_for_server_s must be a finite number of seconds >= 0"),
    ):
        for protocol in ("grpc", "http"):
            with pytest.raises(UsageError, match=match):
                Classifier(url, protocol, **kwargs)
            with pytest.raises(UsageError, match=match):
                asyncio.run(AsyncClassifier.create(url, protocol, **kwargs))
    # a semaphore of 0 would wait for ever for a free slot
    with pytest.raises(UsageError, match="concurrency must be a whole number of at least 1, got 0"):
        asyncio.run(AsyncClassifier.create(url, "http", concurrency=0))
    assert RetryPolicy(0, 0.0).delay(ConnectionRefusedError(), attempt=0) is None  # the edges are allowed


def _baselines(tmp_path, **entry):
    path = tmp_path / "baselines.json"
    base = {"model": "resnet20", "engine": "openvino", "precision": "int8", "top1": 88.0, "top5": 99.6}
    path.write_text(json.dumps({"entries": [{**base, "tolerance_pct": 0.3, **entry}]}))
    return path


def test_a_baselines_file_that_could_never_fail_is_refused(tmp_path):
    assert gate.load_baselines(_baselines(tmp_path))[0]["tolerance_pct"] == 0.3
    for bad in ({"tolerance_pct": float("nan")}, {"tolerance_pct": -1}, {"top1": float("inf")}, {"top5": None}):
        with pytest.raises(UsageError, match="the baseline of resnet20/openvino/int8 has top1") as info:
            gate.load_baselines(_baselines(tmp_path, **bad))
        assert "--write-baselines" in str(info.value)
    with pytest.raises(UsageError, match="is not a baselines file .*FileNotFoundError"):
        gate.load_baselines(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="is not a baselines file"):
        gate.load_baselines(tmp_path / "list.json")


def test_the_gate_refuses_a_bad_baselines_file_before_it_measures(tmp_path, caplog, monkeypatch):
    def measure(*args, **kwargs):
        raise AssertionError("the run went on to build and measure before it read --check")

    monkeypatch.setattr(benchmarks_cli, "load_exports", measure)
    bad = _baselines(tmp_path, tolerance_pct=float("nan"))
    out = tmp_path / "out"
    argv = ["--suite", "accuracy", "--check", str(bad), "--repository", str(tmp_path / "repo"), "--out", str(out)]
    assert benchmarks_cli.main([*argv, "--build-dir", str(tmp_path / "build")]) == 2
    assert "tolerance_pct nan" in caplog.text and not out.exists()


def test_a_model_the_default_repository_does_not_build_is_refused_not_rebuilt(tmp_path, caplog, monkeypatch):
    """Before: --models resnet21 (a typo, or a user's network not exported yet) rebuilt and tuned the whole default
    repository (minutes), which cannot make it."""
    from resnet_serve.export import default_repository

    def rebuild(*args, **kwargs):
        raise AssertionError("the default repository was rebuilt for a model it does not build")

    monkeypatch.setattr(default_repository, "build_default_repository", rebuild)
    argv = ["--models", "resnet21", "--no-server", "--build-dir", str(tmp_path / "build"), "--out", str(tmp_path / "o")]
    assert benchmarks_cli.main([*argv, "--repository", str(tmp_path / "repo")]) == 2
    assert "resnet21 in " + str(tmp_path / "build") + ": no exported engines; export it first" in caplog.text
    assert "or pick from the default repository's resnet20, resnet50" in caplog.text


@pytest.mark.parametrize(
    ("url", "grpc", "http"),
    [
        (None, "localhost:8001", "localhost:8000"),
        ("example.org", "example.org:8001", "example.org:8000"),
        ("http://127.0.0.1:9000/", "127.0.0.1:9000", "127.0.0.1:9000"),
        ("[::1]", "[::1]:8001", "[::1]:8000"),
        ("grpc://[::1]:7001", "[::1]:7001", "[::1]:7001"),
    ],
)
def test_server_urls_are_host_port(url, grpc, http):
    assert (normalize_url(url, "grpc"), normalize_url(url, "http")) == (grpc, http)


@pytest.mark.parametrize("url", ["localhost:abc", "localhost:99999", "h:0", "h:", ":8001", "::1", "[::1", "a b:1"])
def test_a_server_url_that_is_not_host_port_exits_2(url, tmp_path, capsys):
    # before: over HTTP an AttributeError from tritonclient; over gRPC port 99999 dialled 34463 (99999 - 65536)
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not read: the URL is checked first")
    for protocol in ("grpc", "http"):
        assert client_cli.main(["classify", "--protocol", protocol, "--url", url, str(image)]) == 2
        err = capsys.readouterr().err
        assert f"--url {url!r} is not HOST:PORT with a port from 1 to 65535" in err, err


def test_an_output_file_that_cannot_be_written_exits_2_before_any_request(tmp_path, capsys):
    # before: IsADirectoryError / FileNotFoundError tracebacks, and a folder was said to "already hold results"
    image = tmp_path / "x.jpg"
    image.write_bytes(b"not read: the output is checked before the server is contacted")
    no_server = ["classify", "--url", "127.0.0.1:9", str(image)]
    for output, extra, message in (
        (tmp_path, [], f"--output {tmp_path} is a folder; pass a file, e.g. {tmp_path / 'results.jsonl'}"),
        (tmp_path, ["--resume"], f"--output {tmp_path} is a folder"),
        (tmp_path / "no" / "x.jsonl", [], "(No such file or directory); pass a file in a folder that exists"),
    ):
        assert client_cli.main([*no_server, "--output", str(output), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "cannot reach" not in err, err


OUT_FLAGS = [
    (export_cli.build_parser, ["--checkpoint", "c.pt"], "--out"),
    (export_default_repository.build_parser, [], "--build-dir"),
    (train.build_parser, [], "--out"),
    (experiments.build_parser, ["degradation"], "--out"),
    (experiments.build_parser, ["degradation"], "--work"),
    (benchmarks_cli.build_parser, [], "--out"),
    (tune.build_parser, [], "--out"),
    (pinning.build_parser, ["--engine", "x"], "--out"),
    (idle_wait.build_parser, ["--engine", "x"], "--out"),
    (gpu_check.build_parser, ["pack"], "--out"),
]


@pytest.mark.parametrize(
    ("build", "needed", "flag"),
    OUT_FLAGS,
    ids=[f"{build.__module__.removeprefix('resnet_serve.')} {flag}" for build, _, flag in OUT_FLAGS],
)
def test_an_output_folder_that_is_a_file_exits_2(build, needed, flag, tmp_path, capsys):
    # before: a FileExistsError or NotADirectoryError traceback, for tune and benchmarks after the whole run
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    parser = build()
    for value, message in ((a_file, "is a file; pass a folder"), (a_file / "sub", f"is under a file ({a_file})")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*needed, flag, str(value)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: {str(value)!r} {message}" in err, err
    new = tmp_path / "new" / "folder"
    assert getattr(parser.parse_args([*needed, flag, str(new)]), flag.lstrip("-").replace("-", "_")) == new
    assert not new.exists()  # checked, not made


def test_health_checks_its_url_as_the_client_does(capsys):
    # before: "localhost:abc" ended in an AttributeError traceback from tritonclient
    assert health.main(["--url", "localhost:abc", "--model", "resnet20"]) == 2
    assert "--url 'localhost:abc' is not HOST:PORT" in capsys.readouterr().err
