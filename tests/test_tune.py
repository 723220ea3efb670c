"""The one-step served path (decode + preprocess + engine in one model, BYTES or raw UINT8 input), the client's
choice of input form, and the tune step: host facts, accuracy gating, choosing (budget, noise) and a real run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGENET_SAMPLE, REPO_ROOT
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from resnet_serve.benchmarks import tune
from resnet_serve.benchmarks.accuracy import served_logits
from resnet_serve.errors import UsageError
from resnet_serve.export.calibration import calibration_split, load_calibration_set
from resnet_serve.export.repository import (
    ServedModelFiles,
    host_profile,
    write_direct_model,
    write_floor_model,
    write_repository,
)
from resnet_serve.resnets.data import scan_image_folder
from resnet_serve.resnets.env import host_capabilities
from resnet_serve.resnets.spec import IMAGENET
from resnet_serve.server.index import RepositoryIndex, RepositoryIndexError


def cifar_files(cifar_jpg: Path, count: int) -> tuple[list[bytes], np.ndarray]:
    _, samples = scan_image_folder(cifar_jpg / "test")
    picked = samples[:: len(samples) // count][:count]
    return [p.read_bytes() for p, _ in picked], np.array([label for _, label in picked])


@pytest.fixture(scope="module")
def direct_server(default_repository, tmp_path_factory):
    """A repository whose ``resnet20`` is the one-step raw-bytes model, beside a one-step BYTES model and the
    ensemble of the same engine, and one-step OpenVINO INT8 models on two streams and in two instances, on the
    real server."""
    from resnet_serve.server import running

    repo = tmp_path_factory.mktemp("direct") / "repository"
    export_dir = default_repository / "build" / "resnet20"
    # a network tuned to OpenVINO streams: its ONNX Runtime models (no streams) must still load, on one stream
    tuned = replace(host_profile(), classifier_streams=2)
    write_repository(repo, export_dir, profile=tuned, engines=("onnxruntime-fp32",), default_path="direct-raw")
    write_direct_model(
        repo,
        "resnet20_direct",
        ServedModelFiles.load(export_dir),
        "onnxruntime-fp32",
        host_profile(),
        raw=False,
    )
    write_direct_model(
        repo,
        "resnet20_streams",
        ServedModelFiles.load(export_dir),
        "openvino-int8",
        replace(host_profile(), classifier_threads=2, classifier_streams=2, max_queue_delay_us=2000),
        raw=True,
    )
    write_direct_model(
        repo,
        "resnet20_instances",
        ServedModelFiles.load(export_dir),
        "openvino-int8",
        replace(host_profile(), classifier_instances=2, classifier_threads=1),
        raw=True,
    )
    write_floor_model(repo, "resnet20_floor", ServedModelFiles.load(export_dir), host_profile(), raw=True)
    with running(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        yield repo, server


def test_direct_model_configs(direct_server):
    repo, _ = direct_server
    raw = text_format.Parse((repo / "resnet20" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert raw.backend == "python" and raw.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert list(raw.input[0].dims) == [-1] and raw.input[0].allow_ragged_batch
    assert (repo / "resnet20" / "1" / "engine" / "engine.json").is_file()
    assert (repo / "resnet20" / "warmup" / "sample").read_bytes()[:2] == b"\xff\xd8"  # the JPEG itself, no prefix
    assert int(raw.parameters["threads"].string_value) == len(os.sched_getaffinity(0))  # the host's cores
    as_bytes = text_format.Parse(
        (repo / "resnet20_direct" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert as_bytes.input[0].data_type == model_config_pb2.TYPE_STRING and not as_bytes.input[0].allow_ragged_batch
    network = RepositoryIndex.load(repo).network("resnet20")
    assert network.default_path == "direct-raw" and network.default == "onnxruntime-fp32"
    # written with two streams (the server loaded them all): only the OpenVINO model takes them
    classifier = text_format.Parse(
        (repo / "resnet20_onnxruntime_fp32_classifier" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert "streams" not in raw.parameters and "streams" not in classifier.parameters
    streams_text = (repo / "resnet20_streams" / "config.pbtxt").read_text()
    streams = text_format.Parse(streams_text, model_config_pb2.ModelConfig())
    assert streams.parameters["streams"].string_value == "2"


def test_one_step_models_answer_exactly_as_the_ensemble(direct_server, cifar_jpg):
    _, server = direct_server
    encoded, labels = cifar_files(cifar_jpg, 40)
    ensemble = served_logits(server.grpc_url, "grpc", "resnet20_onnxruntime_fp32", encoded)
    direct = served_logits(server.grpc_url, "grpc", "resnet20_direct", encoded)
    raw = served_logits(server.grpc_url, "grpc", "resnet20", encoded, raw=True, concurrency=8)
    np.testing.assert_allclose(direct, ensemble, rtol=0, atol=1e-5)
    np.testing.assert_allclose(raw, ensemble, rtol=0, atol=1e-5)
    assert (raw.argmax(1) == labels).mean() > 0.8


def test_a_model_on_openvino_streams_answers_as_the_engine_offline(direct_server, default_repository, cifar_jpg):
    from resnet_serve.engines import load_engine
    from resnet_serve.resnets.spec import CIFAR10, normalize, preprocess_pixels

    repo, server = direct_server
    config = text_format.Parse((repo / "resnet20_streams" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.parameters["streams"].string_value == "2" and config.parameters["threads"].string_value == "2"
    encoded, labels = cifar_files(cifar_jpg, 40)
    served = served_logits(server.http_url, "http", "resnet20_streams", encoded, raw=True, concurrency=8)
    spec = CIFAR10
    engine = load_engine(default_repository / "build" / "resnet20" / "openvino-int8", threads=2)
    offline = engine.infer(normalize(np.stack([preprocess_pixels(b, spec) for b in encoded]), spec))
    np.testing.assert_allclose(served, offline, rtol=0, atol=1e-4)
    assert (served.argmax(1) == labels).mean() > 0.8


def test_openvino_instances_leave_their_threads_unpinned(direct_server, cifar_jpg):
    """Two instances (a process each) of one OpenVINO thread: pinned, both would run on the same first core.
    The classifier asks for no pinning and says so; a single instance owning every core stays pinned."""
    _, server = direct_server
    loaded = [line for line in server.log_tail if "openvino int8 (" in line]
    assert sum("resnet20_instances: openvino int8 (1 threads, not pinned)" in line for line in loaded) == 2, loaded
    cores = len(os.sched_getaffinity(0))
    streams = [line for line in loaded if "resnet20_streams: " in line]
    assert streams and all(("2 threads in 2 streams, pinned" in line) == (cores <= 2) for line in streams), streams
    encoded, labels = cifar_files(cifar_jpg, 24)
    served = served_logits(server.http_url, "http", "resnet20_instances", encoded, raw=True, concurrency=8)
    assert (served.argmax(1) == labels).mean() > 0.8


def test_the_serving_floor_takes_the_one_step_input_and_answers_zeros(direct_server, cifar_jpg):
    repo, server = direct_server
    floor = text_format.Parse((repo / "resnet20_floor" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    raw = text_format.Parse((repo / "resnet20" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert floor.input == raw.input and floor.output == raw.output  # the same contract as the one-step model
    assert not (repo / "resnet20_floor" / "1" / "engine").exists()
    encoded, _ = cifar_files(cifar_jpg, 8)
    served = served_logits(server.http_url, "http", "resnet20_floor", encoded, raw=True, concurrency=4)
    assert served.shape == (8, 10) and not served.any()


def test_client_sends_raw_bytes_one_per_request(direct_server, cifar_jpg):
    from resnet_serve.client import Classifier

    _, server = direct_server
    encoded, labels = cifar_files(cifar_jpg, 12)
    with (
        Classifier(server.grpc_url, "grpc", "resnet20") as raw,
        Classifier(server.http_url, "http", "resnet20_direct") as b,
    ):
        assert raw.info.kind == "raw" and b.info.kind == "ensemble"
        got = [p[0].index for p in raw.classify(encoded, top_k=1)]
        assert got == [p[0].index for p in b.classify(encoded, top_k=1)]
        results = raw.classify_detailed([encoded[0], b"not an image at all", encoded[1]], top_k=1)
    assert results[0].ok and results[2].ok
    assert not results[1].ok and "not a decodable image" in results[1].error


def test_raw_path_isolates_a_bad_image_among_batched_good_ones(direct_server, cifar_jpg):
    import tritonclient.grpc.aio as grpcclient

    _, server = direct_server
    encoded, _ = cifar_files(cifar_jpg, 15)
    expected = served_logits(server.grpc_url, "grpc", "resnet20_onnxruntime_fp32", encoded)

    async def send(data: np.ndarray):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            tensor = grpcclient.InferInput("image", list(data.shape), "UINT8")
            tensor.set_data_from_numpy(data)
            return (await client.infer("resnet20", [tensor])).as_numpy("logits")
        except Exception as exc:  # noqa: BLE001 - the test inspects the refusal
            return exc
        finally:
            await client.close()

    async def all_at_once():
        good = [np.frombuffer(b, np.uint8)[None, :] for b in encoded]
        bad = [np.frombuffer(b"\x89PNG\r\n\x1a\n broken", np.uint8)[None, :], np.stack([good[0][0], good[0][0]])]
        return await asyncio.gather(*(send(x) for x in good[:8] + bad + good[8:]))

    outcomes = asyncio.run(all_at_once())
    refused = outcomes[8:10]
    answered = outcomes[:8] + outcomes[10:]
    for i, logits in enumerate(answered):
        np.testing.assert_allclose(logits[0], expected[i], atol=1e-5)
    assert "INVALID_ARG" in str(refused[0].status()) and "decodable" in refused[0].message()
    assert "one encoded image per request" in refused[1].message()


def test_health_probes_answer_for_one_step_models(direct_server, capsys):
    from resnet_serve.server import health

    repo, server = direct_server
    assert health.main(["--url", server.http_url, "--model-repository", str(repo), "--json"]) == 0
    probed = {json.loads(line)["model"] for line in capsys.readouterr().out.splitlines()}
    assert {"resnet20", "resnet20_direct"} <= probed  # the raw-bytes and the BYTES one-step models


# ---- the tune step -----------------------------------------------------------------------------------


def test_host_capabilities_come_from_the_os():
    host = host_capabilities()
    assert host["cores"] == len(os.sched_getaffinity(0))
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].splitlines()[0].split()
    assert set(host["flags"]) == {f for f in tune_flags() if f in flags}
    assert host["native_bf16"] == bool({"avx512_bf16", "amx_bf16"} & set(flags))
    assert host_profile().classifier_threads == host["cores"]


def tune_flags():
    from resnet_serve.resnets.env import CAPABILITY_FLAGS

    return CAPABILITY_FLAGS


def measured(label: str, throughputs: list[float], p99s: list[float], errors: int = 0) -> tune.Measured:
    candidate = tune.Candidate(label, "direct", 1, 2, 0, (16,))
    runs = [
        {
            "round": i,
            "throughput_img_s": t,
            "latency_ms_p99": p,
            "errors": errors,
            "error_examples": ["boom"] if errors else [],
        }
        for i, (t, p) in enumerate(zip(throughputs, p99s, strict=True))
    ]
    return tune.Measured(candidate, runs)


def test_choose_takes_the_fastest_within_budget_and_says_why_others_lost():
    fast_but_slow_tail = measured("a", [900, 910], [80, 82])
    best = measured("b", [700, 720], [20, 22])
    second = measured("c", [600, 590], [10, 11])
    broken = measured("d", [1000, 1000], [5, 5], errors=3)
    winner, verdict = tune.choose([fast_but_slow_tail, best, second, broken], budget_ms=50)
    assert verdict == "ok" and winner is best and best.verdict == "winner"
    assert "over the 50 ms budget" in fast_but_slow_tail.verdict
    assert second.verdict.startswith("16.2%") and "less throughput" in second.verdict
    assert broken.verdict == "6 failed requests (boom)"  # 3 in each of the 2 repeats


def test_choose_names_the_closest_candidate_for_an_impossible_budget():
    winner, verdict = tune.choose([measured("a", [900, 910], [80, 82]), measured("b", [500, 500], [30, 32])], 10)
    assert winner is None
    assert verdict.startswith("impossible budget") and "the closest was b" in verdict
    assert "p99 31.0 ms (21.0 ms, 210% over)" in verdict


def test_choose_refuses_to_pick_noise():
    steady = measured("steady", [1000, 1010], [10, 10])
    jumpy = measured("jumpy", [1300, 900], [10, 10])  # repeats 36% apart: a busy machine
    winner, verdict = tune.choose([steady, jumpy], 50)
    assert winner is None and verdict.startswith("noisy") and "36%" in verdict and "jumpy" in verdict
    assert jumpy.verdict == "repeats disagree by 36%"


def test_choose_picks_on_a_noisy_machine_only_a_winner_that_led_every_round():
    # a busy spell in round 1 slows every candidate alike; the leader stays ahead in each round
    leader = measured("leader", [2000, 1500], [10, 10])
    other = measured("other", [1400, 1050], [10, 10])
    winner, verdict = tune.choose([other, leader], 50)
    assert winner is leader and verdict.startswith("ok, on a noisy machine") and "29%" in verdict


def default_measured(throughputs: list[float]) -> tune.Measured:
    m = measured("default", throughputs, [10] * len(throughputs))
    m.candidate = replace(m.candidate, role="untuned default")
    return m


def test_choose_on_a_noisy_machine_takes_the_fastest_of_a_tie_only_if_it_beat_the_default_every_round():
    # the two fastest each lead one round (not told apart); both beat the deployed model in every round
    a = measured("a", [1600, 1950], [10, 10])  # median 1775, repeats 20% apart: a busy machine
    b = measured("b", [1700, 1500], [10, 10])  # median 1600
    default = default_measured([1170, 1045])
    winner, verdict = tune.choose([default, b, a], 50)
    assert winner is a and a.verdict == "winner"
    assert verdict.startswith("ok, on a noisy machine") and "20%" in verdict
    assert "not told apart from 1 other candidate(s) (each served more than it in some round: b direct" in verdict
    assert "each of the 2 rounds both ran (1.37-1.87x)" in verdict
    assert b.verdict == "9.9% less throughput than the fastest (not told apart from it on this machine)"
    assert default.verdict == "37.6% less throughput than the fastest"  # a led it in every round

    # the same tie, but the default served more than the fastest in one round: no winner
    for m in (a, b):
        m.verdict = ""
    winner, verdict = tune.choose([default_measured([1170, 2000]), b, a], 50)
    assert winner is None and verdict.startswith("noisy")
    # one round shared with the default is too few to tell
    one = default_measured([1170])
    winner, verdict = tune.choose([one, b, a], 50)
    assert winner is None and verdict.startswith("noisy")
    assert tune.ratios_over_the_default(a, [one, a, b]) == []
    assert tune.ratios_over_the_default(a, [a, b]) == []  # no default among the candidates


def test_rounds_pair_only_within_a_stage_and_the_ratio_is_paired():
    leader = measured("leader", [2000, 1500], [10, 10])
    for r in leader.runs:
        r["stage"] = 2
    stage1 = measured("stage1", [1900, 1200], [10, 10])  # same round numbers, measured in another stage
    assert tune.paired(leader, stage1) == []
    assert not tune.led_every_round(leader, stage1)  # 1500 (slowest) is not above 1900 (fastest)
    assert tune.led_every_round(leader, measured("slow", [1400, 1100], [10, 10]))  # clearly apart
    # measured in the same stage: the median of the per-round ratios 2000 / 1000 and 1500 / 750
    reference = measured("reference", [1000, 750], [10, 10])
    for r in reference.runs:
        r["stage"] = 2
    assert tune.paired_ratio(leader, reference) == pytest.approx(2.0)
    assert tune.paired_ratio(leader, stage1) == pytest.approx(leader.throughput / stage1.throughput)


def test_ratio_figures_give_the_paired_median_its_range_and_skip_the_leader_itself():
    leader = measured("leader", [3000, 2400, 2600], [5, 5, 5])
    default = measured("default", [1000, 1200, 1000], [10, 10, 10])
    figures = tune.ratio_figures(leader, {"untuned default": default, "self": leader})
    key = "untuned_default"
    assert figures["ratios"] == {key: 2.6} and figures["ratio_ranges"][key] == [2.0, 3.0]
    assert figures["ratios_paired_rounds"] == {key: 3}
    assert tune.named(figures, "winner") == {
        "ratios": {"winner_over_untuned_default": 2.6},
        "ratio_ranges": {"winner_over_untuned_default": [2.0, 3.0]},
        "ratios_paired_rounds": {"winner_over_untuned_default": 3},
    }


def test_a_winner_that_serves_no_more_than_the_default_in_the_final_comparison_is_withdrawn():
    # the stages ranked it first; the head to head, rounds seconds apart, says it serves less than the default
    leader, other = measured("leader", [31, 30], [600, 610]), measured("other", [28, 27], [600, 610])
    winner, verdict = tune.choose([leader, other], 1000)
    assert winner is leader and verdict == "ok"
    assert other.verdict.endswith("% less throughput than the fastest")  # true whether or not it is chosen
    figures = {
        "ratios": {"untuned_default": 0.95, "FP32_default": 1.93},
        "ratio_ranges": {"untuned_default": [0.83, 1.02], "FP32_default": [1.9, 2.25]},
        "ratios_paired_rounds": {"untuned_default": 3, "FP32_default": 3},
    }
    doubt = "in the head to head it served 0.95x the untuned default (0.83-1.02x per round)"
    assert tune.unconfirmed(figures, "head to head") == doubt
    winner, verdict = tune.confirm(leader, verdict, figures, "head to head")
    assert winner is None and verdict.startswith(f"not confirmed: {doubt}; ")
    assert leader.verdict == doubt and leader.as_dict()["verdict"] == doubt
    # equal is not better; ahead of the default, or the default itself (no such ratio), stands
    equal = {"ratios": {"untuned_default": 1.0}, "ratio_ranges": {}}
    assert (
        tune.unconfirmed(equal, "stages")
        == "in the paired rounds it served 1.00x the untuned default (1.00-1.00x per round)"
    )
    ahead = {"ratios": {"untuned_default": 1.01}, "ratio_ranges": {}}
    assert tune.confirm(other, "ok", ahead, "stages") == (other, "ok")
    assert tune.unconfirmed({"ratios": {"FP32_default": 3.1}, "ratio_ranges": {}}, "stages") == ""
    assert tune.confirm(None, "noisy: ...", figures, "head to head") == (None, "noisy: ...")  # nothing to withdraw


def test_held_out_images_are_labelled_only_by_the_model_labels(default_repository, cifar_jpg, tmp_path, monkeypatch):
    """A CIFAR-sized model with labels of its own is checked by agreement on the CIFAR-10 test images, not
    scored against CIFAR-10's classes (before: it was); an ImageFolder of its own is matched by folder name."""
    from resnet_serve.export.summary import ExportSummary

    summary = ExportSummary.load(default_repository / "build" / "resnet20")
    assert tune.held_out_images(summary, 16, None).labels is not None  # the CIFAR-10 classes: labelled
    labels = ["tulip", "rose", "daisy", "iris", "lily", "orchid", "poppy", "aster", "lotus", "peony"]
    monkeypatch.setattr(summary, "labels", lambda: labels)
    held = tune.held_out_images(summary, 16, None)
    assert held.labels is None and len(held.encoded) == 16
    flowers = tmp_path / "flowers"
    for name, source in (("rose", "cat"), ("tulip", "dog")):
        (flowers / name).mkdir(parents=True)
        for path in sorted((cifar_jpg / "test" / source).iterdir())[:3]:
            (flowers / name / path.name).write_bytes(path.read_bytes())
    held = tune.held_out_images(summary, 16, flowers)
    assert sorted(held.labels.tolist()) == [0, 0, 0, 1, 1, 1]  # tulip is class 0, rose class 1


