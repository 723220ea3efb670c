"""Checkpoints: architecture name + state_dict + metadata, loadable with ``weights_only=True``.

A checkpoint never contains pickled code: ``torch.load(path, weights_only=True)`` reads it, and
``load_checkpoint`` refuses files that would need anything else. Plain torchvision state_dicts
(ImageNet ResNets) load too when the architecture is named.
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from resnet_serve.resnets.keymap import (
    CheckpointError,
    ImportReport,
    KeyMappingError,
    describe_layout,
    find_weights,
    is_state_dict,
    layout,
    match_keys,
)
from resnet_serve.resnets.models import Bottleneck, ResNet, arch_spec, available, build
from resnet_serve.resnets.spec import ContractError, DatasetSpec

FORMAT = "resnet-serve-checkpoint/1"


def _safe_globals() -> list:
    """Plain-data classes that training checkpoints from other code commonly hold beside the weights (the
    run's argparse Namespace, numpy scalars for best accuracy): allowed by the weights-only loader, which
    still refuses anything that could run code."""
    allowed: list = [argparse.Namespace]
    try:
        import numpy as np

        allowed += [np.dtype, np.core.multiarray.scalar]
        allowed += [getattr(np.dtypes, name) for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType")]
    except (ImportError, AttributeError):  # another numpy layout: those extras are simply not allowed
        pass
    return allowed


SAFE_GLOBALS = _safe_globals()


def save_checkpoint(path: str | Path, model: ResNet, arch: str, *, shortcut: str, meta: dict[str, Any]) -> Path:
    """Write ``model`` as a weights-only checkpoint (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "arch": arch,
        "num_classes": model.fc.out_features,
        "shortcut": shortcut,
        "option_a": model.option_a,
        "state_dict": state,
        "meta": meta,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; train one with `python -m resnets.train` or use one of checkpoints/*.pt"
        )
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        if "Unsupported global" in text:
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled code, not only tensors ({reason.split('. ')[0]}). "
                "Re-save it as a state_dict (torch.save(model.state_dict(), path)) from a trusted environment"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        # an empty or cut-short file is an EOFError without a message
        reason = "the file is empty" if path.stat().st_size == 0 else str(exc) or f"{type(exc).__name__}: cut short?"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, expected a dict (checkpoint or state_dict)")
    return payload


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    *,
    weights_key: str | None = None,
    num_classes: int | None = None,
    option_a: str | None = None,
) -> tuple[ResNet, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (on the CPU, eval mode).

    Reads resnet-serve checkpoints, bare state_dicts and training checkpoints from other code
    (``resnets.keymap``: where the weights are, prefixes, renames, shape checks). ``arch`` is required
    for anything but a resnet-serve checkpoint (whose own arch it must match). ``num_classes``, where
    given, must match the head's. ``option_a`` ("after" or "split") says where option-A shortcuts put
    their zero channels: a resnet-serve checkpoint records it, a foreign one must be told.

    Returns ``(model, checkpoint dict)`` with ``arch``, ``num_classes``, ``shortcut``, ``option_a``,
    ``option_a_source``, ``state_dict``, ``meta`` and ``import`` (the ImportReport).
    """
    payload = read_checkpoint(path)
    source = str(path)
    if "state_dict" in payload and "arch" in payload and is_state_dict(payload["state_dict"]):
        if arch is not None and payload["arch"] != arch:
            raise CheckpointError(
                f"{path} is a checkpoint of {payload['arch']}, not {arch}; pass --arch {payload['arch']} "
                f"or a {arch} checkpoint"
            )
        arch, shortcut, meta = (
            payload["arch"],
            payload.get("shortcut", arch_spec(payload["arch"]).shortcut),
            payload.get("meta", {}),
        )
        weights, report = dict(payload["state_dict"]), ImportReport("resnet-serve checkpoint")
        stored = payload.get("option_a") if shortcut == "A" else None
        if shortcut == "A" and stored is None:
            stored, stored_source = (
                "after",
                "a resnet-serve checkpoint written before the variant was recorded (zeros after)",
            )
        else:
            stored_source = "resnet-serve checkpoint"
        if option_a is not None and stored is not None and option_a != stored:
            raise ContractError(
                f"{path} was trained with option-A zeros {stored!r}; --option-a {option_a} contradicts it"
            )
        option_a, option_a_source = stored, stored_source if stored else None
    else:
        weights, report = find_weights(payload, weights_key, source)
        if arch is None:
            found = layout(weights)
            fits = [
                a for a in available() if found and (arch_spec(a).layers, arch_spec(a).block is Bottleneck) == found
            ]
            hint = f"its layout ({describe_layout(found)}) is that of {' or '.join(fits)}" if fits else ""
            raise CheckpointError(
                f"{path} holds weights from other code ({report.form}); name its architecture with --arch"
                + (f": {hint}" if hint else f" (one of {', '.join(available())})")
            )
        shortcut, meta = arch_spec(arch).shortcut, {}
        if shortcut == "A":
            if option_a is None:
                raise ContractError(
                    f"{arch} has option-A shortcuts, whose zero channels sit either after the identity (this "
                    "project's nets) or split before and after it (code that pads planes // 4 on each side, e.g. "
                    "F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))); the weights cannot tell "
                    "them apart: pass --option-a after or --option-a split"
                )
            option_a_source = "--option-a"
        elif option_a is not None:
            raise ContractError(f"{arch} has no option-A shortcuts; drop --option-a")
        else:
            option_a_source = None
    head = next((v for k, v in weights.items() if re.search(r"(^|\.)(fc|linear)\.weight$", k)), None)
    classes = int(head.shape[0]) if head is not None and head.ndim == 2 else arch_spec(arch).dataset.num_classes
    if num_classes is not None and num_classes != classes:
        raise ContractError(f"{path} has a {classes}-class head; --num-classes {num_classes} does not match it")
    model = build(arch, num_classes=classes, shortcut=shortcut, **({"option_a": option_a} if shortcut == "A" else {}))
    try:
        matched = match_keys(weights, model.state_dict(), report, arch)
    except KeyMappingError as exc:
        shape = describe_layout(layout(weights))
        held = f" (the file holds {shape})" if shape else ""
        raise CheckpointError(f"{path} {exc} Is it a checkpoint of another architecture?{held}") from None
    model.load_state_dict(matched)
    model.eval()
    ckpt = {
        "format": payload.get("format", "foreign"),
        "arch": arch,
        "num_classes": classes,
        "shortcut": shortcut,
        "option_a": option_a,
        "option_a_source": option_a_source,
        "state_dict": matched,
        "meta": meta,
        "import": report,
    }
    return model, ckpt


def checkpoint_contract(ckpt: dict[str, Any]) -> DatasetSpec:
    """The contract a loaded checkpoint states (``meta["contract"]``), else its architecture's dataset
    with the checkpoint's number of classes."""
    stored = ckpt.get("meta", {}).get("contract")
    if stored:
        return DatasetSpec.from_parameters(stored, f"the {ckpt['arch']} checkpoint's contract")
    default = arch_spec(ckpt["arch"]).dataset
    if default.num_classes == ckpt["num_classes"]:
        return default
    return replace(default, name="custom", num_classes=ckpt["num_classes"])
