#!/usr/bin/env bash
# The prepared GPU check, for a CUDA host that has PyTorch, Triton, onnx and Pillow but not this project
# (the device machines' Python 3.12). Carry .gpu (python -m resnet_serve.benchmarks.gpu_check pack) with it.
#
#   bash scripts/gpu_check.sh OUT [extra arguments for gpu_check run]
#
# Installs the package and the packed wheels into /tmp/site (no network needed), then runs every
# section within its time budget and writes OUT/gpu_check.json and OUT/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/gpu_check.sh OUT [args]}
shift
export PYTHONUNBUFFERED=1
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . 2>&1 | tail -3
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl 2>&1 | tail -3
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m resnet_serve.benchmarks.gpu_check run "$out" --pack .gpu "$@"
