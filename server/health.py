"""python -m server.health [--url 127.0.0.1:8000] [--model M ...] [--model-repository DIR]

A readiness check that means it: every model (the given ones, else every model in the repository
folder, ensembles included) must answer one real inference within --timeout. Triton's own
/v2/health/ready stays green while a model's process is dead, so orchestrators (the docker-compose
healthcheck, Kubernetes probes) run this instead. Exit codes: 0 every model answered; 1 some did not,
or the server cannot be reached (each is printed with its reason); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_serve import cli, settings
from resnet_serve.errors import ExitCode, UsageError
from resnet_serve.server.supervisor import http_client, probe, repository_models


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server.health", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--url", default="127.0.0.1:8000", help="the server's HTTP HOST:PORT (default 127.0.0.1:8000)")
    p.add_argument("--model", action="append", default=[], help="a model to probe (repeatable); default: all")
    p.add_argument("--model-repository", type=Path, help="where to find every model's name (default as the server)")
    p.add_argument("--timeout", type=cli.positive_float, default=10.0, help="seconds each probe may take (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    return p


def check(args) -> int:
    url = settings.normalize_url(args.url, "http")  # as the client: not HOST:PORT is named, exit 2
    models = args.model
    if not models:
        repository = settings.repository_dir(args.model_repository)
        if not repository.is_dir():
            raise UsageError(f"model repository {repository} does not exist; pass --model or --model-repository")
        models = list(repository_models(repository))
    client = http_client(url, args.timeout)
    try:
        results = [probe(client, model) for model in models]
    finally:
        client.close()
    for r in results:
        if args.json:
            print(json.dumps({"model": r.model, "ok": r.ok, "seconds": round(r.seconds, 3), "reason": r.reason}))
        else:
            print(f"{r.model:<45} {'ok' if r.ok else 'FAILED'} {r.seconds * 1000:7.1f} ms  {r.reason}")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"unhealthy: {len(failed)} of {len(results)} models did not answer at {url}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def main(argv=None) -> int:
    return cli.run(build_parser(), check, argv, brief=True)


if __name__ == "__main__":
    sys.exit(main())