def test_cpu_split_measures_the_leaders_work_apart_and_gives_the_rest_to_sharing_the_cores(default_repository):
    from resnet_serve.export.summary import ExportSummary

    summary = ExportSummary.load(default_repository / "build" / "resnet20")
    held = tune.held_out_images(summary, 64, None)

    def served(role: str, engine: str, cpu: dict, batch: dict) -> tune.Measured:
        c = tune.Candidate(engine, "direct-raw", 2, 1, 0, (8,), "http", role=role)
        return tune.Measured(c, [{"cpu_us_per_image": cpu, "avg_batch": batch} for _ in range(3)])

    leader = served("", "openvino-int8", {"client": 150, "server": 200, "models": 1000}, {"candidate_00": 4.6})
    default = served("untuned default", "openvino-int8", {"client": 450, "server": 480, "models": 1600}, {})
    floor = served(tune.FLOOR, "none", {"client": 120, "server": 150, "models": 80}, {"candidate_02": None})
    split = tune.cpu_split([leader, default, floor], summary, held, summary.model.spec)
    assert split["leader"] == 1350 and split["serving_floor"] == 350 and split["untuned_default"] == 2530
    assert split["work_batch"] == 5  # the engine's average batch in the head to head, rounded
    assert 0 < split["work_offline"] < 100_000  # decode + preprocess + a 1-thread INT8 ResNet-20, measured here
    assert split["lost_sharing_cores"] == pytest.approx(1350 - 350 - split["work_offline"], abs=0.2)
    assert split["ceiling_over_untuned_default"] == round(2530 / (350 + split["work_offline"]), 2)
    # the same measurement split by thread: this thread decoding, the engine's calls, and the engine's other
    # threads' CPU while this one decoded (none can be negative); together the whole end-to-end figure
    parts = [split[k] for k in ("decode_preprocess", "engine_calls", "engine_waiting_between_calls")]
    assert parts[0] > 0 and parts[1] > 0 and parts[2] >= 0
    assert sum(parts) == pytest.approx(split["work_offline"], abs=0.3)
    busy = split["work_offline"] - split["engine_waiting_between_calls"]
    assert split["ceiling_without_engine_waiting"] == round(2530 / (350 + busy), 2)
    assert tune.cpu_split([leader, default], summary, held, summary.model.spec) == {}  # no floor measured


