"""The ResNet family of He et al., "Deep Residual Learning for Image Recognition" (2015).

Two kinds of networks live in one registry:

* the paper's CIFAR-10 nets (Section 4.2): ``resnet20`` .. ``resnet1202`` with 6n+2 layers,
  n BasicBlocks per stage on 16/32/64 channels, and the plain nets ``plain20`` .. ``plain56``
  (same layers, no shortcuts). The shortcut that changes dimensions is option A (parameter-free:
  subsample + zero channels, the paper's choice for CIFAR) or option B (1x1 projection + BN).
* the ImageNet ResNet-18/34/50/101/152 (Table 1) in the V1.5 form, with torchvision's
  state_dict key names so torchvision checkpoints load unchanged.

Use ``build(name, num_classes=..., **kw)`` and ``available()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.spec import CIFAR10, IMAGENET, DatasetSpec


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)


OPTION_A_PADDINGS = ("after", "split")


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: identity on a strided grid, extra channels filled with zeros.

    It has no parameters. Where the zero channels go is part of the architecture: ``padding="after"``
    appends them after the input channels (this project's nets), ``"split"`` puts half before and half
    after (as code that pads ``planes // 4`` on each side does). The same weights compute different
    functions under the two, so checkpoints record which one they were trained with. Either is a 1x1
    stride-``stride`` convolution with a fixed weight, [I; 0] or [0; I; 0] (``export`` uses that form
    because it fuses into the next add).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, padding: str = "after") -> None:
        super().__init__()
        if padding not in OPTION_A_PADDINGS:
            raise ArchitectureError(f"option A padding must be one of {', '.join(OPTION_A_PADDINGS)}, got {padding!r}")
        self.in_planes, self.planes, self.stride, self.padding = in_planes, planes, stride, padding

    @property
    def zeros_before(self) -> int:
        """Zero channels in front of the identity."""
        return (self.planes - self.in_planes) // 2 if self.padding == "split" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.zeros_before
        return nn.functional.pad(x, (0, 0, 0, 0, before, self.planes - self.in_planes - before))

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.planes}, stride={self.stride}, zeros {self.padding}"


class BasicBlock(nn.Module):
    """Two 3x3 convs. ``residual=False`` gives the plain-net block of the paper's Section 4.2."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4)."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        # ResNet V1.5 puts the stride on the 3x3 conv (the paper puts it on the first 1x1)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ResNet(nn.Module):
    """Stem, residual stages, global average pool, linear classifier.

    ``stem="cifar"``: one 3x3 conv, 16 channels. ``stem="imagenet"``: 7x7/2 conv + 3x3/2 max pool.
    ``shortcut``: "A" (zero-pad), "B" (projection) or "none" (plain net); ``option_a``: where option A
    puts its zero channels ("after" or "split", see ZeroPadShortcut).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        *,
        num_classes: int,
        stem: str,
        shortcut: str = "B",
        option_a: str = "after",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B", "none"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'none', got {shortcut!r}")
        if shortcut == "A" and block is not BasicBlock:
            raise ValueError("option A shortcuts are defined for BasicBlock networks only")
        self.shortcut = shortcut
        self.option_a = option_a if shortcut == "A" else None
        self.in_planes = widths[0]
        if stem == "cifar":
            self.conv1 = conv3x3(3, widths[0])
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else None
        for i, (blocks, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", self._make_layer(block, width, blocks, stride))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = widths[-1] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out_planes = planes * block.expansion
        if self.shortcut != "none" and (stride != 1 or self.in_planes != out_planes):
            if self.shortcut == "A":
                downsample = ZeroPadShortcut(self.in_planes, out_planes, stride, self.option_a)
            else:
                downsample = nn.Sequential(conv1x1(self.in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
        residual = self.shortcut != "none"
        layers = [block(self.in_planes, planes, stride, downsample, residual)]
        self.in_planes = out_planes
        layers += [block(self.in_planes, planes, residual=residual) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 ("Delving deep into rectifiers"): N(0, 2/n), n = k*k*in_channels
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.uniform_(m.bias, -bound, bound)
        if zero_init_residual:  # a later recipe (Goyal et al. 2017), off by default
            for m in self.modules():
                last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, (BasicBlock, Bottleneck)) and last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: how to build it and what data it expects."""

    name: str
    dataset: DatasetSpec
    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    stem: str
    shortcut: str
    description: str

    @property
    def depth(self) -> int:
        per_block = 2 if self.block is BasicBlock else 3
        return sum(self.layers) * per_block + 2


