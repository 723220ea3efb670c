"""``python -m client`` (in a checkout) and ``python -m resnet_serve.client``: see ``client/cli.py``."""

import sys

from resnet_serve.client.cli import main

if __name__ == "__main__":
    sys.exit(main())