def test_the_report_of_a_committed_run_splits_the_leaders_cpu_and_gives_each_ones_cores_busy():
    from resnet_serve.benchmarks import tune_report

    result = json.loads((REPO_ROOT / "benchmarks/reports/tune/epyc-avx2/resnet20/tune.json").read_text())
    text = tune_report.markdown(result)
    for c in result["head_to_head"]["candidates"]:  # cores busy: CPU seconds per second, the median of the rounds
        busy = sorted(r["throughput_img_s"] * sum(r["cpu_us_per_image"].values()) / 1e6 for r in c["runs"])
        median = (busy[2] + busy[3]) / 2  # 6 rounds
        row = next(line for line in text.splitlines() if line.startswith(f"| {c['label']} |"))
        assert row.endswith(f"| {median:.2f} of {result['host']['cores']} |")
    split = result["head_to_head"]["cpu_us_per_image"]
    who = "winner" if result["winner"] else "leader"  # this run chose one; a noisy one names its leader
    assert f"Where the {who}'s CPU per image goes: {split['leader']:,.0f} us served" in text
    assert f"at most about {split['ceiling_over_untuned_default']:.2f}x the untuned default" in text


def test_head_to_head_flag():
    parse = tune.build_parser().parse_args
    assert tune.options_from(parse([]), large=False).head_to_head_rounds == 6
    assert tune.options_from(parse(["--quick"]), large=False).head_to_head_rounds == 0
    assert tune.options_from(parse(["--quick", "--head-to-head", "4"]), large=True).head_to_head_rounds == 4
    with pytest.raises(SystemExit):  # argparse: "argument --head-to-head: expected a whole number of at least 0"
        parse(["--head-to-head", "-1"])
    assert tune.head_to_head_seconds(tune.Options(duration_s=8.0)) == 4.0
    assert tune.head_to_head_seconds(tune.Options(duration_s=1.0)) == 1.0


