"""PyTorch checkpoint -> ONNX with a dynamic batch dimension.

Two graph rewrites happen in PyTorch before export, each proven equal in the tests:

* BatchNorm is folded into the preceding convolution (weight * gamma / sigma, bias = beta - gamma * mu / sigma),
  so every engine starts from Conv + bias (the engines would fold it too; doing it here makes the ONNX,
  the INT8 graphs and the GPU engine start from the same weights).
* The paper's option-A shortcut (strided slice + zero channel pad) becomes a 1x1 stride-2 convolution
  with the fixed weight [I; 0] ([0; I; 0] where the zeros are split before and after the identity).
  Same function; unlike Slice + Pad it lets ONNX Runtime fuse the residual Add + ReLU into the next
  convolution (measured: Slice/Pad stop the fusion in stages 2-3).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections import Counter
from pathlib import Path

import onnx
import torch
from torch import nn

from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.models import Bottleneck, ResNet, ZeroPadShortcut
from resnet_serve.resnets.spec import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

OPSET = 18


class ExportError(ResnetServeError):
    """Export failed; the message names the stage and what to do."""


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) computing bn(conv(x)) in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    )
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).float())
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(bn.running_mean, dtype=torch.double)
        fused.bias.copy_(((bias - bn.running_mean.double()) * scale + bn.bias.double()).float())
    return fused


def zero_pad_as_conv(shortcut: ZeroPadShortcut) -> nn.Conv2d:
    """Option A as a 1x1 stride-s conv with a fixed weight (no bias): [I; 0] for zeros after the identity,
    [0; I; 0] for zeros split before and after it."""
    conv = nn.Conv2d(shortcut.in_planes, shortcut.planes, kernel_size=1, stride=shortcut.stride, bias=False)
    first = shortcut.zeros_before
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[first : first + shortcut.in_planes, :, 0, 0] = torch.eye(shortcut.in_planes)
    return conv


def prepare_for_export(model: ResNet) -> ResNet:
    """A copy of ``model`` (eval mode) with BN folded and option-A shortcuts as convolutions."""
    model = copy.deepcopy(model).eval()
    model.conv1, model.bn1 = fold_conv_bn(model.conv1, model.bn1), nn.Identity()
    for stage in model.stages():
        for block in stage:
            convs = ["conv1", "conv2"] + (["conv3"] if isinstance(block, Bottleneck) else [])
            for name in convs:
                bn_name = name.replace("conv", "bn")
                setattr(block, name, fold_conv_bn(getattr(block, name), getattr(block, bn_name)))
                setattr(block, bn_name, nn.Identity())
            if isinstance(block.downsample, ZeroPadShortcut):
                block.downsample = zero_pad_as_conv(block.downsample)
            elif isinstance(block.downsample, nn.Sequential):
                block.downsample = fold_conv_bn(block.downsample[0], block.downsample[1])
    return model


def export_onnx(model: ResNet, path: str | Path, input_shape: tuple[int, int, int], *, opset: int = OPSET) -> Path:
    """Export ``model`` (already prepared) to ONNX: input ``input`` [batch,C,H,W] float32, output ``logits``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, *input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about optional torchvision ops
        try:
            torch.onnx.export(
                model.eval(),
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                opset_version=opset,
                dynamo=True,
                optimize=True,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; report the stage
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    onnx_model = onnx.load(str(path))
    _name_batch_dim(onnx_model)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX fails onnx.checker: {exc}") from exc
    onnx.save(onnx_model, str(path))
    log.info("wrote %s: %s", path, describe_io(onnx_model))
    return path


def _name_batch_dim(model: onnx.ModelProto) -> None:
    """Give the dynamic batch dimension the same name ("batch") on the input and the output."""
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = "batch"


def describe_io(model: onnx.ModelProto) -> str:
    def one(value):
        t = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return f"{value.name} {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}{dims}"

    return ", ".join(one(v) for v in model.graph.input) + " -> " + ", ".join(one(v) for v in model.graph.output)


def op_counts(model: onnx.ModelProto | str | Path) -> Counter:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return Counter(node.op_type for node in model.graph.node)
