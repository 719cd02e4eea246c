#!/usr/bin/env bash
# Reproduce, on this CPU machine, the environment check.sh makes on the lent GPU machine: a
# virtualenv holding only the GPU image's packages (image_packages.txt; torch==2.13.0, the CPU
# wheel on these machines' local disk, stands in for the image's CUDA 2.11 build), then the wheels fetch_wheels.sh carries installed over
# them --no-deps as check.sh does, then preflight.py (imports + requirements). Run here before
# a GPU session:
#   bash bench/gpu/image_env.sh          # prints preflight's JSON line; exit 1 if not ok
# Compiled wheels are fetched for this Python (3.11 here; the image has 3.12) into
# /tmp/gpu-wheels-cpXY, so the pure-Python pins and the versions are what is checked.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
WHEELS=/tmp/gpu-wheels-cp${VER/./}
ENV=${GPU_IMAGE_ENV:-/tmp/gpu_image_env}
rm -rf "$ENV" "$WHEELS"
DEST=$WHEELS PY_VERSION=$VER bash bench/gpu/fetch_wheels.sh > /dev/null
"$PY" -m venv "$ENV" && . "$ENV/bin/activate"
pip install -q torch==2.13.0
sed 's/#.*//' bench/gpu/image_packages.txt | xargs pip install -q
pip install -q --no-index --no-deps --no-build-isolation "$WHEELS"/*
pip install -q --no-index --no-deps --no-build-isolation -e .
python bench/gpu/preflight.py