def test_calibration_split_is_the_calibration_pick_and_the_rest(tmp_path):
    if not IMAGENET_SAMPLE.is_dir():
        pytest.skip("needs the ImageNet sample images")
    pick, rest = calibration_split(IMAGENET_SAMPLE, 50)
    assert len(pick) == 50 and len(rest) == len(list(IMAGENET_SAMPLE.glob("*.JPEG"))) - 50
    assert not set(pick) & set(rest)
    calibration, _ = load_calibration_set(IMAGENET_SAMPLE, IMAGENET, 3)
    from resnet_serve.resnets.data import load_image_file
    from resnet_serve.resnets.spec import normalize

    np.testing.assert_array_equal(calibration[0], normalize(load_image_file(pick[0], IMAGENET), IMAGENET))


def test_accuracy_check_on_resnet50_holds_out_the_calibration_images(default_repository):
    from resnet_serve.export.summary import ExportSummary

    summary = ExportSummary.load(default_repository / "build" / "resnet50")
    if not any(a.precision == "int8" for a in summary.artifacts):
        pytest.skip("the default ResNet-50 has INT8 only where the ImageNet sample images are present")
    held = tune.held_out_images(summary, 20, None)
    pick, _ = calibration_split(IMAGENET_SAMPLE, 50)
    assert not {p.read_bytes() for p in pick} & set(held.encoded)
    host = {**host_capabilities(), "native_bf16": False}
    rows = tune.accuracy_check(summary, held, host, tune.Options())
    assert rows["openvino-int8"]["images"] == 20
    assert "distinct classes" in rows["openvino-int8"]["why"]  # random weights: agreement alone proves little
    if "openvino-bf16" in rows:
        assert not rows["openvino-bf16"]["ok"] and "no native bf16" in rows["openvino-bf16"]["why"]


