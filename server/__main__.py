"""``python -m server`` (in a checkout) and ``python -m resnet_serve.server``: see ``server/cli.py``."""

import sys

from resnet_serve.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
