"""Export: ONNX parity, the option-A rewrite, fusion counts, INT8 accuracy, TensorRT-ready graphs, errors."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import onnx
import pytest
import torch

from resnet_serve import resnets
from resnet_serve.engines import EngineError, load_engine
from resnet_serve.engines.onnxruntime import OnnxRuntimeEngine
from resnet_serve.export import __main__ as export_cli
from resnet_serve.export.config import ExportConfig
from resnet_serve.export.fusion import onnx_graph_counts, source_graph
from resnet_serve.export.onnx_export import OPSET, export_onnx, fold_conv_bn, prepare_for_export, zero_pad_as_conv
from resnet_serve.export.pipeline import eval_data, run_export
from resnet_serve.export.summary import ExportSummary
from resnet_serve.resnets.checkpoint import load_checkpoint
from resnet_serve.resnets.data import DataLayoutError
from resnet_serve.resnets.models import ZeroPadShortcut
from resnet_serve.resnets.spec import CIFAR10, CIFAR10_CLASSES, normalize


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics so folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


def test_option_a_rewrite_is_the_same_function():
    shortcut = ZeroPadShortcut(16, 32, 2)
    conv = zero_pad_as_conv(shortcut)
    x = torch.randn(4, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(conv(x), shortcut(x))  # exact: weights are 1 and 0
    assert conv.weight.shape == (32, 16, 1, 1) and conv.stride == (2, 2) and conv.bias is None


def test_bn_folding_and_prepared_model_match_pytorch():
    conv, bn = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16)
    randomize_bn(bn)
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        assert torch.allclose(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5)
    for arch in ("resnet20", "resnet50"):
        model = randomize_bn(resnets.build(arch))
        side = resnets.arch_spec(arch).dataset.image_size
        prepared = prepare_for_export(model)
        assert not any(isinstance(m, (torch.nn.BatchNorm2d, ZeroPadShortcut)) for m in prepared.modules())
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            got, expected = prepared(x), model(x)
        # relative to the logit scale: random BN statistics make ResNet-50's logits large
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("arch, residual_adds", [("resnet20", 9), ("resnet50", 16)])
def test_ort_fp32_folds_bn_and_fuses_every_residual_add_with_its_relu(tmp_path, arch, residual_adds):
    model = randomize_bn(resnets.build(arch))
    spec = resnets.arch_spec(arch).dataset
    path = export_onnx(prepare_for_export(model), tmp_path / "model.onnx", spec.input_shape)
    exported = onnx.load(str(path))
    assert exported.opset_import[0].version == OPSET == 18
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    optimized = tmp_path / "optimized.onnx"
    engine = OnnxRuntimeEngine(path, threads=2, optimized_model_path=optimized)
    counts = onnx_graph_counts(optimized, "ort", len(source_graph(path)["adds"]))
    assert counts.residual_adds_in_source == residual_adds
    assert counts.batchnorm == 0
    assert counts.standalone_add == 0 and counts.standalone_relu == 0
    assert counts.conv_add_relu_fused == residual_adds  # every residual add sits in a conv, with its ReLU
    assert counts.all_residual_adds_fused
    x = np.random.default_rng(0).standard_normal((3, *spec.input_shape), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(engine.infer(x) - expected).max() <= 1e-5 * np.abs(expected).max()


def test_ort_folds_batchnorm_left_in_the_graph(tmp_path):
    """An ONNX that still has BatchNormalization (the legacy exporter without constant folding): ORT folds it."""
    model = randomize_bn(resnets.build("resnet20"))
    path = tmp_path / "with_bn.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 32, 32),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}},
        opset_version=17,
        dynamo=False,
        do_constant_folding=False,
    )
    assert source_graph(path)["batchnorm"] == 19
    OnnxRuntimeEngine(path, threads=1, optimized_model_path=tmp_path / "opt.onnx")
    assert onnx_graph_counts(tmp_path / "opt.onnx", "ort", 9).batchnorm == 0


def test_evaluation_data_is_labelled_by_the_model_labels(tmp_path, cifar_jpg):
    """A model of CIFAR-10's sizes and 10 classes but labels of its own is not scored on CIFAR-10's test
    split (before: it was, against CIFAR's classes, without a word); its own ImageFolder is matched to its
    labels by folder name, whatever their order."""
    labels = ["tulip", "rose", "daisy", "iris", "lily", "orchid", "poppy", "aster", "lotus", "peony"]
    assert eval_data(ExportConfig(checkpoint=None, out=tmp_path / "o"), CIFAR10, labels) is None
    with pytest.raises(DataLayoutError, match=r"holds split folders \(test, train\), not class folders; pass"):
        eval_data(ExportConfig(checkpoint=None, out=tmp_path / "o", eval_data=cifar_jpg), CIFAR10, labels)
    flowers = tmp_path / "flowers"
    for name, source in (("rose", "cat"), ("tulip", "dog")):
        (flowers / name).mkdir(parents=True)
        for path in sorted((cifar_jpg / "test" / source).iterdir())[:2]:
            (flowers / name / path.name).write_bytes(path.read_bytes())
    images, targets, classes, source = eval_data(
        ExportConfig(checkpoint=None, out=tmp_path / "o", eval_data=flowers), CIFAR10, labels
    )
    assert images.shape == (4, 3, 32, 32) and classes == labels and source == flowers
    assert sorted(targets.tolist()) == [0, 0, 1, 1]  # tulip is class 0, rose class 1 (sorted order: rose first)
    cifar = eval_data(
        ExportConfig(checkpoint=None, out=tmp_path / "o", eval_data=cifar_jpg, eval_limit=8),
        CIFAR10,
        list(CIFAR10_CLASSES),
    )
    assert cifar is not None and cifar[2] == list(CIFAR10_CLASSES) and len(cifar[1]) == 8


@pytest.fixture(scope="module")
def exported_resnet20(tmp_path_factory, resnet20_checkpoint, cifar_jpg):
    """The committed ResNet-20 through the whole export: all CPU engines, INT8 with every calibration
    method, TensorRT-ready graphs, evaluated on the full cifar-10-jpg test split."""
    out = tmp_path_factory.mktemp("export") / "resnet20"
    config = ExportConfig(
        checkpoint=resnet20_checkpoint,
        out=out,
        calibration_data=cifar_jpg / "train",
        calibration_method="auto",
        eval_data=cifar_jpg,
        threads=2,
    )
    return run_export(config)


@pytest.mark.slow
def test_ort_fp32_parity_with_pytorch_on_the_whole_test_split(exported_resnet20, resnet20_checkpoint, cifar_test_set):
    """Checked here, not read from the export's own report: PyTorch and the exported engine, same images."""
    model, _ = load_checkpoint(resnet20_checkpoint)
    images = normalize(cifar_test_set.images, CIFAR10)
    with torch.no_grad():
        reference = np.concatenate(
            [model(torch.from_numpy(images[i : i + 1000])).numpy() for i in range(0, 10_000, 1000)]
        )
    engine = load_engine(exported_resnet20.artifact("onnxruntime-fp32").path, threads=2)
    logits = engine.infer_all(images)
    assert np.abs(logits - reference).max() <= 1e-4
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
    # the export's own report says the same
    results = exported_resnet20.accuracy["results"]
    assert exported_resnet20.accuracy["n"] == 10_000
    assert (
        results["onnxruntime-fp32"]["top1"]
        == results["pytorch-fp32"]["top1"]
        == round(100.0 * float((reference.argmax(1) == cifar_test_set.labels).mean()), 2)
    )
    assert exported_resnet20.parity["openvino-fp32"]["max_abs_logit_diff"] <= 1e-3


@pytest.mark.slow
def test_int8_engines_within_half_a_point_of_fp32(exported_resnet20):
    results = exported_resnet20.accuracy["results"]
    fp32 = results["pytorch-fp32"]["top1"]
    for name in ("onnxruntime-int8", "openvino-int8"):
        assert results[name]["precision"] == "int8"
        assert abs(results[name]["top1"] - fp32) <= 0.5, (name, results[name])
    # the kept calibration method is the one with the best held-out (training image) agreement
    calibration = exported_resnet20.artifact("onnxruntime-int8").details["calibration"]
    best = max(calibration["candidates"], key=lambda m: calibration["candidates"][m]["held_out_agreement"])
    assert calibration["method"] == best


@pytest.mark.slow
def test_fusion_report_of_every_engine(exported_resnet20):
    rows = {row["graph"].split(" (")[0]: row for row in exported_resnet20.fusion}
    fp32 = rows["onnxruntime-fp32"]
    assert fp32["batchnorm"] == 0 and fp32["all_residual_adds_fused"] and fp32["conv_add_relu_fused"] == 9
    int8 = rows["onnxruntime-int8"]
    assert int8["quantized_convs"] == int8["convs"] == 21 and int8["quantized_adds"] == 9  # QLinearAdd
    assert int8["standalone_add"] == 0 and int8["standalone_relu"] == 0
    ov = rows["openvino-fp32"]
    assert ov["batchnorm"] == 0 and ov["all_residual_adds_fused"]
    ov8 = rows["openvino-int8"]
    assert ov8["quantized_convs"] == 21 and ov8["conv_add_relu_fused"] == 9


@pytest.mark.slow
def test_tensorrt_ready_graphs(exported_resnet20):
    results = exported_resnet20.accuracy["results"]
    fp32 = results["pytorch-fp32"]["top1"]
    for name in ("tensorrt-ready-fp16 (on onnxruntime)", "tensorrt-ready-int8 (on onnxruntime)"):
        assert abs(results[name]["top1"] - fp32) <= 0.5, (name, results[name])
    qdq = exported_resnet20.tensorrt["int8_qdq"]
    assert qdq["all_zero_points_zero"] and qdq["activation_dtype"] == "int8"
    assert qdq["per_channel_conv_weights"] == qdq["convs"] == 21
    assert qdq["residual_adds_with_qdq_inputs"] == qdq["residual_adds"] == 9
    recipe = json.loads(open(exported_resnet20.tensorrt["recipe"]).read())
    assert "--stronglyTyped" in recipe["commands"]["int8"]
    assert recipe["profile"]["max"] == "input:256x3x32x32"


@pytest.mark.slow
def test_engine_api(exported_resnet20):
    directory = exported_resnet20.artifact("openvino-int8").path
    engine = load_engine(directory, threads=1)
    info = engine.info()
    assert info["engine"] == "openvino" and info["precision"] == "int8" and info["threads"] == 1
    assert info["input_shape"] == [-1, 3, 32, 32] and info["input_dtype"] == "float32"
    assert engine.infer(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 10)
    with pytest.raises(EngineError, match="expects dtype float32, got float64"):
        engine.infer(np.zeros((1, 3, 32, 32)))
    with pytest.raises(EngineError, match=r"expects float32 \[N, 3, 32, 32\], got shape \[1, 3, 28, 28\]"):
        engine.infer(np.zeros((1, 3, 28, 28), np.float32))


def run_cli(args, caplog) -> tuple[int, str]:
    caplog.clear()
    code = export_cli.main(args)
    return code, caplog.text


def test_bad_inputs_get_clear_errors(tmp_path, caplog, resnet20_checkpoint):
    out = str(tmp_path / "out")
    code, text = run_cli(["--checkpoint", str(tmp_path / "missing.pt"), "--out", out], caplog)
    assert code == 2 and "not found" in text
    torch.save(resnets.build("resnet32").state_dict(), tmp_path / "r32.pt")
    code, text = run_cli(
        ["--checkpoint", str(tmp_path / "r32.pt"), "--arch", "resnet20", "--option-a", "after", "--out", out], caplog
    )
    assert code == 2 and "does not fit resnet20" in text
    code, text = run_cli(["--checkpoint", str(resnet20_checkpoint), "--engines", "tensorflow", "--out", out], caplog)
    assert code == 2 and "unknown engine(s) tensorflow; choose from gpu, onnxruntime, openvino, tensorrt" in text
    code, text = run_cli(["--checkpoint", str(resnet20_checkpoint), "--precisions", "int4", "--out", out], caplog)
    assert code == 2 and "unknown precision(s) int4" in text
    (tmp_path / "empty").mkdir()
    code, text = run_cli(
        [
            "--checkpoint",
            str(resnet20_checkpoint),
            "--out",
            out,
            "--no-eval",
            "--engines",
            "onnxruntime",
            "--calibration-data",
            str(tmp_path / "empty"),
        ],
        caplog,
    )
    assert code == 2 and "holds no image files" in text


def test_an_export_that_builds_no_engine_says_why_and_exits_2(tmp_path, caplog, resnet20_checkpoint):
    """ONNX Runtime has no bf16 engine: asking only for that used to "succeed" with nothing built."""
    args = ["--checkpoint", str(resnet20_checkpoint), "--out", str(tmp_path / "o"), "--no-eval", "--no-tensorrt-ready"]
    code, text = run_cli([*args, "--engines", "onnxruntime", "--precisions", "bf16"], caplog)
    assert code == 2 and "no engine was built (onnxruntime-bf16: onnxruntime has no bf16 engine here" in text
    assert "e.g. --precisions fp32" in text


def test_a_repository_the_models_cannot_go_into_is_refused_before_the_export(tmp_path, caplog, resnet20_checkpoint):
    """Before: a file as --repository was a FileExistsError traceback (exit 1) after the whole export."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "index.json").write_text("{not json")
    args = [
        "--checkpoint",
        str(resnet20_checkpoint),
        "--out",
        str(tmp_path / "o"),
        "--no-eval",
        "--engines",
        "onnxruntime",
    ]
    code, text = run_cli([*args, "--repository", str(tmp_path / "a-file")], caplog)
    assert code == 2 and "model repository " + str(tmp_path / "a-file") + " is not a folder; pass a folder" in text
    code, text = run_cli([*args, "--repository", str(tmp_path / "repo")], caplog)
    assert code == 2 and "index.json is not a resnet-serve-repository-index/1 index (JSONDecodeError" in text
    assert "move it aside and write the repository again" in text
    assert not (tmp_path / "o").exists()  # refused before anything was exported


def test_missing_engine_package_names_the_fix(tmp_path, caplog, resnet20_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` sees where it is not installed
    code, text = run_cli(
        [
            "--checkpoint",
            str(resnet20_checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--no-eval",
            "--engines",
            "openvino",
            "--precisions",
            "fp32",
            "--no-tensorrt-ready",
        ],
        caplog,
    )
    assert code == 2 and "pip install openvino" in text


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_engine_without_tensorrt_prints_the_trtexec_command(tmp_path, caplog, resnet20_checkpoint):
    code, text = run_cli(
        [
            "--checkpoint",
            str(resnet20_checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--no-eval",
            "--engines",
            "tensorrt",
            "--precisions",
            "fp16",
            "--calibration-size",
            "64",
        ],
        caplog,
    )
    assert code == 3
    assert "tensorrt package is not importable" in text and "trtexec --onnx=" in text
    assert (tmp_path / "o" / "tensorrt" / "model_fp16.onnx").is_file()
    assert (tmp_path / "o" / "tensorrt" / "trtexec.sh").is_file()


def test_calibration_reads_the_official_batches(tmp_path, cifar_exact):
    from test_data import write_official_batches

    from resnet_serve.export.calibration import load_calibration_set
    from resnet_serve.resnets.spec import CIFAR10

    train, _, _ = write_official_batches(tmp_path / "cifar-10-batches-py", cifar_exact, n=100)
    calibration, held_out = load_calibration_set(tmp_path, CIFAR10, 64, held_out=16)
    assert calibration.shape == (64, 3, 32, 32) and held_out.shape == (16, 3, 32, 32)
    # every calibration image is one of the training images, normalised
    from resnet_serve.resnets.spec import normalize

    pool = normalize(train.reshape(-1, 32, 32, 3), CIFAR10)
    assert all(np.abs(pool - image).reshape(len(pool), -1).max(1).min() < 1e-6 for image in calibration[:8])


def test_fallbacks_are_logged_and_recorded(tmp_path, caplog, resnet20_checkpoint, cifar_jpg):
    """The GPU engine has no entropy calibration and no GPU to tune on here: both are said and recorded."""
    out = tmp_path / "gpu"
    code, text = run_cli(
        ["--checkpoint", str(resnet20_checkpoint), "--out", str(out), "--engines", "gpu", "--precisions", "int8"]
        + ["--calibration-method", "entropy", "--calibration-size", "16", "--calibration-data", str(cifar_jpg)]
        + ["--no-eval", "--no-tensorrt-ready"],
        caplog,
    )
    assert code == 0, text
    fallbacks = {f["step"]: f for f in ExportSummary.load(out).fallbacks}
    assert (
        fallbacks["gpu-int8 calibration"]["asked"] == "entropy"
        and fallbacks["gpu-int8 calibration"]["used"] == "minmax"
    )
    assert "no CUDA GPU" in fallbacks["gpu-int8 autotune"]["reason"]
    assert "fallback in gpu-int8 calibration: asked entropy, used minmax" in text
    assert ExportSummary.load(out).artifact("gpu-int8").details["calibration"]["method"] == "minmax"