def test_a_winner_on_an_engine_the_repository_did_not_serve_is_added_to_it(default_repository, tmp_path):
    repo, export_dir = tmp_path / "repository", default_repository / "build" / "resnet20"
    write_repository(repo, export_dir, engines=("onnxruntime-fp32", "openvino-int8"))
    winner = tune.Measured(tune.Candidate("onnxruntime-int8", "direct", 2, 1, 0, (8,), "http"))
    result = {
        "winner": {**winner.as_dict(), "throughput_img_s": 1742.8, "latency_ms_p99": 17.1},
        "options": {"p99_budget_ms": 100.0, "concurrency": 16},
        "accuracy": {"onnxruntime-int8": {"why": "top-1 +0.03 points vs FP32"}},
        "host": {"cpu_model": "x", "cores": 2, "flags": ["avx2"]},
        "started": "2026-12-07 08:00:00 UTC",
    }
    files = ServedModelFiles.load(export_dir)
    tune.write_winner(repo, export_dir, files, winner, host_profile(), result, None)
    network = RepositoryIndex.load(repo).network("resnet20")
    assert {e.key for e in network.engines} == {"onnxruntime-fp32", "openvino-int8", "onnxruntime-int8"}
    assert (network.default, network.default_path) == ("onnxruntime-int8", "direct")
    assert network.tuning["choice"] == "onnxruntime-int8 direct http 2x1t delay 0us pref 8"


