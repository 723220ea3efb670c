"""The one convention every command follows (``python -m ...``, ``python benchmarks/run.py``, ``resnet-serve``).

* ``main(argv=None) -> int`` builds an argparse parser and calls ``run(parser, job, argv)``;
* logging is set up once, here (``-v`` for debug where a command offers it);
* argparse's usage errors exit 2; a ``ResnetServeError`` is logged and exits with its code;
* SIGTERM and SIGHUP (``kill``, ``timeout``, a service manager, a closed terminal) unwind the job like
  Ctrl-C does, so its ``finally`` blocks run: servers it started are stopped, temporary folders removed,
  results files closed; the exit code is 128 + the signal's number, as a shell reports it (a signal the
  caller ignores, as ``nohup`` does SIGHUP, or handles itself is left alone);
* anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

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
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _StopInTask) for f in asyncio_log.filters):
        asyncio_log.addFilter(_StopInTask())


class _StopInTask(logging.Filter):
    """A stop signal's SystemExit (``_unwind``) raised while an asyncio task runs (a load generator's worker)
    ends that task with it; asyncio then reports the task as 'exception was never retrieved', with a
    traceback, when it is collected during clean-up. The stop is being handled: that report is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is SystemExit)


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
    in_main = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    # a signal the caller set to be ignored stays ignored (nohup's SIGHUP)
    mine = [sig for sig in STOP_SIGNALS if in_main and signal.getsignal(sig) == signal.SIG_DFL]
    previous = {sig: signal.signal(sig, _unwind) for sig in mine}
    try:
        return int(job(args))
    except ResnetServeError as exc:
        if brief:  # a short command's error is its output: printed, not logged
            print(f"error: {exc}", file=sys.stderr)
        else:
            log.error("%s", exc)
        return int(exc.exit_code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _unwind(signum: int, frame) -> None:
    """The first stop signal raises SystemExit in the main thread (the job unwinds through its ``finally``
    blocks); later ones are only logged, so that clean-up is not cut short."""
    name = signal.Signals(signum).name
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is _unwind:
            signal.signal(sig, lambda s, f: log.warning("%s: already stopping", signal.Signals(s).name))
    log.warning("%s received: stopping (cleaning up first)", name)
    raise SystemExit(128 + signum)


def csv(value: str) -> tuple[str, ...]:
    """argparse type for comma lists: "a, b,c" -> ("a", "b", "c"); an empty list is refused (an unset shell
    variable would otherwise mean "nothing" to one command and "the default" to another)."""
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {value!r}")
    return names


def csv_ints(value: str) -> tuple[int, ...]:
    """argparse type for comma lists of counts (batch sizes, concurrency): "1, 8,64" -> (1, 8, 64)."""
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of at least 1, got {value!r}")
    return numbers


# argparse types for numbers: a value out of range is a usage error that names the flag ("argument
# --timeout: expected a finite number above 0, got 'nan'"), not a crash or a silent default later on.
# float() takes "nan" and "inf", so every float type asks for a finite number.


def _number(parse: Callable[[str], float], value: str, ok: Callable[[float], bool], need: str):
    try:
        number = parse(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or not ok(number):
        raise argparse.ArgumentTypeError(f"expected {need}, got {value!r}")
    return number


def positive_int(value: str) -> int:
    return _number(int, value, lambda n: n >= 1, "a whole number of at least 1")


def non_negative_int(value: str) -> int:
    return _number(int, value, lambda n: n >= 0, "a whole number of at least 0")


def port(value: str) -> int:
    return _number(int, value, lambda n: 0 <= n <= 65535, "a port number from 0 to 65535")


def positive_float(value: str) -> float:
    return _number(float, value, lambda n: n > 0, "a finite number above 0")


def non_negative_float(value: str) -> float:
    return _number(float, value, lambda n: n >= 0, "a finite number of at least 0")


def fraction(value: str) -> float:
    return _number(float, value, lambda n: 0 <= n < 1, "a number from 0 up to (not including) 1")


def out_dir(value: str) -> Path:
    """argparse type for a folder a command writes into: it need not exist yet, but what exists of it must be
    folders this process may write into (else the command would fail at its end, after its work, on mkdir)."""
    path = Path(value)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under a file ({existing})"
        raise argparse.ArgumentTypeError(f"{value!r} {where}; pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{value!r}: this user may not write into {existing}")
    return path
