#!/usr/bin/env bash
# The main job: set up .venv if needed, export the committed ResNet-20, serve it with the real Triton
# server, classify sample images and run the quick benchmark (extra args go to scripts/main.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/main.py "$@"