@pytest.mark.slow
def test_a_real_tune_run_writes_the_winner_and_its_evidence(default_repository, tmp_path):
    repo = tmp_path / "repository"
    export_dir = default_repository / "build" / "resnet20"
    write_repository(repo, export_dir, engines=("onnxruntime-fp32", "openvino-int8"))
    options = tune.Options(duration_s=1.0, repeats=2, engines_served=1, delays_us=(0,), eval_images=300)

    impossible = tune.tune(export_dir, repo, tune.replace(options, p99_budget_ms=0.01), report=tmp_path / "x.md")
    assert impossible["winner"] is None and impossible["verdict"].startswith("impossible budget")
    assert RepositoryIndex.load(repo).network("resnet20").tuning is None  # nothing written

    final = tune.replace(options, p99_budget_ms=1000, head_to_head_rounds=2)
    result = tune.tune(export_dir, repo, final, report=tmp_path / "tune.md")
    # the ratios come from the head to head: the leader and both references, alone, in 2 rounds of stage 3
    assert result["ratios_from"] == "head to head"
    h2h = result["head_to_head"]["candidates"]
    assert h2h[0]["label"] in result["ratios_of"] or result["ratios_of"] == "winner"
    assert {c["role"] for c in h2h[1:]} == {"untuned default", "FP32 default", "serving floor"}
    assert all([r["stage"] for r in c["runs"]] == [3, 3] and c["errors"] == 0 for c in h2h)
    floor = next(c for c in h2h if c["role"] == "serving floor")  # the leader's serving, no work: faster
    assert floor["path"].startswith("floor") and floor["throughput_img_s"] > h2h[0]["throughput_img_s"]
    assert 0 < next(v for k, v in result["ratios"].items() if k.endswith("_over_serving_floor")) < 1
    split = result["head_to_head"]["cpu_us_per_image"]  # the leader's CPU per image: floor + work + the rest
    assert split["serving_floor"] < split["leader"] and split["work_offline"] > 0 and split["work_batch"] >= 1
    assert split["leader"] == pytest.approx(
        split["serving_floor"] + split["work_offline"] + split["lost_sharing_cores"], abs=0.2
    )
    assert all(f["end_to_end_cpu_us_per_image"] > 0 for f in result["offline"].values())
    for key, (low, high) in result["ratio_ranges"].items():
        assert low <= result["ratios"][key] <= high and result["ratios_paired_rounds"][key] == 2
    roles = {c["role"] for c in result["candidates"]}
    assert {"untuned default", "FP32 default"} <= roles
    assert {c["protocol"] for c in result["candidates"]} == {"grpc", "http"}  # both clients measured
    untuned = next(c for c in result["candidates"] if c["role"] == "untuned default")
    assert {r["stage"] for r in untuned["runs"]} == {1, 2}  # measured again beside stage 2's candidates
    assert all(c["errors"] == 0 for c in result["candidates"])
    assert set(result["offline"]) == {k for k, row in result["accuracy"].items() if row["ok"]}
    if result["winner"] is None:  # a busy machine: the verdict says so, and nothing was written
        # the rounds did not show one clear leader, or the head to head did not confirm the stages' one
        assert result["verdict"].startswith(("noisy", "not confirmed"))
        assert result["ratios_of"].startswith("leader, not chosen")
        assert RepositoryIndex.load(repo).network("resnet20").tuning is None
        return
    network = RepositoryIndex.load(repo).network("resnet20")
    assert network.tuning["choice"] == result["winner"]["label"]
    assert network.default == result["winner"]["engine"] and network.default_path == result["winner"]["path"]
    assert network.tuning["protocol"] == result["winner"]["protocol"]
    from resnet_serve.benchmarks import tune_report

    tune_report.write(result, tmp_path / "report")
    assert json.loads((tmp_path / "report" / "tune.json").read_text())["verdict"].startswith("ok")
    text = (tmp_path / "report" / "tune.md").read_text()
    assert "winner" in text and "measured head to head after the stages" in text
    assert "Where the winner's CPU per image goes" in text
    assert f"the engine's calls {split['engine_calls']:,.0f}" in text
    assert f"would reach about {split['ceiling_without_engine_waiting']:.2f}x" in text
    assert (tmp_path / "report" / "tune.png").stat().st_size > 10_000
    shutil.rmtree(tmp_path / "report")


