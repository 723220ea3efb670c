"""``python benchmarks/run.py``: the benchmark suite's command (see ``benchmarks/cli.py``)."""

import sys

from resnet_serve.benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
