"""Console helpers: progress bars only when a person is watching (stderr is a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterable


def progress(iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)
    return iterable
