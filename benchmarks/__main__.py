"""``python -m resnet_serve.benchmarks``: the same command as ``python benchmarks/run.py``."""

import sys

from resnet_serve.benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
