"""Serve your own ResNet: models written here in other code's styles, saved as users save them, imported,
exported, served by the real Triton server and called through the client.

For each: the served FP32 logits are within 1e-4 of the foreign module's own forward on the same images
(sent PNG-encoded, so lossless), the top-1 is the same for every image, and the labels come from the
user's file. Bad checkpoints get errors that name what was found and what to pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from foreign_models import (
    CifarResNet,
    TorchvisionStyleResNet18,
    as_split_style,
    randomize,
    save_dataparallel_training_checkpoint,
    save_lightning_checkpoint,
)
from PIL import Image
from test_preprocess import torchvision_resize_center_crop

from resnet_serve.client import Classifier
from resnet_serve.export.summary import ExportSummary
from resnet_serve.resnets.checkpoint import load_checkpoint
from resnet_serve.resnets.spec import CIFAR10, encode_png
from resnet_serve.server import running

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ONNX_MEAN, ONNX_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
FP32 = ["--engines", "onnxruntime", "--precisions", "fp32", "--no-tensorrt-ready"]


def export(*args) -> subprocess.CompletedProcess:
    """``python -m resnet_serve.export ARGS``, as a user runs it: the JSON summary on stdout, the log on stderr."""
    return subprocess.run(
        [sys.executable, "-m", "resnet_serve.export", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def forward(module: torch.nn.Module, pixels: np.ndarray, mean, std) -> np.ndarray:
    """The foreign module on uint8 HWC pixels, normalized as the user's own code would."""
    x = (pixels.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def served_logits(url: str, model: str, encoded: list[bytes]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    parts = []
    for start in range(0, len(encoded), 64):
        data = np.array([[b] for b in encoded[start : start + 64]], dtype=np.object_)
        tensor = grpcclient.InferInput("image", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        parts.append(client.infer(model, [tensor]).as_numpy("logits"))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, cifar_exact, resnet20_checkpoint):
    """Four foreign models exported (``python -m resnet_serve.export``) into one repository and served;
    yields (server, the models and their facts, the folder, each export's completed process)."""
    root = tmp_path_factory.mktemp("import")
    repo, models = root / "repo", {}

    # (a) CIFAR ResNet code: linear head, Sequential/lambda shortcuts with zeros split before and after,
    #     100 classes, ImageNet mean/std, a DataParallel training checkpoint
    cifar100 = randomize(CifarResNet(num_classes=100), seed=1)
    save_dataparallel_training_checkpoint(cifar100, root / "cifar100_best.pth.tar")
    (root / "cifar100_labels.txt").write_text("\n".join(f"species {i:03d}" for i in range(100)) + "\n")
    models["cifar100net"] = dict(
        module=cifar100,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        labels=[f"species {i:03d}" for i in range(100)],
        args=["--checkpoint", root / "cifar100_best.pth.tar", "--arch", "resnet20", "--option-a", "split",
              "--mean", ",".join(map(str, IMAGENET_MEAN)), "--std", ",".join(map(str, IMAGENET_STD)),
              "--labels", root / "cifar100_labels.txt", "--name", "cifar100net"],
    )  # fmt: skip

    # (b) a torchvision-key ResNet-18 with 37 classes, a Lightning checkpoint, its own labels (JSON)
    pets = randomize(TorchvisionStyleResNet18(num_classes=37), seed=2)
    save_lightning_checkpoint(pets, root / "pets-epoch=29.ckpt")
    pet_names = [f"breed-{i}" for i in range(37)]
    (root / "pets.json").write_text(json.dumps({str(i): n for i, n in enumerate(pet_names)}))
    models["pets"] = dict(
        module=pets,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        labels=pet_names,
        args=["--checkpoint", root / "pets-epoch=29.ckpt", "--arch", "resnet18", "--labels", root / "pets.json",
              "--name", "pets"],
    )  # fmt: skip

    # (c) an ONNX file exported from a foreign module that is not one of this project's architectures
    small = randomize(CifarResNet(num_blocks=(2, 2, 2), num_classes=10), seed=3)
    torch.onnx.export(
        small, (torch.zeros(1, 3, 32, 32),), str(root / "small.onnx"), input_names=["data"],
        output_names=["scores"], opset_version=17, dynamo=False,
    )  # fmt: skip
    onnx_labels = [f"kind {c}" for c in "abcdefghij"]
    (root / "small_labels.json").write_text(json.dumps(onnx_labels))
    models["small"] = dict(
        module=small,
        mean=ONNX_MEAN,
        std=ONNX_STD,
        labels=onnx_labels,
        args=["--onnx", root / "small.onnx", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
              "--labels", root / "small_labels.json"],
    )  # fmt: skip

    # (d) the trained ResNet-20 rewritten in (a)'s style: split zeros, linear head, a bare state_dict
    ours, _ = load_checkpoint(resnet20_checkpoint)
    trained = as_split_style(ours)
    torch.save(trained.state_dict(), root / "resnet20_split.pth")
    models["resnet20_split"] = dict(
        module=trained,
        mean=CIFAR10.mean,
        std=CIFAR10.std,
        labels=CIFAR10.default_labels(),
        args=["--checkpoint", root / "resnet20_split.pth", "--arch", "resnet20", "--option-a", "split",
              "--preset", "cifar10", "--name", "resnet20_split"],
    )  # fmt: skip

    runs = {}
    for name, model in models.items():
        runs[name] = export(*model["args"], "--out", root / "build" / name, *FP32, "--no-eval", "--repository", repo)
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    with running(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        yield server, models, root, runs


def check_served(server, name: str, model: dict, pixels: np.ndarray):
    """Served logits vs the foreign module on the same images (PNG: lossless), labels from the user's file."""
    encoded = [encode_png(p) for p in pixels]
    served = served_logits(server.grpc_url, name, encoded)
    expected = forward(model["module"], pixels, model["mean"], model["std"])
    assert np.abs(served - expected).max() <= 1e-4, np.abs(served - expected).max()
    assert np.array_equal(served.argmax(1), expected.argmax(1))
    with Classifier(server.grpc_url, model=name) as clf:
        top = clf.classify(encoded[:4], top_k=3)
    for predictions, row in zip(top, expected[:4], strict=True):
        assert [p.index for p in predictions] == list(np.argsort(-row)[:3])
        assert [p.label for p in predictions] == [model["labels"][p.index] for p in predictions]
    return served, expected


def test_a_cifar_training_checkpoint_from_other_code(imported, cifar_test_set):
    server, models, _, runs = imported
    pixels = cifar_test_set.images[::500]  # 20 real 32x32 test images, one class after another
    check_served(server, "cifar100net", models["cifar100net"], pixels)
    # the export said how it found and mapped the weights, and which contract it assumed, and from where
    log = runs["cifar100net"].stderr
    assert "weights: training checkpoint (weights under 'state_dict'), 116 tensors matched" in log
    assert "ignored: epoch (int), best_prec1 (float), optimizer (dict of 2), args (Namespace)" in log
    assert "prefix stripped from every key: module." in log and "renamed 2 keys: head linear.* -> fc.*" in log
    assert "states no image_size, resize_size, interpolation: assumed from the resnet20 architecture's default" in log
    printed = json.loads(runs["cifar100net"].stdout)
    assert printed["contract"]["mean"] == "0.485,0.456,0.406 (from --mean)"
    assert printed["contract"]["image_size"] == "32 (from the resnet20 architecture's default (cifar10))"
    assert printed["option_a"] == "split (--option-a)"


def test_b_torchvision_style_resnet18_with_its_own_classes(imported, imagenet_sample):
    server, models, root, _ = imported
    photos = [Image.open(f).convert("RGB") for f in sorted(imagenet_sample.glob("*.JPEG"))[:6]]
    # the user's preprocessing: torchvision's Resize(256) + CenterCrop(224), written out in test_preprocess.py
    expected_input = np.stack([torchvision_resize_center_crop(p, 256, 224) for p in photos])
    encoded = [encode_png(np.asarray(p)) for p in photos]
    served = served_logits(server.grpc_url, "pets", encoded)
    expected = forward(models["pets"]["module"], expected_input, IMAGENET_MEAN, IMAGENET_STD)
    assert np.abs(served - expected).max() <= 1e-4, np.abs(served - expected).max()
    assert np.array_equal(served.argmax(1), expected.argmax(1))
    with Classifier(server.grpc_url, model="pets") as clf:
        assert [p[0].label for p in clf.classify(encoded, top_k=1)] == [f"breed-{i}" for i in expected.argmax(1)]
    summary = ExportSummary.load(root / "build" / "pets")
    assert (
        summary.model.import_report["prefixes_stripped"] == ["model."] and summary.model.import_report["filled"] == 20
    )
    assert summary.model.contract_sources["mean"] == "the resnet18 architecture's default (imagenet)"


def test_c_an_onnx_file_from_a_foreign_module(imported, cifar_test_set):
    server, models, root, runs = imported
    check_served(server, "small", models["small"], cifar_test_set.images[250::500])
    summary = ExportSummary.load(root / "build" / "small")
    assert summary.onnx["fixed_batch_made_dynamic"] == 1 and summary.onnx["io_as_given"].startswith(
        "data [1, 3, 32, 32]"
    )
    assert summary.model.contract_sources["image_size"] == "the ONNX graph's input"


@pytest.mark.slow
def test_d_exact_cifar_images_give_the_same_top1_served_as_the_foreign_code_offline(imported, cifar_exact):
    server, models, _, _ = imported
    pixels = np.load(cifar_exact / "test_first1017_uint8_nhwc.npy")
    labels = np.loadtxt(cifar_exact / "test_labels.txt", dtype=np.int64)[: len(pixels)]
    served, expected = check_served(server, "resnet20_split", models["resnet20_split"], pixels)
    served_top1 = float((served.argmax(1) == labels).mean())
    assert served_top1 == float((expected.argmax(1) == labels).mean()) and served_top1 > 0.9, served_top1


@pytest.mark.slow
def test_a_mis_declared_option_a_variant_fails_with_both_accuracies(imported):
    _, models, root, _ = imported
    args = [a if a != "split" else "after" for a in models["resnet20_split"]["args"]]
    run = export(*args, "--out", root / "build" / "misdeclared", *FP32)
    assert run.returncode == 2
    assert "the declared option-A zeros 'after' (--option-a) give" in run.stderr
    assert "but 'split' gives" in run.stderr and "pass --option-a split" in run.stderr


def test_unusable_checkpoints_say_what_was_found_and_what_to_pass(tmp_path):
    model = randomize(CifarResNet(num_classes=10), seed=4)
    state = model.state_dict()
    narrow = randomize(CifarResNet(num_classes=10, width=32), seed=5).state_dict()
    split = ["--option-a", "split"]
    cases = {  # what is wrong: (what torch.save writes, extra flags, what the error must say)
        "unmappable keys": (
            {**state, "projector.weight": torch.zeros(3)},
            split,
            "1 keys nothing maps: projector.weight",
        ),
        "shape mismatch": (narrow, split, "conv1.weight: file [32, 3, 3, 3], resnet20 expects [16, 3, 3, 3]"),
        "two weight dicts": (
            {"state_dict": state, "ema": state, "epoch": 3},
            split,
            "2 candidate weight dicts: state_dict (116 tensors), ema (116 tensors); "
            "pass --weights-key state_dict or --weights-key ema",
        ),
        "no option A variant": (state, [], "cannot tell them apart: pass --option-a after or --option-a split"),
        "no weights": ({"epoch": 3, "acc": 0.5}, split, "holds no weights that can be found: it has epoch (int), acc"),
        "wrong class count": (
            state,
            [*split, "--num-classes", "100"],
            "10-class head; --num-classes 100 does not match",
        ),
    }
    for what, (payload, extra, message) in cases.items():
        torch.save(payload, tmp_path / "model.pt")
        run = export(
            "--checkpoint", tmp_path / "model.pt", "--arch", "resnet20", *extra, "--out", tmp_path / "o", *FP32
        )
        assert run.returncode == 2 and message in run.stderr, (what, run.stderr[-1500:])
    torch.save({"state_dict": state, "ema": state}, tmp_path / "two.pt")
    args = ["--checkpoint", tmp_path / "two.pt", "--arch", "resnet20", *split, "--weights-key", "ema"]
    run = export(*args, "--out", tmp_path / "o", *FP32, "--no-eval")
    assert run.returncode == 0, run.stderr[-1500:]
    assert json.loads(run.stdout)["import"]["form"] == "training checkpoint (weights under 'ema')"


def test_an_onnx_input_without_preprocessing_facts_names_the_flags(tmp_path):
    small = randomize(CifarResNet(num_blocks=(1, 1, 1)), seed=6)
    torch.onnx.export(small, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "m.onnx"), opset_version=17, dynamo=False)
    run = export("--onnx", tmp_path / "m.onnx", "--out", tmp_path / "o", *FP32)
    assert run.returncode == 2
    assert "the model contract lacks mean, std: nothing in the model states them; pass --mean, --std" in run.stderr
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    run = export("--onnx", tmp_path / "bad.onnx", "--preset", "cifar10", "--out", tmp_path / "o", *FP32)
    assert run.returncode == 2 and "is not a valid ONNX model" in run.stderr
