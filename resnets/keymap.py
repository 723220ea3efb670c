"""Find the weights in the checkpoints users have and match their keys to this project's models.

Rules, each recorded in an ``ImportReport`` (printed by the export, stored in its summary):

* where the weights are: a resnet-serve checkpoint, a bare state_dict, or a training checkpoint whose
  weights sit under one of ``WEIGHT_KEYS`` beside epoch/optimizer/metrics (those are ignored, and
  listed); two candidate weight dicts (e.g. ``state_dict`` and ``ema``) need ``--weights-key``;
* prefixes that wrappers add to every key: ``module.`` (DataParallel/DDP), ``model.`` (Lightning),
  ``_orig_mod.`` (torch.compile), stripped while every key has one;
* renames from common code: the head ``linear.*`` -> ``fc.*``, projection shortcuts ``shortcut.0/.1``
  -> ``downsample.0/.1`` (torchvision and timm ImageNet ResNets already use this project's names);
* BatchNorm ``num_batches_tracked`` buffers absent from the file are filled with 0 (eval mode never
  reads them).

Every key must end up used with the shape the model expects; anything left over is an error that lists
the keys and the accepted forms. Nothing is guessed silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from resnet_serve.errors import ResnetServeError

WEIGHT_KEYS = (
    "state_dict",
    "model",
    "model_state_dict",
    "net",
    "network",
    "weights",
    "ema",
    "model_ema",
    "ema_state_dict",
    "state_dict_ema",
)
PREFIXES = ("module.", "model.", "_orig_mod.")
RENAMES = (  # (pattern, replacement, what it is)
    (re.compile(r"^linear\."), "fc.", "head linear.* -> fc.*"),
    (re.compile(r"\.shortcut\.0\."), ".downsample.0.", "projection shortcut.0 -> downsample.0"),
    (re.compile(r"\.shortcut\.1\."), ".downsample.1.", "projection shortcut.1 -> downsample.1"),
)
ACCEPTED_FORMS = (
    "accepted forms: a resnet-serve checkpoint; a bare state_dict; a training checkpoint with the weights under "
    f"one of {', '.join(WEIGHT_KEYS)}; keys as in torchvision/timm ResNets or common CIFAR ResNet code "
    "(head fc or linear, projection shortcut downsample.0/.1 or shortcut.0/.1), optionally prefixed by "
    f"{', '.join(PREFIXES)}"
)


class CheckpointError(ResnetServeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class KeyMappingError(CheckpointError):
    """A checkpoint whose weights cannot be found or matched to the architecture; the message lists what was left."""


@dataclass
class ImportReport:
    """How a checkpoint's weights were found and matched, for the user to read and the export to record."""

    form: str  # "resnet-serve checkpoint", "bare state_dict", "training checkpoint (weights under 'state_dict')"
    ignored: dict[str, str] = field(default_factory=dict)  # top-level entries not used, with what they hold
    prefixes_stripped: list[str] = field(default_factory=list)
    renamed: dict[str, int] = field(default_factory=dict)  # rule -> keys it renamed
    filled: list[str] = field(default_factory=list)  # buffers the file lacked, filled with 0
    tensors: int = 0

    def lines(self) -> list[str]:
        lines = [f"weights: {self.form}, {self.tensors} tensors matched"]
        if self.ignored:
            lines.append("ignored: " + ", ".join(f"{k} ({v})" for k, v in self.ignored.items()))
        if self.prefixes_stripped:
            lines.append("prefix stripped from every key: " + ", ".join(self.prefixes_stripped))
        lines += [f"renamed {n} keys: {rule}" for rule, n in self.renamed.items()]
        if self.filled:
            lines.append(f"filled {len(self.filled)} absent BatchNorm num_batches_tracked buffers with 0")
        return lines

    def as_dict(self) -> dict:
        return {
            "form": self.form,
            "ignored": self.ignored,
            "prefixes_stripped": self.prefixes_stripped,
            "renamed": self.renamed,
            "filled": len(self.filled),
            "tensors": self.tensors,
        }


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)}"
    if isinstance(value, Mapping):
        return f"dict of {len(value)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def is_state_dict(value) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def find_weights(payload: Mapping, weights_key: str | None, source: str) -> tuple[dict, ImportReport]:
    """The state_dict inside a loaded checkpoint file, and how it was found."""
    if is_state_dict(payload):
        if weights_key:
            raise KeyMappingError(
                f"{source} is a bare state_dict; it has no {weights_key!r} entry (drop --weights-key)"
            )
        return dict(payload), ImportReport("bare state_dict")
    candidates = {k: v for k, v in payload.items() if k in WEIGHT_KEYS and is_state_dict(v)}
    if weights_key is not None:
        if weights_key not in payload or not is_state_dict(payload[weights_key]):
            found = ", ".join(candidates) or "none"
            raise KeyMappingError(f"{source} has no weights under {weights_key!r}; candidate weight dicts: {found}")
        candidates = {weights_key: payload[weights_key]}
    if not candidates:
        entries = ", ".join(f"{k} ({describe(v)})" for k, v in list(payload.items())[:12])
        raise KeyMappingError(f"{source} holds no weights that can be found: it has {entries}. {ACCEPTED_FORMS}")
    if len(candidates) > 1:
        listed = ", ".join(f"{k} ({len(v)} tensors)" for k, v in candidates.items())
        options = " or ".join(f"--weights-key {k}" for k in candidates)
        raise KeyMappingError(f"{source} has {len(candidates)} candidate weight dicts: {listed}; pass {options}")
    ((key, weights),) = candidates.items()
    ignored = {k: describe(v) for k, v in payload.items() if k != key}
    return dict(weights), ImportReport(f"training checkpoint (weights under {key!r})", ignored=ignored)


