#!/usr/bin/env bash
# Inside NVIDIA's TensorRT container (the trt-build service of docker-compose.yml): build every
# TensorRT plan under build/*/tensorrt with trtexec and install it into the tensorrt_plan models
# that `python -m export.default_repository --gpu` wrote into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=${1:-model_repository}
shopt -s nullglob
built=0
for dir in build/*/tensorrt; do
    arch=$(basename "$(dirname "$dir")")
    bash "$dir/trtexec.sh"
    for plan in "$dir"/model_*.plan; do
        precision=${plan##*/model_}
        precision=${precision%.plan}
        target="$repo/${arch}_tensorrt_${precision}_classifier/1"
        if [ -d "$target" ]; then
            cp "$plan" "$target/model.plan"
            echo "trt-build: installed $target/model.plan"
            built=$((built + 1))
        fi
    done
done
if [ "$built" -eq 0 ]; then
    echo "trt-build: no TensorRT models to fill in $repo; run python -m export.default_repository --gpu first" >&2
    exit 1
fi
