"""The one convention every command follows (``python -m ...``, ``python benchmarks/run.py``, ``resnet-serve``).

* ``main(argv=None) -> int`` builds an argparse parser and calls ``run(parser, job, argv)``;
* logging is set up once, here (``-v`` for debug where a command offers it);
* argparse's usage errors exit 2; a ``ResnetServeError`` is logged and exits with its code;
* anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable

from resnet_serve.errors import ResnetServeError

log = logging.getLogger("resnet_serve")

LONG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BRIEF_FORMAT = "%(levelname)s: %(message)s"
# third-party loggers that narrate every graph pass at INFO
NOISY = ("nncf", "onnxruntime", "onnxscript", "onnx_ir", "torch.onnx")


def setup_logging(*, verbose: bool = False, brief: bool = False, quiet: Iterable[str] = ()) -> None:
    """Configure the root logger once per process (later calls only adjust levels)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=BRIEF_FORMAT if brief else LONG_FORMAT)
    root.setLevel(logging.DEBUG if verbose else (logging.WARNING if brief else logging.INFO))
    for name in (*NOISY, *quiet):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(
    parser: argparse.ArgumentParser,
    job: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
    *,
    brief: bool = False,
    quiet: Iterable[str] = (),
) -> int:
    """``brief``: a short command (the client): warnings and errors only, errors printed as "error: ...".

    Parse ``argv``, set up logging, run ``job(args)`` and turn a ResnetServeError into its exit code."""
    args = parser.parse_args(argv)
    setup_logging(verbose=getattr(args, "verbose", False), brief=brief, quiet=quiet)
    try:
        return int(job(args))
    except ResnetServeError as exc:
        if brief:  # a short command's error is its output: printed, not logged
            print(f"error: {exc}", file=sys.stderr)
        else:
            log.error("%s", exc)
        return int(exc.exit_code)


def csv(value: str) -> tuple[str, ...]:
    """argparse type for comma lists: "a, b,c" -> ("a", "b", "c")."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def csv_ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