def match_keys(weights: dict, expected: Mapping[str, torch.Tensor], report: ImportReport, target: str) -> dict:
    """``weights`` renamed to the model's keys, shapes checked, absent num_batches_tracked filled."""
    stripped = True
    while stripped and weights:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in weights) and not any(k.startswith(prefix) for k in expected):
                weights = {k[len(prefix) :]: v for k, v in weights.items()}
                report.prefixes_stripped.append(prefix)
                stripped = True
    renamed = {}
    for key, value in weights.items():
        new = key
        if key not in expected:
            for pattern, replacement, rule in RENAMES:
                candidate = pattern.sub(replacement, new)
                if candidate != new:
                    new = candidate
                    report.renamed[rule] = report.renamed.get(rule, 0) + 1
        renamed[new] = value
    missing = [k for k in expected if k not in renamed]
    for key in [k for k in missing if k.endswith("num_batches_tracked")]:
        renamed[key] = torch.zeros((), dtype=torch.long)
        report.filled.append(key)
    missing = [k for k in expected if k not in renamed]
    leftover = [k for k in renamed if k not in expected]
    wrong = [
        f"{k}: file {list(renamed[k].shape)}, {target} expects {list(expected[k].shape)}"
        for k in expected
        if k in renamed and tuple(renamed[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if leftover:
        problems.append(f"{len(leftover)} keys nothing maps: {sample(leftover)}")
    if missing:
        problems.append(f"{len(missing)} weights of {target} not in the file: {sample(missing)}")
    if wrong:
        problems.append(f"{len(wrong)} shapes differ: {sample(wrong, 4, '; ')}")
    if problems:
        raise KeyMappingError(f"does not fit {target}: " + "; ".join(problems) + f". {ACCEPTED_FORMS}")
    report.tensors = len(renamed)
    return renamed


def sample(items: list[str], n: int = 6, sep: str = ", ") -> str:
    return sep.join(items[:n]) + (" ..." if len(items) > n else "")


def layout(weights: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], bool] | None:
    """Blocks per stage and whether they are bottlenecks, read from ``layer<S>.<B>.conv<K>`` keys."""
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for key in weights:
        m = re.search(r"layer(\d+)\.(\d+)\.conv(\d)", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            bottleneck |= m.group(3) == "3"
    if not blocks:
        return None
    return tuple(len(blocks[s]) for s in sorted(blocks)), bottleneck


def describe_layout(found: tuple[tuple[int, ...], bool] | None) -> str:
    if found is None:
        return ""
    counts, bottleneck = found
    return f"{len(counts)} stages of {'/'.join(map(str, counts))} {'bottleneck' if bottleneck else 'basic'} blocks"
