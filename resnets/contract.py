"""Resolve a model's contract (``DatasetSpec``): each field from the user's flag, else what the checkpoint
records, else the architecture's default, and say where every field came from.

A checkpoint trained elsewhere carries no preprocessing facts, so what the export assumed is stated in
its output and summary ("mean (0.485, 0.456, 0.406) from --mean", "image_size 32 from the resnet20
architecture's default (cifar10)"). A field nothing provides is an error that names the flag to pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from resnet_serve.resnets.spec import ContractError, DatasetSpec

FIELDS = ("mean", "std", "image_size", "resize_size", "interpolation")
FLAGS = {
    "dataset": "--dataset",
    "num_classes": "--num-classes",
    "image_size": "--image-size",
    "resize_size": "--resize-size",
    "interpolation": "--interpolation",
    "mean": "--mean",
    "std": "--std",
}


@dataclass(frozen=True)
class ContractFlags:
    """What the user stated on the command line (None: not stated)."""

    dataset: str | None = None
    num_classes: int | None = None
    image_size: int | None = None
    resize_size: int | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def given(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class Contract:
    spec: DatasetSpec
    sources: dict[str, str] = field(default_factory=dict)  # field -> where its value came from

    def lines(self) -> list[str]:
        values = {**vars(self.spec), "dataset": self.spec.name}
        return [f"{name} {values[name]} from {source}" for name, source in self.sources.items()]


def resolve(
    flags: ContractFlags,
    *,
    num_classes: int,
    num_classes_source: str,
    stored: Mapping[str, str] | None = None,
    stored_source: str = "the checkpoint",
    default: DatasetSpec | None = None,
    default_source: str = "",
    known: Mapping[str, tuple[object, str]] | None = None,
) -> Contract:
    """The contract for a model whose head scores ``num_classes`` classes.

    ``stored``: a contract the checkpoint records (``DatasetSpec.as_parameters()`` form); ``default``:
    the architecture's dataset; ``known``: facts read off the model itself, as (value, where it was
    read), e.g. an ONNX graph's input size.
    """
    if flags.num_classes is not None and flags.num_classes != num_classes:
        raise ContractError(
            f"the model scores {num_classes} classes ({num_classes_source}); "
            f"--num-classes {flags.num_classes} does not match"
        )
    recorded = DatasetSpec.from_parameters(stored, stored_source) if stored else None
    values: dict[str, object] = {"num_classes": num_classes}
    sources: dict[str, str] = {"num_classes": num_classes_source}
    given, known = flags.given(), dict(known or {})
    missing = []
    for name in FIELDS:
        if name in given:
            values[name], sources[name] = given[name], FLAGS[name]
        elif name in known:
            values[name], sources[name] = known[name]
        elif recorded is not None:
            values[name], sources[name] = getattr(recorded, name), stored_source
        elif name == "resize_size" and "image_size" in values and sources["image_size"] != default_source:
            # an input size from a flag or from the model: keep the default's resize:crop ratio (ImageNet 256:224)
            ratio = default.resize_size / default.image_size if default else 1.0
            values[name] = max(int(values["image_size"]), round(int(values["image_size"]) * ratio))
            sources[name] = (
                f"{default_source}'s resize:crop ratio" if default else "image_size (no resize before the crop)"
            )
        elif name == "interpolation":
            values[name], sources[name] = (
                default.interpolation if default else "bilinear",
                default_source or "torchvision's default",
            )
        elif default is not None:
            values[name], sources[name] = getattr(default, name), default_source
        else:
            missing.append(name)
    if missing:
        raise ContractError(
            "the model contract lacks "
            + ", ".join(missing)
            + ": nothing in the model states them; pass "
            + ", ".join(FLAGS[m] for m in missing)
            + " (or --preset cifar10|imagenet for those datasets' values)"
        )
    if "dataset" in given:
        name, sources["dataset"] = given["dataset"], "--dataset"
    elif recorded is not None and recorded.num_classes == num_classes:
        name, sources["dataset"] = recorded.name, stored_source
    elif default is not None and default.num_classes == num_classes:
        name, sources["dataset"] = default.name, default_source
    else:
        name, sources["dataset"] = "custom", f"{num_classes} classes, no dataset named (--dataset)"
    spec = DatasetSpec(
        name=name,
        num_classes=num_classes,
        mean=tuple(float(v) for v in values["mean"]),
        std=tuple(float(v) for v in values["std"]),
        image_size=int(values["image_size"]),
        resize_size=int(values["resize_size"]),
        interpolation=str(values["interpolation"]),
    )
    order = ("dataset", "num_classes", *FIELDS)
    return Contract(spec, {k: sources[k] for k in order if k in sources})
