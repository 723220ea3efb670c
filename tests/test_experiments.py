"""The paper-reproduction driver (resnets.experiments) on a tiny synthetic CIFAR-10 in the official layout."""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest
import torch

from resnet_serve.resnets import experiments
from resnet_serve.resnets.experiments import Protocol, Run, findings, layer_response_std, response_layers
from resnet_serve.resnets.models import build
from resnet_serve.resnets.spec import CIFAR10
from resnet_serve.resnets.tensors import Normalizer


@pytest.fixture
def tiny_cifar(tmp_path):
    """60 training and 30 test images of random pixels, as the official python batches."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar"
    root.mkdir()
    for name, n in [*((f"data_batch_{i}", 12) for i in range(1, 6)), ("test_batch", 30)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def run_cli(tiny_cifar, tmp_path, *extra: str) -> int:
    return experiments.main(
        ["degradation", "--data-dir", str(tiny_cifar), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
         "--threads", "1", "--batch-size", "16", "--eval-every", "2", *extra]
    )  # fmt: skip


def test_degradation_runs_end_to_end_and_writes_json_plot_and_checkpoints(tiny_cifar, tmp_path):
    archs = "plain20,plain56,resnet20,resnet56"
    assert run_cli(tiny_cifar, tmp_path, "--archs", archs, "--iterations", "4") == 0
    result = json.loads((tmp_path / "out" / "degradation.json").read_text())
    assert list(result["nets"]) == archs.split(",")
    assert result["protocol"]["iterations"] == 4 and result["protocol"]["data"]["train_images"] == 60
    for arch, net in result["nets"].items():
        assert [h["iteration"] for h in net["history"]] == [2, 4]
        assert net["complete"] and 0 <= net["final"]["train_error_pct_no_augmentation"] <= 100
        assert net["history"][-1]["lr"] == pytest.approx(0.001)  # divided twice: at 50% and 75%
        assert (tmp_path / "work" / arch / f"{arch}.pt").is_file()
    assert [(f["shallow"], f["deep"]) for f in result["findings"]] == [("plain20", "plain56"), ("resnet20", "resnet56")]
    assert (tmp_path / "out" / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert experiments.main(["report", "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "README.md").read_text()
    assert "| resnet56 | 4 |" in report and "| 6.97 |" in report  # ours beside the paper's Table 6
    assert report.count("vs plain20") == 1 and report.count("vs resnet20") == 1


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_cifar, tmp_path):
    from resnet_serve.resnets.data import load_cifar10

    train = load_cifar10(tiny_cifar, "train")
    images, labels = torch.from_numpy(train.images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(train.labels)
    protocol = Protocol(archs=("resnet20",), iterations=6, eval_every=3, batch_size=16)
    torch.set_num_threads(1)  # one thread: bit-for-bit repeatable CPU kernels

    straight = Run("resnet20", protocol, images, labels, tmp_path / "a")
    while not straight.done:
        straight.train_turn()

    first = Run("resnet20", protocol, images, labels, tmp_path / "b")
    first.train_turn()  # 3 iterations: into the second epoch (4 batches of 16 per epoch of 60 images)
    first.save()
    resumed = Run("resnet20", protocol, images, labels, tmp_path / "b")
    assert resumed.resume() and resumed.iteration == 3 and resumed.stream.position == 3
    resumed.train_turn()
    assert resumed.done and resumed.stream.epoch == 1
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


def test_resume_refuses_another_protocol_and_the_cli_resumes_a_finished_run(tiny_cifar, tmp_path, caplog):
    assert run_cli(tiny_cifar, tmp_path, "--archs", "resnet20", "--iterations", "2") == 0
    stamp = (tmp_path / "work" / "resnet20" / "state.pt").stat().st_mtime_ns
    assert run_cli(tiny_cifar, tmp_path, "--archs", "resnet20", "--iterations", "2") == 0  # nothing left to train
    assert (tmp_path / "work" / "resnet20" / "state.pt").stat().st_mtime_ns == stamp
    with caplog.at_level(logging.ERROR):
        assert run_cli(tiny_cifar, tmp_path, "--archs", "resnet20", "--iterations", "4") != 0
    assert "another protocol (iterations: 2 there, 4 asked)" in caplog.text and "--no-resume" in caplog.text


def test_bad_arguments_are_explained(tiny_cifar, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert run_cli(tiny_cifar, tmp_path, "--archs", "plain99", "--iterations", "2") != 0
        assert "unknown architecture 'plain99'; available:" in caplog.text
        assert run_cli(tiny_cifar, tmp_path, "--archs", "resnet50", "--iterations", "2") != 0
        assert "resnet50 is an ImageNet architecture" in caplog.text
        assert run_cli(tiny_cifar, tmp_path, "--iterations", "0") != 0
        assert "must be positive" in caplog.text
        code = experiments.main(["layer-responses", "--data-dir", str(tiny_cifar), "--work", str(tmp_path / "none")])
        assert code != 0 and "run `python -m resnets.experiments degradation` first" in caplog.text


@pytest.mark.parametrize(("arch", "count"), [("resnet20", 19), ("plain56", 55), ("resnet50", 16)])
def test_response_layers_are_every_3x3_conv_in_network_order(arch, count):
    names = [name for name, _ in response_layers(build(arch))]
    assert len(names) == count
    if arch == "resnet20":
        assert names[:4] == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
        assert names[-1] == "layer3.2.conv2"
    if arch == "resnet50":  # bottlenecks: only the middle conv is 3x3; the 7x7 stem is not
        assert names[0] == "layer1.0.conv2" and all(n.endswith("conv2") for n in names)


def test_layer_response_is_the_bn_output_before_the_relu():
    torch.manual_seed(0)
    model = build("resnet20").eval()
    for m in model.modules():  # non-trivial BN statistics, so every layer has its own scale
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.2, 3.0)
            m.bias.data.uniform_(-1.0, 1.0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    stds = layer_response_std(model, images, CIFAR10, batch_size=16)
    assert len(stds) == 19

    def channel_std_mean(t):  # std per channel over images and positions, mean over channels
        return t.transpose(0, 1).reshape(t.shape[1], -1).double().std(1, unbiased=False).mean().item()

    with torch.no_grad():
        x = Normalizer(CIFAR10)(images)
        stem = model.bn1(model.conv1(x))
        block = model.layer1[0]
        inner = block.bn1(block.conv1(torch.relu(stem)))
        second = block.bn2(block.conv2(torch.relu(inner)))
    for (name, value), expected in zip(stds[:3], (stem, inner, second), strict=True):
        assert value == pytest.approx(channel_std_mean(expected), rel=1e-4), name
    assert len({round(v, 4) for _, v in stds}) > 10  # the layers differ: not one number repeated


def test_findings_check_both_claims():
    def net(train, test):
        return {"final": {"train_error_pct": train, "train_error_pct_no_augmentation": None, "test_error_pct": test}}

    nets = {"plain20": net(5.0, 9.0), "plain56": net(8.0, 12.0), "resnet20": net(4.0, 8.0), "resnet56": net(4.5, 7.0)}
    plain, res = findings(nets)
    assert plain["reproduced"] and plain["train_error_pct_deep_minus_shallow"] == 3.0
    assert not res["reproduced"] and res["test_error_pct_deep_minus_shallow"] == -1.0