def test_protocols_flag():
    parse = tune.build_parser().parse_args
    assert tune.options_from(parse(["--protocols", "http"]), large=False).protocols == ("http",)
    assert tune.options_from(parse([]), large=False).protocols == ("grpc", "http")
    for bad in ("", "https", "grpc,tcp"):
        with pytest.raises(UsageError, match="--protocols takes grpc and/or http"):
            tune.options_from(parse(["--protocols", bad]), large=False)


def test_a_repository_the_winner_cannot_go_into_is_refused_before_measuring(tmp_path, caplog):
    # before: found only when the winner was written, minutes later (a corrupt index: a JSONDecodeError traceback)
    (tmp_path / "a-file").write_text("")
    index = tmp_path / "repo" / "index.json"
    index.parent.mkdir()
    for repository, text in (("a-file", None), ("repo", "{not json"), ("repo", '{"format": "other/1"}')):
        if text is not None:
            index.write_text(text)
        argv = ["--repository", str(tmp_path / repository), "--build-dir", str(tmp_path / "no-build")]
        assert tune.main(argv) == 2
    log = caplog.text
    assert "a-file is not a folder; pass the model repository, or --no-write" in log
    assert "index.json is not a resnet-serve-repository-index/1 index (JSONDecodeError" in log
    assert "(ValueError: format 'other/1'); move it aside and write the repository again" in log
    assert "no export of" not in log  # refused before anything else was looked at
    with pytest.raises(RepositoryIndexError, match="is not a resnet-serve-repository-index/1 index"):
        RepositoryIndex.load(tmp_path / "repo")


