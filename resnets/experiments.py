"""Reproduce He et al. 2015's evidence on CIFAR-10: the degradation problem and layer responses.

    python -m resnets.experiments degradation                  # the paper's 64k iterations (a GPU job)
    python -m resnets.experiments degradation --short          # the CPU schedule: 5k iterations
    python -m resnets.experiments layer-responses              # Fig. 7 from the nets trained above
    python -m resnets.experiments report                       # README.md with both, beside the paper's

``degradation`` trains plain and residual nets (default plain20, plain56, resnet20, resnet56) with one
protocol: the paper's recipe (SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at
50% and 75% of training, 4-pixel pad + random crop + flip; ``resnets.train.Recipe``), the same seed and
the same minibatch order for every net. The nets advance in turns of ``--eval-every`` iterations; after
each turn a net records its training error (mean over the augmented minibatches of that turn, as the
paper plots it) and its test error, and saves a resumable state: the same command resumes where it was
stopped. At the end it also measures each net's error on the whole training set without augmentation.
It writes ``degradation.json`` and ``degradation.png`` (Fig. 6: thin dashed = training error, bold = test
error; plain nets left, ResNets right) into ``--out``, and each net's final checkpoint into ``--work``.

``layer-responses`` measures, for each trained net, the standard deviation of every 3x3 layer's response
(after its BN, before the addition and the ReLU) on test images: per channel over images and positions,
then averaged over the layer's channels. It writes ``layer_responses.json`` and ``layer_responses.png``
(Fig. 7: layers in the network's order, and sorted by magnitude).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_serve import cli, settings
from resnet_serve.errors import ResnetServeError
from resnet_serve.resnets.checkpoint import load_checkpoint, save_checkpoint
from resnet_serve.resnets.data import load_cifar10
from resnet_serve.resnets.env import environment
from resnet_serve.resnets.evaluate import evaluate_model, torch_forward
from resnet_serve.resnets.metrics import predict_chunked
from resnet_serve.resnets.models import ResNet, arch_spec, build
from resnet_serve.resnets.tensors import Normalizer, random_crop_flip, to_tensor_nchw
from resnet_serve.resnets.train import PAPER_ITERATIONS, Recipe, jsonable, learning_rate, recipe_diff

log = logging.getLogger(__name__)

DEFAULT_ARCHS = ("plain20", "plain56", "resnet20", "resnet56")
SHORT_ITERATIONS = 5_000  # CPU schedule: ~1.5 h for the 4 default nets on 2 cores (0.9 s per iteration of all 4)
STATE = "state.pt"


class ExperimentError(ResnetServeError):
    """An experiment that cannot run or resume as asked."""


@dataclass
class Protocol:
    """Everything that must be equal for a run to resume: one protocol for every net."""

    archs: tuple[str, ...] = DEFAULT_ARCHS
    iterations: int = PAPER_ITERATIONS
    eval_every: int = 500
    batch_size: int = 128
    seed: int = 0

    def recipe(self, arch: str) -> Recipe:
        return Recipe(arch=arch, batch_size=self.batch_size, seed=self.seed)


class BatchStream:
    """Endless shuffled, augmented minibatches (a new permutation each epoch) that resume mid-epoch.

    Every net gets its own stream with the same seed, so all nets see the same minibatches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_per_epoch = -(-len(labels) // batch_size)
        self.epoch, self.position = 0, 0
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_start = self.generator.get_state()
        self.order = torch.randperm(len(self.labels), generator=self.generator)
        self.position = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position == self.batches_per_epoch:
            self.epoch += 1
            self._new_epoch()
        idx = self.order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        self.position += 1
        return random_crop_flip(self.images[idx], generator=self.generator), self.labels[idx]

    def state_dict(self) -> dict:
        return {"epoch_start": self.epoch_start, "now": self.generator.get_state(), "epoch": self.epoch,
                "position": self.position}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["epoch_start"])
        self.order = torch.randperm(len(self.labels), generator=self.generator)  # the epoch's permutation again
        self.epoch_start = state["epoch_start"]
        self.generator.set_state(state["now"])
        self.epoch, self.position = state["epoch"], state["position"]


