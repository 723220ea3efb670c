"""ResNets written the way other code writes them, for the import tests (not this project's code).

* ``CifarResNet``: the style of widely used CIFAR ResNet code: a ``linear`` head, shortcuts as an empty
  ``nn.Sequential`` (identity) or a lambda that pads ``planes // 4`` zero channels on each side (option
  A, split), ``F.avg_pool2d`` over the whole map;
* ``TorchvisionStyleResNet18``: torchvision's key names and structure, written out here;
* helpers that save them as users do (DataParallel training checkpoints, Lightning checkpoints).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class CifarBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, num_blocks=(3, 3, 3), num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, num_blocks[0], 1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], 2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], 2)
        self.linear = nn.Linear(4 * width, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(CifarBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


class TvBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchvisionStyleResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 2)
        self.layer3 = self._make_layer(256, 2)
        self.layer4 = self._make_layer(512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [TvBasicBlock(self.inplanes, planes, stride, downsample), TvBasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Weights and BatchNorm statistics away from their initial values, so every tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_((torch.rand(m.num_features, generator=gen) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_((torch.rand(m.num_features, generator=gen) - 0.5) * 0.2)
                m.num_batches_tracked.fill_(1234)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                scale = (2.0 / fan_in) ** 0.5 * (0.1 if isinstance(m, nn.Linear) else 1.0)  # logits of a few units
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * scale)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


def save_dataparallel_training_checkpoint(model: nn.Module, path) -> None:
    """As training scripts save them: DataParallel keys (module.), the optimizer, the epoch, metrics, args."""
    wrapped = nn.DataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    optimizer.zero_grad()
    torch.save(
        {
            "epoch": 182,
            "state_dict": wrapped.state_dict(),
            "best_prec1": 91.25,
            "optimizer": optimizer.state_dict(),
            "args": argparse.Namespace(arch="resnet20", lr=0.1, epochs=200),
        },
        path,
    )


def save_lightning_checkpoint(model: nn.Module, path, drop_num_batches_tracked: bool = True) -> None:
    """As PyTorch Lightning saves a LightningModule whose network is ``self.model``."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    if drop_num_batches_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(
        {
            "epoch": 29,
            "global_step": 8700,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": state,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01}]}],
            "lr_schedulers": [],
            "hyper_parameters": {"num_classes": 37, "lr": 0.01},
        },
        path,
    )


def as_split_style(model) -> CifarResNet:
    """A CIFAR ResNet of this project (option A, zeros after) rewritten as a ``CifarResNet`` (zeros split
    before and after) that computes the same function: each stage's channels are permuted so the identity
    lands where the split padding puts it. Gives a foreign-style checkpoint with trained accuracy."""
    widths = [model.conv1.out_channels] + [stage[0].conv1.out_channels for stage in model.stages()]
    perms = [torch.arange(widths[0])]  # perms[s][ours] = theirs, for the stem and each stage
    for previous, width in zip(widths[1:], widths[2:], strict=False):
        before = (width - previous) // 2
        identity = before + perms[-1]  # the shortcut copies the previous stage into channels before..
        rest = [c for c in range(width) if c not in set(identity.tolist())]
        perms.append(torch.cat([identity, torch.tensor(rest)]))
    perms = [perms[0], perms[0], *perms[1:]]  # stage 1 keeps the stem's channels (16 -> 16, no padding)
    inverse = [torch.argsort(p) for p in perms]
    foreign = CifarResNet(tuple(len(s) for s in model.stages()), model.fc.out_features, widths[0])
    ours = model.state_dict()
    state = {}
    for key in foreign.state_dict():
        source = ours["fc" + key[len("linear") :]] if key.startswith("linear") else ours[key]
        if key.startswith("linear"):
            state[key] = source[:, inverse[3]] if key.endswith("weight") else source.clone()
            continue
        stage = int(key[5]) if key.startswith("layer") else 0
        out_perm = inverse[stage]
        if source.ndim == 0:
            state[key] = source.clone()
        elif source.ndim == 4:  # conv: [out, in, kh, kw]
            first_conv_of_stage = key.startswith(f"layer{stage}.0.conv1")
            in_perm = inverse[stage - 1] if first_conv_of_stage else out_perm
            if key.startswith("conv1"):
                in_perm = torch.arange(source.shape[1])
            state[key] = source[out_perm][:, in_perm]
        else:  # BatchNorm vectors
            state[key] = source[out_perm]
    foreign.load_state_dict(state)
    return foreign.eval()
