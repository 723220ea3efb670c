"""python -m client classify PATH... | python -m client models

classify: files, directories (searched recursively) and glob patterns; a table by default, one JSON
object per image with --json. Exit codes: 0 every image classified; 1 some images failed (each is
reported with its reason, e.g. not an image, timed out); 2 the command cannot run as given: bad
arguments, the server is unreachable or the model is not served.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from resnet_serve import cli
from resnet_serve.client.core import ImageResult
from resnet_serve.client.sync import Classifier, Connection
from resnet_serve.errors import ExitCode, UsageError
from resnet_serve.resnets.data import is_image_file


def expand(paths: list[str]) -> list[str]:
    """Files as given, directories recursively (image files only), glob patterns expanded, in order."""
    found: list[str] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.exists() or not glob.has_magic(item):
            found.append(item)  # a missing file is reported as a failed image
        else:
            matches = sorted(glob.glob(item, recursive=True))
            found += matches if matches else [item]
    return found


def print_table(results: list[ImageResult], top_k: int, out=None) -> None:
    out = out or sys.stdout
    width = min(60, max([len(r.source) for r in results] + [5]))
    for r in results:
        name = r.source if len(r.source) <= width else "..." + r.source[-(width - 3) :]
        if r.ok:
            preds = "  ".join(f"{p.label} {p.score:.2f}" for p in r.predictions[:top_k])
            print(f"{name:<{width}}  {preds}", file=out)
        else:
            print(f"{name:<{width}}  ERROR: {r.error}", file=out)


def cmd_classify(args) -> int:
    sources = expand(args.paths)
    if not sources:
        raise UsageError("no images given")
    with Classifier(
        args.url,
        protocol=args.protocol,
        model=args.model,
        timeout_s=args.timeout,
        retries=args.retries,
        batch_size=args.batch_size,
    ) as classifier:
        results = classifier.classify_detailed(sources, top_k=args.top_k)
    if args.json:
        for r in results:
            record = {"image": r.source}
            if r.ok:
                record["predictions"] = [
                    {"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in r.predictions
                ]
            else:
                record["error"] = r.error
            print(json.dumps(record))
    else:
        print_table(results, args.top_k)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} images failed", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def cmd_models(args) -> int:
    connection = Connection(args.url, args.protocol, args.timeout)
    try:
        models = connection.served_models()
    finally:
        connection.close()
    if args.json:
        print(json.dumps(models))
    else:
        for m in sorted(models, key=lambda m: m["name"]):
            print(f"{m['name']:<45} {m['version'] or '-':>3}  {m['state'] or 'UNKNOWN':<12} {m['reason']}")
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="HOST:PORT (default localhost:8001 for grpc, localhost:8000 for http)")
    common.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    common.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per line)")
    sub = parser.add_subparsers(dest="command", required=True)
    classify = sub.add_parser("classify", parents=[common], help="classify images")
    classify.add_argument("paths", nargs="+", help="image files, directories or glob patterns")
    classify.add_argument("--model", default="resnet20", help="served model (ensemble or *_classifier)")
    classify.add_argument("--top-k", type=int, default=5)
    classify.add_argument("--batch-size", type=int, help="images per request (default: the model's max batch size)")
    classify.add_argument("--retries", type=int, default=2, help="retries of a request on transient errors")
    classify.set_defaults(job=cmd_classify)
    models = sub.add_parser("models", parents=[common], help="list served models and their readiness")
    models.set_defaults(job=cmd_models)
    return parser


def main(argv=None) -> int:
    return cli.run(build_parser(), lambda args: args.job(args), argv, brief=True)
