"""CI accuracy gate: compare measured top-1/top-5 with committed baselines; name every regression."""

from __future__ import annotations

import json
import math
from pathlib import Path

from resnet_serve.errors import UsageError


def load_baselines(path: str | Path) -> list[dict]:
    """The entries of a baselines file; one whose figures could never fail the gate (a tolerance or a
    top-1/top-5 that is not a finite number, a negative tolerance) is a UsageError naming the entry."""
    try:
        entries = json.loads(Path(path).read_text())["entries"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{path} is not a baselines file ({type(exc).__name__}: {exc}); pass the one "
            "--write-baselines wrote (the project's: benchmarks/baselines.json)"
        ) from None
    for entry in entries:
        figures = [entry.get(key) for key in ("top1", "top5", "tolerance_pct")]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures) or figures[2] < 0:
            name = "/".join(str(entry.get(key)) for key in ("model", "engine", "precision"))
            raise UsageError(
                f"{path}: the baseline of {name} has top1 {figures[0]}, top5 {figures[1]}, tolerance_pct "
                f"{figures[2]}: each must be a finite number, the tolerance >= 0; write the file again "
                "(python benchmarks/run.py --suite accuracy --write-baselines ...)"
            )
    return entries


def check(accuracy: list[dict], baselines: list[dict], *, require_all: bool = True) -> list[str]:
    """Regressions (empty list = pass). Each accuracy record is matched to the baseline of its
    model/engine/precision; both offline and served figures must stay within the tolerance."""
    problems = []
    measured = {(r["model"], r["engine"], r["precision"]) for r in accuracy}
    for base in baselines:
        key = (base["model"], base["engine"], base["precision"])
        name = "/".join(key)
        if key not in measured:
            if require_all:
                problems.append(f"{name}: no accuracy measured (engine missing from the run?)")
            continue
        for record in (r for r in accuracy if (r["model"], r["engine"], r["precision"]) == key):
            for metric in ("top1", "top5"):
                got, want = record[f"{metric}_pct"], base[metric]
                if got < want - base["tolerance_pct"]:
                    problems.append(
                        f"{name} ({record['where']}): {metric} {got:.2f}% is below the baseline "
                        f"{want:.2f}% - {base['tolerance_pct']} points"
                    )
    return problems


def write_baselines(path: Path, results: dict, tolerance: float, data_name: str) -> None:
    """Baselines from a run's offline accuracy (served figures must equal them to be trusted)."""
    entries = [
        {
            "model": r["model"],
            "engine": r["engine"],
            "precision": r["precision"],
            "top1": r["top1_pct"],
            "top5": r["top5_pct"],
            "tolerance_pct": tolerance,
        }
        for r in results["accuracy"]
        if r["where"] == "offline"
    ]
    data = {
        "schema_version": results["schema_version"],
        "data": f"{data_name} test split ({results['accuracy'][0]['n']:,} images)",
        "measured": {
            "git_commit": results["environment"]["git_commit"],
            "cpu_model": results["environment"]["cpu_model"],
            "started": results["started"],
        },
        "command": "python benchmarks/run.py --suite accuracy --write-baselines " + str(path),
        "entries": entries,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