_REGISTRY: dict[str, ArchSpec] = {}


def _register(spec: ArchSpec) -> None:
    _REGISTRY[spec.name] = spec


for _depth in (20, 32, 44, 56, 110, 1202):
    _n = (_depth - 2) // 6
    _register(
        ArchSpec(
            f"resnet{_depth}",
            CIFAR10,
            BasicBlock,
            (_n, _n, _n),
            (16, 32, 64),
            "cifar",
            "A",
            f"CIFAR-10 ResNet-{_depth} (n={_n}, option A shortcuts by default)",
        )
    )
for _depth in (20, 32, 44, 56):
    _n = (_depth - 2) // 6
    _register(
        ArchSpec(
            f"plain{_depth}",
            CIFAR10,
            BasicBlock,
            (_n, _n, _n),
            (16, 32, 64),
            "cifar",
            "none",
            f"CIFAR-10 plain-{_depth}: the ResNet-{_depth} layers without shortcuts",
        )
    )
for _depth, _block, _layers in (
    (18, BasicBlock, (2, 2, 2, 2)),
    (34, BasicBlock, (3, 4, 6, 3)),
    (50, Bottleneck, (3, 4, 6, 3)),
    (101, Bottleneck, (3, 4, 23, 3)),
    (152, Bottleneck, (3, 8, 36, 3)),
):
    _register(
        ArchSpec(
            f"resnet{_depth}",
            IMAGENET,
            _block,
            _layers,
            (64, 128, 256, 512),
            "imagenet",
            "B",
            f"ImageNet ResNet-{_depth} (V1.5, torchvision state_dict keys)",
        )
    )


class ArchitectureError(ResnetServeError):
    """An architecture name or option that does not exist; the message lists what does."""


class UnknownArchError(ArchitectureError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def available() -> list[str]:
    """Registered architecture names."""
    return list(_REGISTRY)


def arch_spec(name: str) -> ArchSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchError(f"unknown architecture {name!r}; available: {', '.join(available())}") from None


def build(name: str, num_classes: int | None = None, **kwargs) -> ResNet:
    """Build a registered ResNet with fresh He-initialised weights.

    ``num_classes`` defaults to the architecture's dataset (10 for CIFAR nets, 1000 for
    ImageNet nets). Keyword arguments: ``shortcut`` ("A", "B"; CIFAR residual nets only),
    ``option_a`` ("after", "split": where option A's zero channels go), ``zero_init_residual``.
    """
    spec = arch_spec(name)
    shortcut = kwargs.pop("shortcut", spec.shortcut)
    option_a = kwargs.pop("option_a", None)
    if spec.shortcut == "none" and shortcut != "none":
        raise ArchitectureError(f"{name} is a plain net; it takes no shortcut option")
    if spec.stem == "imagenet" and shortcut != "B":
        raise ArchitectureError(f"{name} uses projection shortcuts (option B) only, got shortcut={shortcut!r}")
    if option_a is not None and shortcut != "A":
        raise ArchitectureError(f"{name} with shortcut {shortcut!r} has no option-A padding to choose")
    unknown = set(kwargs) - {"zero_init_residual"}
    if unknown:
        raise TypeError(f"build({name!r}) got unexpected options: {', '.join(sorted(unknown))}")
    if num_classes is not None and num_classes < 1:
        raise ArchitectureError(f"num_classes must be at least 1, got {num_classes}")
    return ResNet(
        spec.block,
        spec.layers,
        spec.widths,
        num_classes=num_classes or spec.dataset.num_classes,
        stem=spec.stem,
        shortcut=shortcut,
        option_a=option_a or "after",
        **kwargs,
    )
