"""``python -m export`` (in a checkout) and ``python -m resnet_serve.export``: see ``export/cli.py``."""

import sys

from resnet_serve.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