class Run:
    """One net of the experiment: model, optimizer, its minibatch stream and its curve."""

    def __init__(self, arch: str, protocol: Protocol, images: torch.Tensor, labels: torch.Tensor, work: Path) -> None:
        spec = arch_spec(arch)
        if spec.dataset.name != "cifar10":
            raise ExperimentError(f"{arch} is an ImageNet architecture; the experiments use CIFAR nets")
        self.arch, self.protocol, self.spec = arch, protocol, spec
        self.recipe = protocol.recipe(arch)
        self.dir = work / arch
        torch.manual_seed(protocol.seed)  # the same initial weights for a given architecture and seed
        self.model = build(arch).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=self.recipe.lr,
            momentum=self.recipe.momentum,
            weight_decay=self.recipe.weight_decay,
        )
        self.stream = BatchStream(images, labels, protocol.batch_size, protocol.seed)
        self.normalizer = Normalizer(spec.dataset)
        self.warmup_iters = self.recipe.warmup_iterations(spec.depth)  # the paper warms ResNet-110 up at lr 0.01
        self.iteration, self.history, self.train_seconds = 0, [], 0.0

    @property
    def done(self) -> bool:
        return self.iteration >= self.protocol.iterations

    def train_turn(self) -> dict:
        """Up to ``eval_every`` iterations; returns the turn's mean training loss and error (%)."""
        self.model.train()
        end = min(self.protocol.iterations, self.iteration + self.protocol.eval_every)
        loss_sum, errors, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
        start = time.perf_counter()
        while self.iteration < end:
            lr = learning_rate(self.recipe, self.iteration, self.protocol.iterations, self.warmup_iters)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = self.stream.next()
            logits = self.model(self.normalizer(x).contiguous(memory_format=torch.channels_last))
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            errors += (logits.detach().argmax(1) != y).sum()
            seen += len(y)
            self.iteration += 1
        self.train_seconds += time.perf_counter() - start
        return {"lr": lr, "train_loss": float(loss_sum) / seen, "train_error_pct": 100.0 * float(errors) / seen}

    def record(self, turn: dict, test: dict) -> dict:
        rec = {
            "iteration": self.iteration,
            "epoch": round(self.iteration / self.stream.batches_per_epoch, 3),
            "lr": turn["lr"],
            "train_loss": round(turn["train_loss"], 5),
            "train_error_pct": round(turn["train_error_pct"], 3),
            "test_error_pct": round(100.0 - test["top1"], 3),
            "train_seconds": round(self.train_seconds, 1),
        }
        self.history.append(rec)
        return rec

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {
            "protocol": jsonable(asdict(self.protocol)),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stream": self.stream.state_dict(),
            "iteration": self.iteration,
            "history": self.history,
            "train_seconds": self.train_seconds,
        }
        torch.save(state, self.dir / (STATE + ".tmp"))
        (self.dir / (STATE + ".tmp")).replace(self.dir / STATE)

    def resume(self) -> bool:
        path = self.dir / STATE
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["protocol"] != jsonable(asdict(self.protocol)):
            diff = recipe_diff(state["protocol"], asdict(self.protocol))
            raise ExperimentError(
                f"{path} was trained with another protocol ({diff}); use the same flags to resume, "
                "or --no-resume / another --work to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.iteration, self.history, self.train_seconds = state["iteration"], state["history"], state["train_seconds"]
        log.info("%s: resuming at iteration %d", self.arch, self.iteration)
        return True

    def checkpoint_path(self) -> Path:
        return self.dir / f"{self.arch}.pt"


def run_degradation(args) -> int:
    iterations = args.iterations
    if iterations is None:
        iterations = SHORT_ITERATIONS if args.short else PAPER_ITERATIONS
    protocol = Protocol(
        archs=args.archs,
        iterations=iterations,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    if protocol.iterations < 1 or protocol.eval_every < 1 or protocol.batch_size < 1:
        raise ExperimentError("--iterations, --eval-every and --batch-size must be positive")
    for arch in protocol.archs:
        arch_spec(arch)  # unknown names fail here, listing the registered ones
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = settings.cifar_dir(args.data_dir)
    train, test = load_cifar10(data_dir, "train", download=args.download), load_cifar10(data_dir, "test")
    log.info("data: %s (train %d, test %d images)", data_dir, len(train), len(test))
    test_images = to_tensor_nchw(test.images)
    out, work = args.out, args.work
    out.mkdir(parents=True, exist_ok=True)
    env = environment()

    train_images, train_labels = to_tensor_nchw(train.images), torch.from_numpy(train.labels)
    runs = [Run(arch, protocol, train_images, train_labels, work) for arch in protocol.archs]
    for run in runs:
        if not args.no_resume:
            run.resume()
    log.info(
        "degradation: %s, %d iterations (lr /10 at %d and %d), %d per turn, batch %d, seed %d",
        ", ".join(protocol.archs),
        protocol.iterations,
        round(0.5 * protocol.iterations),
        round(0.75 * protocol.iterations),
        protocol.eval_every,
        protocol.batch_size,
        protocol.seed,
    )
    started = time.perf_counter()
    while not all(run.done for run in runs):
        for run in runs:
            if run.done:
                continue
            turn = run.train_turn()
            test_report = evaluate_model(run.model, test_images, test.labels, test.classes, run.spec.dataset)
            rec = run.record(turn, test_report)
            run.save()
            log.info(
                "%-9s it %6d/%d  lr %g  train err %6.2f%%  test err %6.2f%%  (%.0f s training so far)",
                run.arch,
                rec["iteration"],
                protocol.iterations,
                rec["lr"],
                rec["train_error_pct"],
                rec["test_error_pct"],
                run.train_seconds,
            )
        write_degradation(out, protocol, runs, data_dir, len(train), len(test), env, final=None)
    final = {}
    for run in runs:
        forward = torch_forward(run.model, run.spec.dataset)
        predictions = predict_chunked(forward, train_images).argmax(1)
        final[run.arch] = round(100.0 * float((predictions != train.labels).mean()), 3)
        meta = {"experiment": "degradation", "protocol": jsonable(asdict(protocol)), "history": run.history}
        save_checkpoint(run.checkpoint_path(), run.model, run.arch, shortcut=run.model.shortcut, meta=meta)
    path = write_degradation(out, protocol, runs, data_dir, len(train), len(test), env, final=final)
    log.info("wrote %s and its plot (%.0f s this invocation)", path, time.perf_counter() - started)
    print(json.dumps({name: result["final"] for name, result in json.loads(path.read_text())["nets"].items()}))
    return 0


def write_degradation(out: Path, protocol: Protocol, runs: list[Run], data_dir, n_train, n_test, env, final) -> Path:
    """degradation.json (+ .png): the protocol, every net's curve and final figures, and the findings."""
    nets = {}
    for run in runs:
        last = run.history[-1] if run.history else None
        nets[run.arch] = {
            "complete": run.done and final is not None,
            "final": {
                "iteration": run.iteration,
                "train_error_pct": last and last["train_error_pct"],  # the last turn's augmented minibatches
                "train_error_pct_no_augmentation": final and final.get(run.arch),  # whole training set, eval mode
                "test_error_pct": last and last["test_error_pct"],
                "train_seconds": round(run.train_seconds, 1),
            },
            "history": run.history,
        }
    result = {
        "experiment": "degradation",
        "protocol": {
            **jsonable(asdict(protocol)),
            "recipe": "SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 50% and 75% of the "
            "iterations, 4-pixel zero pad + random 32x32 crop + horizontal flip, fp32, option A shortcuts",
            "training_error": "mean over the augmented minibatches of each turn of eval_every iterations "
            "(train mode); train_error_pct_no_augmentation: the final weights on the whole training set",
            "data": {"dir": str(data_dir), "train_images": n_train, "test_images": n_test},
        },
        "findings": findings(nets),
        "nets": nets,
        "environment": env,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "degradation.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    plot_degradation(result, out / "degradation.png")
    return path


def findings(nets: dict) -> list[dict]:
    """The paper's two claims, checked on this run's final training error: deeper plain worse, deeper ResNet better."""
    out = []
    for shallow, deep, paper in (
        ("plain20", "plain56", "deeper plain net has higher training error (degradation)"),
        ("resnet20", "resnet56", "deeper ResNet has lower training error"),
    ):
        if shallow not in nets or deep not in nets:
            continue
        a, b = nets[shallow]["final"], nets[deep]["final"]
        if a["train_error_pct"] is None or b["train_error_pct"] is None:
            continue
        entry = {"claim": paper, "shallow": shallow, "deep": deep}
        for key in ("train_error_pct", "train_error_pct_no_augmentation", "test_error_pct"):
            if a[key] is not None and b[key] is not None:
                entry[f"{key}_deep_minus_shallow"] = round(b[key] - a[key], 3)
        diff = entry["train_error_pct_deep_minus_shallow"]
        entry["reproduced"] = diff > 0 if shallow.startswith("plain") else diff < 0
        out.append(entry)
    return out


def plot_degradation(result: dict, path: Path) -> Path:
    """Fig. 6 style: thin dashed = training error, bold = test error; plain nets left, ResNets right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = result["nets"]
    families = [
        ("plain", [a for a in nets if a.startswith("plain")]),
        ("ResNet", [a for a in nets if a.startswith("resnet")]),
    ]
    families = [(name, archs) for name, archs in families if archs]
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.2), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    top = 5.0
    for ax, (family, archs) in zip(axes[0], families, strict=True):
        for i, arch in enumerate(sorted(archs, key=lambda a: arch_spec(a).depth)):
            hist = nets[arch]["history"]
            if not hist:
                continue
            its = [h["iteration"] for h in hist]
            label = f"{family}-{arch_spec(arch).depth}"
            ax.plot(its, [h["train_error_pct"] for h in hist], "--", lw=0.9, color=colors(i))
            ax.plot(its, [h["test_error_pct"] for h in hist], "-", lw=2.2, color=colors(i), label=label)
            top = max(top, *(h["test_error_pct"] for h in hist[len(hist) // 4 :]))
        ax.set_title(f"{family} nets: dashed = training error, bold = test error")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100.0, top * 1.15))
    p = result["protocol"]
    fig.suptitle(
        f"CIFAR-10 ({p['data']['train_images']:,} training images), {p['iterations']:,} iterations, "
        f"batch {p['batch_size']}, seed {p['seed']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- layer responses (Fig. 7) ----


def response_layers(model: ResNet) -> list[tuple[str, torch.nn.BatchNorm2d]]:
    """Every 3x3 conv's BN, in the network's order: (conv name, its BN). The stem counts (it is a 3x3 layer)."""
    layers = []
    for prefix, module in model.named_modules():
        for i in (1, 2, 3):
            conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
            if (
                isinstance(conv, torch.nn.Conv2d)
                and conv.kernel_size == (3, 3)
                and isinstance(bn, torch.nn.BatchNorm2d)
            ):
                layers.append((f"{prefix}.conv{i}" if prefix else f"conv{i}", bn))
    return layers


@torch.no_grad()
def layer_response_std(model: ResNet, images: torch.Tensor, spec, batch_size: int = 500) -> list[tuple[str, float]]:
    """Std of each 3x3 layer's BN output (before addition and ReLU) over ``images`` (uint8 NCHW).

    Per channel over images and positions, then the mean over the layer's channels. The hook reads the BN
    output before the in-place ReLU that follows it changes it."""
    model.eval()
    layers = response_layers(model)
    sums = [None] * len(layers)
    handles = []

    def hook(index):
        def accumulate(_module, _inputs, output):
            x = output.detach().double().transpose(0, 1).reshape(output.shape[1], -1)  # channels x values
            moments = torch.stack(
                [torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.double), x.sum(1), (x * x).sum(1)]
            )
            sums[index] = moments if sums[index] is None else sums[index] + moments

        return accumulate

    for i, (_, bn) in enumerate(layers):
        handles.append(bn.register_forward_hook(hook(i)))
    try:
        forward = torch_forward(model, spec)
        predict_chunked(forward, images, batch_size)
    finally:
        for h in handles:
            h.remove()
    result = []
    for (name, _), (n, s, sq) in zip(layers, sums, strict=True):
        mean = s / n
        std = torch.sqrt(torch.clamp(sq / n - mean * mean, min=0.0))
        result.append((name, float(std.mean())))
    return result


def run_layer_responses(args) -> int:
    paths = list(args.checkpoints) or [args.work / arch / f"{arch}.pt" for arch in DEFAULT_ARCHS]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise ExperimentError(
            f"no trained checkpoint at {', '.join(missing)}; run `python -m resnets.experiments degradation` "
            "first (its --work folder), or pass --checkpoints"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = settings.cifar_dir(args.data_dir)
    test = load_cifar10(data_dir, "test")
    images = to_tensor_nchw(test.images)
    if args.limit_test and args.limit_test < len(images):
        keep = np.sort(np.random.default_rng(0).permutation(len(images))[: args.limit_test])
        images = images[torch.from_numpy(keep)]
    nets = {}
    for path in paths:
        model, ckpt = load_checkpoint(path)
        arch = ckpt["arch"]
        stds = layer_response_std(model, images, arch_spec(arch).dataset)
        values = [s for _, s in stds]
        history = ckpt.get("meta", {}).get("history") or []
        nets[arch] = {
            "checkpoint": str(path),
            "iterations": history[-1]["iteration"] if history else None,
            "layers": [{"index": i + 1, "layer": name, "std": round(s, 5)} for i, (name, s) in enumerate(stds)],
            "mean_std": round(float(np.mean(values)), 5),
        }
        log.info("%s: %d 3x3 layers, mean response std %.4f", arch, len(stds), nets[arch]["mean_std"])
    comparisons = []
    for depth in sorted({arch_spec(a).depth for a in nets}):
        plain, res = f"plain{depth}", f"resnet{depth}"
        if plain in nets and res in nets:
            comparisons.append(
                {
                    "depth": depth,
                    "plain_mean_std": nets[plain]["mean_std"],
                    "resnet_mean_std": nets[res]["mean_std"],
                    "resnet_below_plain": nets[res]["mean_std"] < nets[plain]["mean_std"],
                }
            )
    result = {
        "experiment": "layer-responses",
        "definition": "std of each 3x3 conv layer's output after its BN, before the addition and ReLU: per channel "
        "over test images and positions, averaged over the layer's channels; layers in network order (stem first)",
        "data": {"dir": str(data_dir), "test_images": len(images)},
        "comparisons": comparisons,
        "nets": nets,
        "environment": environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "layer_responses.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    plot_layer_responses(result, args.out / "layer_responses.png")
    log.info("wrote %s and its plot", path)
    print(json.dumps(comparisons))
    return 0


def plot_layer_responses(result: dict, path: Path) -> Path:
    """Fig. 7 style: std per 3x3 layer in the network's order (top) and sorted by magnitude (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7))
    for arch, net in sorted(result["nets"].items(), key=lambda kv: (arch_spec(kv[0]).depth, kv[0])):
        stds = [layer["std"] for layer in net["layers"]]
        style = "--" if arch.startswith("plain") else "-"
        family = "plain" if arch.startswith("plain") else "ResNet"
        label = f"{family}-{arch_spec(arch).depth}"
        idx = range(1, len(stds) + 1)
        top.plot(idx, stds, style, marker=".", label=label)
        bottom.plot(idx, sorted(stds, reverse=True), style, marker=".", label=label)
    top.set_title("std of each 3x3 layer's response (after BN, before add/ReLU), network order")
    bottom.set_title("sorted by magnitude")
    for ax in (top, bottom):
        ax.set_xlabel("layer index")
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the report (benchmarks/reports/paper/README.md) ----

# CIFAR-10 test error (%) in He et al. 2015, Table 6; the paper tabulates no plain nets (Fig. 6 plots them).
PAPER_TEST_ERROR_PCT = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43}


def seconds_per_iteration(history: list[dict]) -> float | None:
    """Median over turns (robust to a turn slowed by other work on the machine)."""
    turns = [
        (b["train_seconds"] - a["train_seconds"]) / (b["iteration"] - a["iteration"])
        for a, b in zip([{"iteration": 0, "train_seconds": 0.0}, *history[:-1]], history, strict=True)
    ]
    return float(np.median(turns)) if turns else None


def run_report(args) -> int:
    path = args.out / "degradation.json"
    if not path.is_file():
        raise ExperimentError(f"no {path}; run `python -m resnets.experiments degradation --out {args.out}` first")
    deg = json.loads(path.read_text())
    resp_path = args.out / "layer_responses.json"
    resp = json.loads(resp_path.read_text()) if resp_path.is_file() else None
    p, env = deg["protocol"], deg["environment"]
    per_epoch = -(-p["data"]["train_images"] // p["batch_size"])
    hardware = env["gpu"] or f"{env['cpu_model']}, {env['cpu_affinity']} cores"
    lines = [
        "# He et al. 2015 on CIFAR-10: the degradation problem and layer responses",
        "",
        "Written by `python -m resnets.experiments report` from `degradation.json` and `layer_responses.json`.",
        "",
        f"Protocol: {p['recipe']}; batch {p['batch_size']}, {p['iterations']:,} iterations "
        f"({p['iterations'] / per_epoch:.1f} epochs; the paper: 64,000), lr /10 at {round(0.5 * p['iterations']):,} "
        f"and {round(0.75 * p['iterations']):,}; seed {p['seed']} for every net (same initialisation rule, same "
        f"minibatches); data `{p['data']['dir']}` ({p['data']['train_images']:,} training, "
        f"{p['data']['test_images']:,} test images). Training error: {p['training_error']}.",
        "",
        f"Machine: {hardware}; torch {env['versions'].get('torch')}; commit {env['git_commit']}.",
        "",
        "| net | iterations | training error %, last turn (augmented) | training error %, all training images "
        "| test error % | paper test error % | s / iteration | training time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arch, net in deg["nets"].items():
        f, spi = net["final"], seconds_per_iteration(net["history"])
        paper = PAPER_TEST_ERROR_PCT.get(arch)
        lines.append(
            f"| {arch} | {f['iteration']:,}{'' if net['complete'] else ' (running)'} | {_num(f['train_error_pct'])} "
            f"| {_num(f['train_error_pct_no_augmentation'])} | {_num(f['test_error_pct'])} "
            f"| {_num(paper) if paper else 'plotted only (Fig. 6)'} | {_num(spi, 3)} "
            f"| {f['train_seconds'] / 60:.0f} min |"
        )
    lines += [
        "",
        "Training time: the wall time of a net's training turns, including turns slowed by other work on the "
        "machine; s / iteration: the median turn.",
        "",
        "Findings (final training error, deep minus shallow, and the paper's sign):",
        "",
    ]
    if not deg["findings"]:
        lines.append("- none: they need plain20 and plain56, or resnet20 and resnet56, in one run.")
    for item in deg["findings"]:
        sign = "> 0" if item["shallow"].startswith("plain") else "< 0"
        extra = item.get("train_error_pct_no_augmentation_deep_minus_shallow")
        lines.append(
            f"- {item['deep']} vs {item['shallow']}: {item['train_error_pct_deep_minus_shallow']:+.2f} points on the "
            f"last turn's minibatches"
            + (f", {extra:+.2f} on all training images" if extra is not None else "")
            + f", test {item['test_error_pct_deep_minus_shallow']:+.2f} (paper: {sign}): "
            + ("**reproduced**" if item["reproduced"] else "**not reproduced**")
            + f" ({item['claim']})."
        )
    lines += ["", "![training curves](degradation.png)", ""]
    if resp:
        lines += [
            f"Layer responses: {resp['definition']}; {resp['data']['test_images']:,} test images.",
            "",
            "| depth | plain: mean std | ResNet: mean std | ResNet below plain (paper: yes) |",
            "| ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {c['depth']} | {c['plain_mean_std']:.3f} | {c['resnet_mean_std']:.3f} | "
            f"{'yes' if c['resnet_below_plain'] else 'no'} |"
            for c in resp["comparisons"]
        ]
        lines += ["", "![layer responses](layer_responses.png)", ""]
    out = args.out / "README.md"
    out.write_text("\n".join(lines) + "\n")
    log.info("wrote %s", out)
    return 0


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnets.experiments", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="experiment", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        help=f"CIFAR-10 (ImageFolder tree or official pickles); default: cifar-10-jpg (else cifar-10) under "
        f"${settings.DATA_ENV}, ../shared/data or data",
    )
    common.add_argument(
        "--out", type=cli.out_dir, default=Path("benchmarks/reports/paper"), help="results JSON and plots"
    )
    common.add_argument(
        "--work", type=cli.out_dir, default=Path("runs/experiments"), help="resumable states and trained checkpoints"
    )
    common.add_argument(
        "--threads", type=cli.positive_int, help="CPU threads for PyTorch (default: all this process may use)"
    )
    d = sub.add_parser("degradation", parents=[common], help="plain vs residual nets of two depths (Fig. 6)")
    d.add_argument("--archs", type=cli.csv, default=DEFAULT_ARCHS, help="CIFAR nets (default %(default)s)")
    d.add_argument("--iterations", type=int, help=f"default: the paper's {PAPER_ITERATIONS:,}")
    d.add_argument("--short", action="store_true", help=f"the CPU schedule: {SHORT_ITERATIONS:,} iterations")
    d.add_argument("--eval-every", type=int, default=500, help="iterations per turn (one curve point each)")
    d.add_argument("--batch-size", type=int, default=128, help="the paper's 128")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--download", action="store_true", help="download the official CIFAR-10 into --data-dir")
    d.add_argument("--no-resume", action="store_true", help="start over even if --work has states")
    d.set_defaults(job=run_degradation)
    r = sub.add_parser("layer-responses", parents=[common], help="std of each 3x3 layer's response (Fig. 7)")
    r.add_argument(
        "--checkpoints",
        type=cli.csv,
        default=(),
        help="trained checkpoints (default: the degradation run's plain20, plain56, resnet20, resnet56 in --work)",
    )
    r.add_argument("--limit-test", type=cli.positive_int, help="a seeded random subset of N test images (default: all)")
    r.set_defaults(job=run_layer_responses)
    w = sub.add_parser("report", parents=[common], help="README.md of --out from the two results files")
    w.set_defaults(job=run_report)
    return p


def main(argv=None) -> int:
    return cli.run(build_parser(), lambda args: args.job(args), argv)


if __name__ == "__main__":
    sys.exit(main())
