"""One error base for the whole project, and the exit codes every command uses.

Errors a user can act on derive from ``ResnetServeError``; each carries the exit code its command
returns, and its message says what was wrong and what to do. Anything else is a bug and keeps its
traceback (``resnet_serve.cli.run`` lets it through).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the job ran and its outcome is a failure: some images failed, an accuracy regression, a crash
    USAGE = 2  # the command cannot run as given: its arguments, inputs, files or the server it points at
    MISSING_TOOL = 3  # a tool this machine lacks (TensorRT): the message says where to run the step instead


class ResnetServeError(Exception):
    """Base of every error raised for a user to act on."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(ResnetServeError):
    """Options that cannot work together or values out of range (argparse catches the rest)."""


class MissingToolError(ResnetServeError):
    """A step needs a tool that cannot be installed on this machine."""

    exit_code = ExitCode.MISSING_TOOL
