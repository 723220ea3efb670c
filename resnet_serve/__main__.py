"""``resnet-serve <command> [args]``: every command of the project behind one console script.

    resnet-serve train ...          python -m resnets.train
    resnet-serve evaluate ...       python -m resnets.evaluate
    resnet-serve experiments ...    python -m resnets.experiments  (degradation | layer-responses | report)
    resnet-serve export ...         python -m export
    resnet-serve repository ...     python -m export.default_repository
    resnet-serve serve ...          python -m server
    resnet-serve health ...         python -m server.health
    resnet-serve client ...         python -m client  (classify | models)
    resnet-serve benchmark ...      python benchmarks/run.py
    resnet-serve tune ...           python -m benchmarks.tune

Each command takes the same arguments as its ``python -m`` form (``resnet-serve <command> --help``).
This is the top of the import graph: it imports a command's module only when that command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _train(argv):
    from resnet_serve.resnets.train import main

    return main(argv)


def _evaluate(argv):
    from resnet_serve.resnets.evaluate import main

    return main(argv)


def _experiments(argv):
    from resnet_serve.resnets.experiments import main

    return main(argv)


def _export(argv):
    from resnet_serve.export.cli import main

    return main(argv)


def _repository(argv):
    from resnet_serve.export.default_repository import main

    return main(argv)


def _serve(argv):
    from resnet_serve.server.cli import main

    return main(argv)


def _health(argv):
    from resnet_serve.server.health import main

    return main(argv)


def _client(argv):
    from resnet_serve.client.cli import main

    return main(argv)


def _benchmark(argv):
    from resnet_serve.benchmarks.cli import main

    return main(argv)


def _tune(argv):
    from resnet_serve.benchmarks.tune import main

    return main(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (_train, "train a CIFAR-10 ResNet with the paper's recipe"),
    "evaluate": (_evaluate, "top-1/top-5 of a checkpoint"),
    "experiments": (_experiments, "reproduce the paper's degradation and layer-response results"),
    "export": (_export, "checkpoint -> ONNX -> engines (+ a Triton model repository)"),
    "repository": (_repository, "build the default model repository"),
    "serve": (_serve, "run the Triton Inference Server on a model repository"),
    "health": (_health, "probe every served model with a real inference (0 healthy, 1 not)"),
    "client": (_client, "classify images with a served model, list served models"),
    "benchmark": (_benchmark, "engines side by side, served load, accuracy, the CI gate"),
    "tune": (_tune, "measure this host and choose each network's engine and serving setup"),
}


def usage() -> str:
    lines = ["usage: resnet-serve <command> [args]   (resnet-serve <command> --help: its arguments)"]
    lines += ["", "commands:"]
    lines += [f"  {name:<12} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from resnet_serve import __version__

        print(f"resnet-serve {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"resnet-serve: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return command[0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