def test_requests_larger_than_a_batch_and_a_bad_sample_image_are_refused_before_measuring(
    default_repository, tmp_path, caplog, monkeypatch
):
    """Before: --images-per-request 100000 measured every candidate at 0 img/s (Triton refused each request),
    and an undecodable --sample-image failed only when the first candidate repository was written."""

    def measure(*args, **kwargs):
        raise AssertionError("tune began measuring")

    monkeypatch.setattr(tune, "tune", measure)
    argv = ["--model", "resnet20", "--no-write", "--build-dir", str(default_repository / "build"), "--quick"]
    assert tune.main([*argv, "--images-per-request", "100000"]) == 2
    assert "--images-per-request 100000 is more than a served resnet20 model takes in one request" in caplog.text
    assert "(max_batch_size 256); pass at most 256" in caplog.text
    (tmp_path / "a.jpg").write_text("hi")
    assert tune.main([*argv, "--sample-image", str(tmp_path / "a.jpg")]) == 2
    assert "a.jpg: not a decodable image (2 bytes" in caplog.text
    assert tune.main([*argv, "--sample-image", str(tmp_path / "none.jpg")]) == 2
    assert "--sample-image " + str(tmp_path / "none.jpg") + " is not a file" in caplog.text


def test_the_index_is_replaced_whole_and_leaves_no_partial_file(tmp_path):
    """Written to a side file and renamed: a run killed mid-write keeps the previous index readable."""
    first = RepositoryIndex()
    first.save(tmp_path)
    before = (tmp_path / "index.json").stat().st_ino
    RepositoryIndex.load(tmp_path).save(tmp_path)
    assert (tmp_path / "index.json").stat().st_ino != before  # a new file took its place, not an overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]
    assert RepositoryIndex.load(tmp_path).networks == {}
