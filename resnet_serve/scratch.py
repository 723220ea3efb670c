"""Temporary folders of long jobs (a server's work folder, a tune run's candidate repository) that a
killed process cannot remove itself (SIGKILL, the OOM killer, a lost machine): each is named after its
process, ``<prefix><pid>-<random>``, and the next one of its kind removes those whose process is gone."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str, root: Path | None = None) -> tempfile.TemporaryDirectory:
    """A ``TemporaryDirectory`` named ``<prefix><pid>-...`` in ``root`` (default: the temp folder), made
    after removing this user's folders there of the same prefix whose process no longer runs (a live
    process's folder, or a pid reused, is kept)."""
    remove_stale(prefix, root)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=root)


def remove_stale(prefix: str, root: Path | None = None) -> list[Path]:
    """Remove ``<root>/<prefix><pid>-*`` folders of this user whose pid is not running; returns them."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or Path(f"/proc/{pid}").exists() or not path.is_dir():
                continue
            if path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
