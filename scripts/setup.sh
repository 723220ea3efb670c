#!/usr/bin/env bash
# Create .venv and install resnet-serve with its test tools. Safe to run again (it only adds what is missing).
#
#   TORCH_SPEC   the torch requirement, installed before everything else (default torch==2.13.0,
#                the CPU wheel; a GPU host may set e.g. TORCH_SPEC="torch==2.11.0")
#   PYTHON       the interpreter that creates the venv (default python3, must be 3.11+)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); resnet-serve needs Python 3.11 or newer (set PYTHON=...)" >&2
    exit 2
fi
# System packages: the Triton Python-backend stub links Debian's libpython3.11; Debian's docker-compose
# validates docker-compose.yml in the tests; nginx (nginx-light) fronts the HTTP port when the server
# listens beyond loopback (python -m server --host 0.0.0.0). Installed when missing if we are root with apt-get.
need=()
ldconfig -p 2>/dev/null | grep -q "libpython3.11.so.1.0" || need+=(libpython3.11)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages: ${need[*]}"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
            || echo "setup: could not install ${need[*]}; install them with your package manager" >&2
    else
        echo "setup: please install ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
    fi
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
# torch first and pinned: asked for as a plain dependency, pip would pull a multi-GB CUDA build
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
if ! .venv/bin/python -c 'import resnets, pytest, yaml, triton, tritonclient.grpc, openvino, nncf, pytriton' 2>/dev/null \
        || [ pyproject.toml -nt .venv/.installed ]; then
    echo "setup: installing resnet-serve and its dependencies into .venv"
    .venv/bin/python -m pip install -q -e ".[dev]"
    touch .venv/.installed
fi
.venv/bin/python - <<'PY'
import numpy, torch
assert numpy.__version__ < "2", f"numpy {numpy.__version__}: nvidia-pytriton needs numpy<2"
print(f"setup: ready (python {__import__('platform').python_version()}, torch {torch.__version__}, numpy {numpy.__version__})")
PY
