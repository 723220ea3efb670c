"""The GPU engine's Triton-lang kernels and plans, checked against PyTorch.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set in conftest), on
small shapes; tests marked ``gpu`` (CUDA graphs) run only where CUDA is available.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="the GPU engine's kernels need the triton package")

from resnet_serve import resnets  # noqa: E402
from resnet_serve.engines import EngineError  # noqa: E402
from resnet_serve.engines.gpu.engine import GpuEngine  # noqa: E402
from resnet_serve.engines.gpu.kernels import DEFAULT_CONFIG, conv2d  # noqa: E402
from resnet_serve.engines.gpu.plan import BATCH_CLASSES, Plan, Tiles  # noqa: E402
from resnet_serve.export.calibration import load_calibration_set  # noqa: E402
from resnet_serve.export.gpu_build import Planner, activation_amax, autotune, build_gpu_engine  # noqa: E402
from resnet_serve.export.onnx_export import prepare_for_export  # noqa: E402
from resnet_serve.resnets.checkpoint import load_checkpoint  # noqa: E402
from resnet_serve.resnets.spec import CIFAR10, normalize  # noqa: E402

SMALL_TILES = {"BM": 32, "BN": 16, "BK": 16, "num_warps": 1, "num_stages": 1}
SHAPES = [  # (batch, side, C, OC, kernel, stride, pad)
    (2, 8, 16, 32, 3, 1, 1),
    (2, 9, 32, 16, 3, 2, 1),
    (1, 8, 3, 16, 3, 1, 1),  # the CIFAR stem: 3 input channels, masked K
    (2, 8, 16, 32, 1, 2, 0),  # shortcut / option A as conv
    (1, 10, 3, 24, 7, 2, 3),  # the ImageNet stem
]


def nhwc_weight(w: torch.Tensor) -> torch.Tensor:
    oc, c, kh, kw = w.shape
    return w.permute(2, 3, 1, 0).reshape(kh * kw * c, oc).contiguous()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("residual, relu", [(False, True), (True, True), (True, False)])
def test_fp16_conv_matches_pytorch(shape, residual, relu):
    n, side, c, oc, k, s, p = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, side, side, c, generator=gen).half()
    w = (torch.randn(oc, c, k, k, generator=gen) * 0.2).half()
    b = torch.randn(oc, generator=gen)
    o = (side + 2 * p - k) // s + 1
    res = torch.randn(n, o, o, oc, generator=gen).half() if residual else None
    out = torch.empty(n, o, o, oc, dtype=torch.float16)
    conv2d(x, nhwc_weight(w), b, out, stride=s, pad=p, kh=k, kw=k, relu=relu, residual=res, config=SMALL_TILES)
    ref = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2).float(), w.float(), b, stride=s, padding=p)
    ref = ref.permute(0, 2, 3, 1) + (res.float() if residual else 0)
    ref = ref.relu() if relu else ref
    assert (out.float() - ref).abs().max() < 2e-2  # fp16 storage of the output


@pytest.mark.parametrize("shape", SHAPES)
def test_int8_conv_matches_integer_arithmetic(shape):
    n, side, c, oc, k, s, p = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-128, 128, (n, side, side, c), generator=gen, dtype=torch.int8)
    w = torch.randint(-127, 128, (oc, c, k, k), generator=gen, dtype=torch.int8)
    b = torch.randn(oc, generator=gen)
    o = (side + 2 * p - k) // s + 1
    res = torch.randint(-128, 128, (n, o, o, oc), generator=gen, dtype=torch.int8)
    sx, sr, so, sw = 0.05, 0.1, 0.2, torch.rand(oc, generator=gen) * 0.01 + 0.001
    common = dict(stride=s, pad=p, kh=k, kw=k, relu=True, residual=res, w_scale=sw, in_scale=sx, res_scale=sr)
    out = torch.empty(n, o, o, oc, dtype=torch.int8)
    conv2d(x, nhwc_weight(w), b, out, out_scale=so, config=SMALL_TILES, **common)
    acc = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2).double(), w.double(), stride=s, padding=p)
    y = (acc.permute(0, 2, 3, 1) * (sx * sw.double()) + b.double() + res.double() * sr).relu()
    expected = torch.floor(y / so + 0.5).clamp(-128, 127)
    assert (out.double() - expected).abs().max() <= 1  # an exact .5 may round either way in fp32
    fp16_out = torch.empty(n, o, o, oc, dtype=torch.float16)  # the head's input: dequantized, not requantized
    conv2d(x, nhwc_weight(w), b, fp16_out, config=SMALL_TILES, **common)
    assert torch.allclose(fp16_out.double(), y, rtol=2e-3, atol=2e-2)


def test_conv_rejects_inconsistent_shapes():
    x = torch.zeros(1, 8, 8, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match="does not match input"):
        conv2d(
            x,
            torch.zeros(9 * 16, 8, dtype=torch.float16),
            torch.zeros(8),
            torch.empty(1, 7, 7, 8, dtype=torch.float16),
            stride=1,
            pad=1,
            kh=3,
            kw=3,
            relu=True,
        )
    with pytest.raises(ValueError, match="per-channel weight scales"):
        conv2d(
            x.to(torch.int8),
            torch.zeros(9 * 16, 8, dtype=torch.int8),
            torch.zeros(8),
            torch.empty(1, 8, 8, 8, dtype=torch.int8),
            stride=1,
            pad=1,
            kh=3,
            kw=3,
            relu=True,
        )


FAST_TILES = {"BM": 128, "BN": 64, "BK": 64, "num_warps": 4, "num_stages": 1}


def fast_tiles(directory):
    """Interpreter runs: larger tiles mean fewer (slow) interpreted programs."""
    plan = Plan.load(directory)
    for op in plan.convs:
        op.tiles = {label: Tiles(config=FAST_TILES, tuned=False) for label in BATCH_CLASSES}
    plan.save(directory)
    return directory


def test_resnet20_plan_structure():
    plan = Planner(prepare_for_export(resnets.build("resnet20")), (3, 32, 32), "fp16", None).build()
    assert len(plan.convs) == 21  # stem + 18 block convs + 2 option-A shortcuts as [I; 0] convs
    assert sum(op.residual is not None for op in plan.convs) == 9
    assert all(op.relu for op in plan.convs if op.residual)
    assert len(plan.buffer_bytes_per_image) < len(plan.tensors)  # buffers are shared by liveness
    assert plan.ops[0].kind == "input" and plan.ops[-1].kind == "head"


def untrained_resnet20_plan(directory):
    """An fp16 plan of an untrained ResNet-20, built without a GPU (default tiles) into ``directory``."""
    return build_gpu_engine(
        prepare_for_export(resnets.build("resnet20")),
        directory,
        precision="fp16",
        input_shape=(3, 32, 32),
        calibration=None,
        device="cpu",
    )


def test_plan_records_untuned_tiles_and_survives_a_round_trip(tmp_path):
    plan = untrained_resnet20_plan(tmp_path)
    assert not plan.autotuned
    for op in plan.convs:  # no GPU to tune on: the default tiles, recorded as untuned, with the reason
        assert set(op.tiles) == set(BATCH_CLASSES)
        assert all(
            not t.tuned and t.config == DEFAULT_CONFIG and "no CUDA GPU" in t.failures["autotune"]
            for t in op.tiles.values()
        )
    assert Plan.load(tmp_path).to_json() == plan.to_json()


def test_plan_refuses_a_layer_without_a_valid_tuning(tmp_path):
    plan = untrained_resnet20_plan(tmp_path)
    layer = next(op for op in plan.convs if op.name == "layer2.0.conv2")
    layer.tiles["large"] = Tiles(config=DEFAULT_CONFIG, tuned=True, ms=float("inf"))
    with pytest.raises(EngineError, match=r"layer2.0.conv2 \(large\) is marked tuned without a valid time: inf"):
        plan.save(tmp_path)
    del layer.tiles["small"]
    with pytest.raises(EngineError, match="layer2.0.conv2 has no tile configuration for small batches"):
        plan.check()


def test_autotuner_names_the_layer_when_no_candidate_runs(tmp_path):
    """Where no candidate can be timed (here: no CUDA for the benchmark timer) the build stops and says why."""
    untrained_resnet20_plan(tmp_path)
    engine = GpuEngine(fast_tiles(tmp_path))
    with pytest.raises(EngineError, match=r"no tile configuration works for conv1 at batch 1 .*: 64x64x32x4x3: "):
        autotune(engine, {"small": 1})


@pytest.mark.slow
def test_resnet20_engines_match_pytorch(tmp_path, resnet20_checkpoint, cifar_test_set, cifar_jpg):
    model, _ = load_checkpoint(resnet20_checkpoint)
    prepared = prepare_for_export(model)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(cifar_test_set), 4, replace=False)
    images = normalize(cifar_test_set.images[pick], CIFAR10)
    calibration, _ = load_calibration_set(cifar_jpg / "train", CIFAR10, 64)  # training images, never the test split
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    spread = reference.max() - reference.min()
    for precision, tolerance in (("fp16", 0.01), ("int8", 0.15)):
        directory = tmp_path / precision
        build_gpu_engine(
            prepared,
            directory,
            precision=precision,
            input_shape=(3, 32, 32),
            calibration=calibration if precision == "int8" else None,
            device="cpu",
        )
        engine = GpuEngine(fast_tiles(directory))
        assert engine.info()["engine"] == "gpu" and engine.info()["precision"] == precision
        logits = engine.infer(images)
        assert np.abs(logits - reference).max() <= tolerance * spread, precision
        assert (logits.argmax(1) == reference.argmax(1)).all(), precision


@pytest.mark.slow
def test_imagenet_bottleneck_plan_with_maxpool_runs(tmp_path):
    """ResNet-50's path (7x7 stem, max-pool, bottlenecks, projection shortcuts) on a 64x64 input."""
    torch.manual_seed(0)
    model = resnets.build("resnet50").eval()
    with torch.no_grad():  # sensible BN statistics for random weights
        model.train()
        model(torch.randn(4, 3, 64, 64))
        model.eval()
    prepared = prepare_for_export(model)
    images = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    amax = activation_amax(prepared, np.random.default_rng(1).standard_normal((4, 3, 64, 64), dtype=np.float32))
    int8_plan = Planner(prepared, (3, 64, 64), "int8", amax).build()
    assert [op.kind for op in int8_plan.ops[:4]] == ["input", "conv", "maxpool", "quantize"]
    assert len(int8_plan.convs) == 53
    build_gpu_engine(
        prepared, tmp_path / "fp16", precision="fp16", input_shape=(3, 64, 64), calibration=None, device="cpu"
    )
    logits = GpuEngine(fast_tiles(tmp_path / "fp16")).infer(images)
    assert np.abs(logits - reference).max() <= 0.02 * (reference.max() - reference.min())


@pytest.mark.gpu
def test_cuda_graph_replay_equals_eager(tmp_path, resnet20_checkpoint):
    model, _ = load_checkpoint(resnet20_checkpoint)
    directory = tmp_path / "fp16"
    build_gpu_engine(prepare_for_export(model), directory, precision="fp16", input_shape=(3, 32, 32), calibration=None)
    x = np.random.default_rng(0).standard_normal((37, 3, 32, 32), dtype=np.float32)
    graph = GpuEngine(directory, use_cuda_graph=True).infer(x)
    eager = GpuEngine(directory, use_cuda_graph=False).infer(x)
    assert np.array_equal(graph, eager)


def test_missing_plan_is_explained(tmp_path):
    with pytest.raises(EngineError, match="has no plan.json"):
        GpuEngine(tmp_path)
