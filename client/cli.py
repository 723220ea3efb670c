"""python -m client classify PATH... | python -m client models

classify: files, directories (searched recursively) and glob patterns; a table by default, one JSON
object per image with --json. --output FILE appends the same JSON lines to FILE as each chunk of
images is answered (flushed to disk), and --resume skips the images FILE already holds answers for,
so a run that stopped (the server went away, Ctrl-C) continues where it was. A server that cannot be
reached is waited for (--wait-for-server seconds, e.g. a supervised restart) before the run gives up.
Exit codes: 0 every image classified; 1 some images failed (each is reported with its reason, e.g.
not an image, timed out); 2 the command cannot run as given: bad arguments, the server is unreachable
(at the start, or mid-run after waiting) or the model is not served.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

from resnet_serve import cli
from resnet_serve.client.core import ImageResult, Security, ServerUnavailable
from resnet_serve.client.sync import Classifier, Connection
from resnet_serve.errors import ExitCode, UsageError
from resnet_serve.resnets.data import is_image_file

CHUNK_REQUESTS = 8  # requests per chunk of --output: results reach the file at least this often


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


class Output:
    """``--output FILE``: JSON lines appended as results arrive, each chunk flushed to disk (``--resume``
    reads back which images already have predictions)."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        if path.is_dir():
            raise UsageError(f"--output {path} is a folder; pass a file, e.g. {path / 'results.jsonl'}")
        if path.exists() and path.stat().st_size and not resume:
            raise UsageError(f"{path} already holds results; pass --resume to continue that run, or remove it")
        self.done = self.answered(path) if resume else set()
        self.written = 0  # records this run added
        if resume and path.exists():  # drop a last line cut short by a crash mid-write, so appends stay JSON lines
            data = path.read_bytes()
            with path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
        try:
            self.handle = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write --output {path} ({exc.strerror}); pass a file in a folder that exists"
            ) from None

    @staticmethod
    def answered(path: Path) -> set[str]:
        done = set()
        if not path.exists():
            return done
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    continue  # a line cut short by a crash mid-write: that image is classified again
                raise UsageError(f"{path}:{number} is not a JSON line; is it a --output file of this client?") from None
            if isinstance(record, dict) and "predictions" in record:
                done.add(record.get("image"))
        return done

    def write(self, results: list[ImageResult]) -> None:
        for r in results:
            self.handle.write(json.dumps(r.record()) + "\n")
        self.handle.flush()
        self.written += len(results)
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def cmd_classify(args) -> int:
    sources = expand(args.paths)
    if not sources:
        raise UsageError("no images given")
    if args.resume and not args.output:
        raise UsageError("--resume continues an --output FILE; pass --output too")
    output = Output(args.output, args.resume) if args.output else None
    try:
        todo = [s for s in sources if output is None or s not in output.done]
        if output is not None and len(todo) < len(sources):
            print(f"resuming: {len(sources) - len(todo)} of {len(sources)} images already done", file=sys.stderr)
        return classify_all(args, todo, output, len(sources) - len(todo))
    except SystemExit:  # stopped by a signal (cli.run): say how far it got and how to go on
        if output is not None:
            answered = len(sources) - len(todo) + output.written
            print(
                f"stopped: {answered} of {len(sources)} images answered in {args.output}; "
                f"rerun with --resume --output {args.output} to continue",
                file=sys.stderr,
            )
        raise
    finally:
        if output is not None:
            output.close()


def classify_all(args, sources: list[str], output: Output | None, already: int) -> int:
    security = Security.from_files(args.api_key_file, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key)
    failed = done = 0
    with Classifier(
        args.url,
        protocol=args.protocol,
        model=args.model,
        timeout_s=args.timeout,
        retries=args.retries,
        wait_for_server_s=args.wait_for_server,
        batch_size=args.batch_size,
        security=security,
    ) as classifier:
        step = classifier.batch_size * CHUNK_REQUESTS
        for start in range(0, len(sources), step):
            results = classifier.classify_detailed(sources[start : start + step], top_k=args.top_k)
            answered = [r for r in results if not r.unreachable]
            if output is not None:
                output.write(answered)
            if args.json:
                for r in answered:
                    print(json.dumps(r.record()), flush=True)
            elif answered:
                print_table(answered, args.top_k)
            failed += sum(not r.ok for r in answered)
            done += len(answered)
            if len(answered) < len(results):
                lost = next(r for r in results if r.unreachable)
                hint = f"; rerun with --resume --output {args.output} to continue" if args.output else ""
                raise ServerUnavailable(
                    f"{lost.error}; gave up after waiting {args.wait_for_server:g} s: "
                    f"{already + done} of {already + len(sources)} images answered{hint}"
                )
    if failed:
        print(f"{failed} of {done} images failed", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def cmd_models(args) -> int:
    security = Security.from_files(args.api_key_file, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key)
    connection = Connection(args.url, args.protocol, args.timeout, security)
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
    common.add_argument("--timeout", type=cli.positive_float, default=30.0, help="seconds per request (default 30)")
    common.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per line)")
    common.add_argument("--api-key-file", type=Path, help="the server's API key (default: build/server.key if any)")
    common.add_argument("--tls-ca", type=Path, help="gRPC over TLS: the CA (PEM) of the server's certificate")
    common.add_argument("--tls-cert", type=Path, help="mutual TLS: this client's certificate (PEM)...")
    common.add_argument("--tls-key", type=Path, help="...and its private key")
    sub = parser.add_subparsers(dest="command", required=True)
    classify = sub.add_parser("classify", parents=[common], help="classify images")
    classify.add_argument("paths", nargs="+", help="image files, directories or glob patterns")
    classify.add_argument(
        "--model",
        default="resnet20",
        help="served model: one that takes encoded images (resnet20, any ensemble) or a *_classifier",
    )
    classify.add_argument("--top-k", type=cli.positive_int, default=5)
    classify.add_argument(
        "--batch-size",
        type=cli.positive_int,
        help="images per request (default: the model's max batch size; 1 for raw-bytes models)",
    )
    classify.add_argument(
        "--retries", type=cli.non_negative_int, default=2, help="retries of a request on transient errors"
    )
    classify.add_argument(
        "--wait-for-server",
        type=cli.non_negative_float,
        default=60.0,
        help="seconds to wait for a server that stopped answering mid-run (default 60)",
    )
    classify.add_argument("--output", type=Path, help="append JSON lines to this file as results arrive")
    classify.add_argument("--resume", action="store_true", help="skip images --output already has predictions for")
    classify.set_defaults(job=cmd_classify)
    models = sub.add_parser("models", parents=[common], help="list served models and their readiness")
    models.set_defaults(job=cmd_models)
    return parser


def main(argv=None) -> int:
    return cli.run(build_parser(), lambda args: args.job(args), argv, brief=True)
