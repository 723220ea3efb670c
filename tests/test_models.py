import math

import pytest
import torch

from resnet_serve import resnets
from resnet_serve.resnets.models import ArchitectureError, ZeroPadShortcut, arch_spec


@pytest.mark.parametrize("name", resnets.available())
def test_every_registered_model_builds_and_runs(name):
    spec = arch_spec(name)
    # train mode: BN uses batch statistics, so even untrained ResNet-1202 stays finite
    model = resnets.build(name).train()
    side = spec.dataset.image_size
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, spec.dataset.num_classes)
    assert torch.isfinite(out).all()


def test_num_classes_is_configurable():
    assert resnets.build("resnet20", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    assert resnets.build("resnet18", num_classes=7).fc.out_features == 7


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, paper_millions",
    [
        ("resnet20", 0.27),
        ("resnet32", 0.46),
        ("resnet44", 0.66),
        ("resnet56", 0.85),
        ("resnet110", 1.7),
        ("resnet1202", 19.4),
    ],
)
def test_cifar_parameter_counts_match_the_paper(name, paper_millions):
    # Table 6 of the paper gives two significant digits
    assert round(n_params(resnets.build(name)) / 1e6, 2 if paper_millions < 1 else 1) == paper_millions


def test_cifar_depths_follow_6n_plus_2():
    for depth in (20, 32, 44, 56, 110, 1202):
        model = resnets.build(f"resnet{depth}")
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) + 1 == depth  # 6n 3x3 convs + the first conv + the fc layer
        assert [len(s) for s in model.stages()] == [(depth - 2) // 6] * 3
        assert [s[0].conv1.out_channels for s in model.stages()] == [16, 32, 64]
        assert [s[0].conv1.stride for s in model.stages()] == [(1, 1), (2, 2), (2, 2)]


def torchvision_resnet_keys(block: str, layers: tuple[int, ...]) -> list[str]:
    """torchvision's resnet state_dict keys, written out from its module structure."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in bn]
    n_convs = 2 if block == "basic" else 3
    for stage, blocks in enumerate(layers, start=1):
        for i in range(blocks):
            prefix = f"layer{stage}.{i}"
            for c in range(1, n_convs + 1):
                keys += [f"{prefix}.conv{c}.weight"] + [f"{prefix}.bn{c}.{b}" for b in bn]
            if i == 0 and (stage > 1 or block == "bottleneck"):
                keys += [f"{prefix}.downsample.0.weight"] + [f"{prefix}.downsample.1.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize(
    "name, block, layers, params",
    [
        ("resnet18", "basic", (2, 2, 2, 2), 11_689_512),
        ("resnet34", "basic", (3, 4, 6, 3), 21_797_672),
        ("resnet50", "bottleneck", (3, 4, 6, 3), 25_557_032),
        ("resnet101", "bottleneck", (3, 4, 23, 3), 44_549_160),
        ("resnet152", "bottleneck", (3, 8, 36, 3), 60_192_808),
    ],
)
def test_imagenet_resnets_have_torchvision_keys_and_counts(name, block, layers, params):
    model = resnets.build(name)
    assert list(model.state_dict()) == torchvision_resnet_keys(block, layers)
    assert n_params(model) == params  # torchvision's published parameter counts


def test_resnet50_is_v1_5_stride_on_the_3x3():
    block = resnets.build("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_option_a_adds_no_parameters_option_b_does():
    a, b, plain = (
        resnets.build("resnet20", shortcut="A"),
        resnets.build("resnet20", shortcut="B"),
        resnets.build("plain20"),
    )
    assert n_params(a) == n_params(plain)
    # option B: a 1x1 conv + BN at the two dimension changes (16->32, 32->64)
    assert n_params(b) - n_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert not any(isinstance(m, ZeroPadShortcut) for m in b.modules())


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_plain_nets_have_no_shortcuts():
    model = resnets.build("plain20")
    x = torch.randn(1, 16, 32, 32)
    block = model.layer1[0].eval()
    with torch.no_grad():
        expected = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        assert torch.allclose(block(x), expected)


def test_he_initialisation():
    model = resnets.build("resnet110")
    conv = model.layer3[5].conv2
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05)
    assert torch.all(model.layer2[0].bn1.weight == 1) and torch.all(model.layer2[0].bn1.bias == 0)


def test_unknown_arch_lists_available_ones():
    with pytest.raises(KeyError) as err:
        resnets.build("resnet21")
    message = str(err.value)
    assert "unknown architecture 'resnet21'" in message
    assert "resnet20" in message and "resnet152" in message and "plain56" in message


def test_bad_build_options_are_explained():
    with pytest.raises(ArchitectureError, match="plain net"):
        resnets.build("plain20", shortcut="A")
    with pytest.raises(ArchitectureError, match="option B"):
        resnets.build("resnet50", shortcut="A")
    with pytest.raises(TypeError, match="unexpected options: widthh"):
        resnets.build("resnet20", widthh=2)
