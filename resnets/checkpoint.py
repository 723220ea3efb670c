"""Checkpoints: architecture name + state_dict + metadata, loadable with ``weights_only=True``.

A checkpoint never contains pickled code: ``torch.load(path, weights_only=True)`` reads it, and
``load_checkpoint`` refuses files that would need anything else. Plain torchvision state_dicts
(ImageNet ResNets) load too when the architecture is named.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.models import ResNet, arch_spec, build

FORMAT = "resnet-serve-checkpoint/1"


class CheckpointError(ResnetServeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


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
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, expected a dict (checkpoint or state_dict)")
    return payload


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[ResNet, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (on the CPU, eval mode).

    ``arch``: the architecture the caller expects. Required for a bare state_dict (for example a
    torchvision ``resnet50`` file); for a resnet-serve checkpoint it is checked against the file.
    Returns ``(model, checkpoint dict)``; a bare state_dict is wrapped into the same dict form.
    """
    payload = read_checkpoint(path)
    if "state_dict" in payload and "arch" in payload:
        ckpt = payload
        if arch is not None and ckpt["arch"] != arch:
            raise CheckpointError(
                f"{path} is a checkpoint of {ckpt['arch']}, not {arch}; pass --arch {ckpt['arch']} "
                f"or a {arch} checkpoint"
            )
    elif all(isinstance(v, torch.Tensor) for v in payload.values()):
        if arch is None:
            raise CheckpointError(f"{path} is a bare state_dict; name its architecture (--arch)")
        ckpt = {
            "format": "state_dict",
            "arch": arch,
            "state_dict": payload,
            "meta": {},
            "shortcut": arch_spec(arch).shortcut,
            "num_classes": _num_classes(payload, arch_spec(arch).dataset.num_classes),
        }
    else:
        raise CheckpointError(
            f"{path} is neither a resnet-serve checkpoint (keys arch, state_dict, meta) nor a "
            f"state_dict; it has keys {sorted(payload)[:8]}"
        )
    model = build(ckpt["arch"], num_classes=ckpt["num_classes"], shortcut=ckpt["shortcut"])
    expected, got = model.state_dict(), ckpt["state_dict"]
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong_shape = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise CheckpointError(
            f"{path} does not fit {ckpt['arch']} ({details}); is it a checkpoint of another architecture?"
        )
    model.load_state_dict(got)
    model.eval()
    return model, ckpt


def _num_classes(state_dict: dict[str, torch.Tensor], default: int) -> int:
    weight = state_dict.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else default
