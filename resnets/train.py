"""Train a CIFAR-10 ResNet with the paper's recipe (He et al. 2015, Section 4.2).

    python -m resnets.train --arch resnet20 --data-dir ../shared/data/cifar-10-jpg --out runs/resnet20

Default recipe: SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 50% and
75% of training, 64k iterations (164 epochs of the 50k training images), 4-pixel pad + random
32x32 crop + horizontal flip. ResNet-110/1202 warm up at lr 0.01 for 400 iterations, as in the paper.
Anything beyond the paper (cosine schedule, label smoothing, other weight decay, nesterov) is
behind flags and written into the model card.

Writes into --out: ``last.pt`` (resumable state, every epoch), ``log.jsonl`` (one JSON line per
epoch: train loss/error, test top-1/top-5), ``<arch>.pt`` (final weights-only checkpoint) and
``<arch>.md`` (model card). Re-running the same command resumes from ``last.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_serve import cli, settings
from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.checkpoint import save_checkpoint
from resnet_serve.resnets.console import progress
from resnet_serve.resnets.data import load_cifar10
from resnet_serve.resnets.env import environment
from resnet_serve.resnets.evaluate import evaluate_model
from resnet_serve.resnets.models import arch_spec, build
from resnet_serve.resnets.tensors import Normalizer, TensorBatches, to_tensor_nchw

log = logging.getLogger(__name__)

PAPER_ITERATIONS = 64_000


class TrainError(ResnetServeError):
    """A run that cannot start or resume as asked (wrong kind of network, a resume with another recipe)."""


@dataclass
class Recipe:
    arch: str = "resnet20"
    shortcut: str | None = None  # None: the architecture's default (option A for CIFAR ResNets)
    epochs: int | None = None  # None: the paper's 64k iterations
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: str = "step"  # "step" (paper) or "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, for "step"
    warmup_iters: int | None = None  # None: 400 for depth >= 110 (paper), else 0
    warmup_lr: float = 0.01
    label_smoothing: float = 0.0
    seed: int = 0

    def warmup_iterations(self, depth: int) -> int:
        """Iterations at ``warmup_lr`` before the schedule: as set, else the paper's 400 for depth >= 110."""
        if self.warmup_iters is not None:
            return self.warmup_iters
        return 400 if depth >= 110 else 0

    def total_epochs(self, train_size: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return math.ceil(PAPER_ITERATIONS / math.ceil(train_size / self.batch_size))

    def deviations(self) -> list[str]:
        """The ways this recipe departs from the paper's, for the model card."""
        paper = Recipe(arch=self.arch)
        return [
            f"{name}={getattr(self, name)!r} (paper: {getattr(paper, name)!r})"
            for name in (
                "batch_size",
                "lr",
                "momentum",
                "weight_decay",
                "nesterov",
                "schedule",
                "milestones",
                "warmup_lr",
                "label_smoothing",
                "shortcut",
            )
            if getattr(self, name) != getattr(paper, name)
        ] + ([f"epochs={self.epochs} (paper: 64k iterations)"] if self.epochs is not None else [])


def learning_rate(recipe: Recipe, iteration: int, total_iters: int, warmup_iters: int) -> float:
    if iteration < warmup_iters:
        return recipe.warmup_lr
    if recipe.schedule == "cosine":
        progress = (iteration - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * recipe.lr * (1.0 + math.cos(math.pi * progress))
    drops = sum(iteration >= round(m * total_iters) for m in recipe.milestones)
    return recipe.lr * (0.1**drops)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnets.train", description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet20", help="a CIFAR architecture from resnets.available()")
    p.add_argument("--shortcut", choices=("A", "B"), help="shortcut option (default: the architecture's, A)")
    p.add_argument("--epochs", type=cli.positive_int, help="default: the paper's 64k iterations (164 epochs)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="CIFAR-10 data (ImageFolder tree or official pickles); default: cifar-10-jpg (else cifar-10) "
        f"under ${settings.DATA_ENV}, ../shared/data or data",
    )
    p.add_argument("--download", action="store_true", help="download the official CIFAR-10 into --data-dir")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (fast on GPUs and AMX/AVX512-bf16 CPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out", type=cli.out_dir, default=None, help="output directory (default runs/<arch>)")
    p.add_argument("--threads", type=cli.positive_int, help="CPU threads for PyTorch")
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    p.add_argument("--lr", type=cli.positive_float, default=0.1)
    p.add_argument("--weight-decay", type=cli.non_negative_float, default=1e-4)
    p.add_argument("--nesterov", action="store_true", help="not in the paper")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step", help="cosine is not in the paper")
    p.add_argument("--label-smoothing", type=cli.fraction, default=0.0, help="not in the paper")
    p.add_argument(
        "--warmup-iters", type=cli.non_negative_int, help="iterations at lr 0.01 (default: 400 for depth >= 110)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--limit-train", type=cli.positive_int, help="train on a seeded random subset of N images (smoke tests)"
    )
    p.add_argument("--limit-test", type=cli.positive_int, help="evaluate on a seeded random subset of N test images")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out has last.pt")
    p.add_argument(
        "--reschedule",
        action="store_true",
        help="resume a run with a different --epochs: the lr schedule follows the new length from the "
        "next epoch on (recorded in the log and the model card)",
    )
    return p


def recipe_from_args(args) -> Recipe:
    return Recipe(
        arch=args.arch,
        shortcut=args.shortcut,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        nesterov=args.nesterov,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        warmup_iters=args.warmup_iters,
        seed=args.seed,
    )


def main(argv=None) -> int:
    return cli.run(build_parser(), train, argv)


def train(args) -> int:
    recipe = recipe_from_args(args)
    spec = arch_spec(recipe.arch)
    if spec.dataset.name != "cifar10":
        raise TrainError(
            f"{recipe.arch} is an ImageNet architecture; this trainer implements the paper's "
            "CIFAR-10 recipe (use a CIFAR net: resnet20..resnet1202, plain20..plain56)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out or Path("runs") / recipe.arch
    out.mkdir(parents=True, exist_ok=True)
    data_dir = settings.cifar_dir(args.data_dir)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    env = environment()  # at the start: the commit of the code that trains

    train_set = load_cifar10(data_dir, "train", download=args.download)
    test_set = load_cifar10(data_dir, "test")
    for dataset, limit in ((train_set, args.limit_train), (test_set, args.limit_test)):
        if limit and limit < len(dataset):  # a seeded random subset: the files are sorted by class
            keep = np.sort(np.random.default_rng(recipe.seed).permutation(len(dataset))[:limit])
            dataset.images, dataset.labels = dataset.images[keep], dataset.labels[keep]
    log.info("data: %s (train %d, test %d images)", data_dir, len(train_set), len(test_set))

    shortcut = recipe.shortcut or spec.shortcut
    model = build(recipe.arch, shortcut=shortcut).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov,
    )
    epochs = recipe.total_epochs(len(train_set))
    generator = torch.Generator().manual_seed(recipe.seed)
    train_images = to_tensor_nchw(train_set.images, device)
    train_labels = torch.from_numpy(train_set.labels).to(device)
    batches = TensorBatches(train_images, train_labels, recipe.batch_size, train=True, generator=generator)
    total_iters = epochs * len(batches)
    warmup_iters = recipe.warmup_iterations(spec.depth)
    normalizer = Normalizer(spec.dataset, device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    forward = torch.compile(model) if args.compile else model
    amp_dtype = torch.bfloat16 if args.amp else None

    start_epoch, history, elapsed_before, changes = 0, [], 0.0, []
    state_path = out / "last.pt"
    if state_path.is_file() and not args.no_resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = state["recipe"]
        changes = state.get("schedule_changes", [])
        if saved != jsonable(asdict(recipe)):
            if not (args.reschedule and {**saved, "epochs": recipe.epochs} == jsonable(asdict(recipe))):
                raise TrainError(
                    f"{state_path} was written with another recipe ({recipe_diff(saved, asdict(recipe))}); "
                    "use --no-resume or another --out"
                    + ("" if args.reschedule else ", or --reschedule when only --epochs differs")
                )
            if state["epoch"] >= epochs:
                raise TrainError(f"{state_path} has already trained {state['epoch']} epochs; --epochs must be more")
            changes = changes + [{"at_epoch": state["epoch"], "from_epochs": saved["epochs"], "to_epochs": epochs}]
            log.info(
                "rescheduling %s at epoch %d: %s -> %d epochs", state_path, state["epoch"], saved["epochs"], epochs
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, history, elapsed_before = state["epoch"], state["history"], state["elapsed_s"]
        log.info("resuming %s from epoch %d", state_path, start_epoch)

    log.info(
        "training %s (%s shortcuts) for %d epochs (%d iterations) on %s%s",
        recipe.arch,
        shortcut,
        epochs,
        total_iters,
        device,
        " with bf16 autocast" if amp_dtype else "",
    )
    test_images = to_tensor_nchw(test_set.images)
    wall_start = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        errors = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for i, (x, y) in enumerate(progress(batches, f"epoch {epoch + 1}/{epochs}")):
            lr = learning_rate(recipe, epoch * len(batches) + i, total_iters, warmup_iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = normalizer(x).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = forward(x)
                loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            errors += (logits.detach().argmax(1) != y).sum()
            seen += len(y)
        train_seconds = time.perf_counter() - epoch_start
        test = evaluate_model(model, test_images, test_set.labels, test_set.classes, spec.dataset, device=str(device))
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": round(float(loss_sum) / seen, 5),
            "train_error": round(100.0 * float(errors) / seen, 3),
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "epoch_seconds": round(train_seconds, 1),
            "train_img_s": round(seen / train_seconds, 1),
        }
        history.append(record)
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            "epoch %d/%d  loss %.4f  train err %.2f%%  test top-1 %.2f%%  top-5 %.2f%%  (%.0f s, %.0f img/s)",
            epoch + 1,
            epochs,
            record["train_loss"],
            record["train_error"],
            test["top1"],
            test["top5"],
            train_seconds,
            record["train_img_s"],
        )
        torch.save(
            {
                "recipe": jsonable(asdict(recipe)),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "history": history,
                "elapsed_s": elapsed_before + time.perf_counter() - wall_start,
                "schedule_changes": changes,
            },
            out / "last.pt.tmp",
        )
        (out / "last.pt.tmp").replace(state_path)

    wall_s = elapsed_before + time.perf_counter() - wall_start
    final = evaluate_model(model, test_images, test_set.labels, test_set.classes, spec.dataset, device=str(device))
    meta = {
        "recipe": jsonable(asdict(recipe)),
        "recipe_deviations": recipe.deviations()
        + [
            f"schedule rescheduled at epoch {c['at_epoch']} from {c['from_epochs'] or 'the paper'} to "
            f"{c['to_epochs']} epochs (lr follows the new length from there on)"
            for c in changes
        ],
        "schedule_changes": changes,
        "epochs": epochs,
        "iterations": total_iters,
        "warmup_iters": warmup_iters,
        "amp": "bf16" if amp_dtype else None,
        "contract": spec.dataset.as_parameters(),  # what the model expects as input: it travels with it
        "data": {"dir": _display_path(data_dir), "train_images": len(train_set), "test_images": len(test_set)},
        "test": {"top1": final["top1"], "top5": final["top5"], "n": final["n"], "per_class": final["per_class"]},
        "wall_time_s": round(wall_s, 1),
        "device": str(device),
        "environment": env,
    }
    ckpt_path = save_checkpoint(out / f"{recipe.arch}.pt", model, recipe.arch, shortcut=shortcut, meta=meta)
    card = write_model_card(out / f"{recipe.arch}.md", recipe.arch, meta, history)
    log.info("wrote %s and %s: test top-1 %.2f%% top-5 %.2f%%", ckpt_path, card, final["top1"], final["top5"])
    print(
        json.dumps(
            {
                "checkpoint": str(ckpt_path),
                "top1": final["top1"],
                "top5": final["top5"],
                "n": final["n"],
                "wall_time_s": meta["wall_time_s"],
            }
        )
    )
    return 0


def write_model_card(path: Path, arch: str, meta: dict, history: list[dict]) -> Path:
    spec = arch_spec(arch)
    env = meta["environment"]
    params = sum(p.numel() for p in build(arch, shortcut=meta["recipe"]["shortcut"] or spec.shortcut).parameters())
    deviations = meta["recipe_deviations"]
    recipe = meta["recipe"]
    hardware = env["gpu"] or f"{env['cpu_model']} ({env['cpu_cores']} cores)"
    lines = [
        f"# {arch}: {spec.description}",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| architecture | `{arch}`, {params:,} parameters, shortcut option {recipe['shortcut'] or spec.shortcut} |",
        f"| test top-1 | **{meta['test']['top1']:.2f}%** |",
        f"| test top-5 | {meta['test']['top5']:.2f}% |",
        f"| test images | {meta['test']['n']:,} ({meta['data']['dir']}, test split) |",
        f"| training images | {meta['data']['train_images']:,} (train split of the same data) |",
        f"| epochs / iterations | {meta['epochs']} / {meta['iterations']:,} |",
        f"| recipe | SGD momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}, batch "
        f"{recipe['batch_size']}, lr {recipe['lr']} ({recipe['schedule']} schedule"
        + (f", /10 at {', '.join(f'{m:.0%}' for m in recipe['milestones'])}" if recipe["schedule"] == "step" else "")
        + f"), warmup {meta['warmup_iters']} iterations, pad-4 crop + flip |",
        f"| departures from the paper | {'; '.join(deviations) if deviations else 'none'} |",
        f"| precision | {'bf16 autocast' if meta['amp'] else 'fp32'} |",
        f"| hardware | {hardware}, device `{meta['device']}` |",
        f"| wall time | {meta['wall_time_s'] / 60:.1f} min |",
        f"| software | torch {env['versions'].get('torch')}, python {env['versions'].get('python')} |",
        f"| git commit | {env['git_commit']} |",
        "",
        "Test accuracy is measured on the final weights (no checkpoint selection on the test split).",
        "Reproduce it: `python -m resnets.evaluate --checkpoint checkpoints/"
        f"{arch}.pt --data-dir {meta['data']['dir']}`.",
        "",
        "Per-class test top-1: " + ", ".join(f"{k} {v:.1f}%" for k, v in meta["test"]["per_class"].items()),
        "",
        "## Training curve (every 10th epoch and the last)",
        "",
        "| epoch | lr | train loss | train error % | test top-1 % | test top-5 % |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rec in history:
        if rec["epoch"] % 10 == 0 or rec is history[-1]:
            lines.append(
                f"| {rec['epoch']} | {rec['lr']:g} | {rec['train_loss']:.4f} | {rec['train_error']:.2f} "
                f"| {rec['test_top1']:.2f} | {rec['test_top5']:.2f} |"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe_diff(saved: dict, wanted: dict) -> str:
    """The keys where a saved settings dict and the asked one differ: "key: saved there, asked asked"."""
    wanted = jsonable(wanted)
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} asked" for k in keys)


def _display_path(path: Path) -> str:
    """Relative to the working directory (the checkout, when run from it), so model cards read the same everywhere."""
    try:
        return os.path.relpath(Path(path).resolve())
    except ValueError:  # another drive on Windows
        return str(path)


def jsonable(obj):
    """``obj`` as it reads back from JSON (tuples become lists), to compare with saved settings."""
    return json.loads(json.dumps(obj))


if __name__ == "__main__":
    sys.exit(main())
