#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before a GPU session: the wheels the lent GPU machine lacks,
# into .gpu-wheels/ (git-ignored, ~20 MiB, under the device tool's 64 MiB carry limit).
# The GPU image (bench/gpu/check.sh's target) has python 3.12, CUDA torch, accelerate, peft,
# tokenizers, safetensors, pyarrow, pandas, psutil, ninja, py-cpuinfo, msgpack, nvidia-ml-py;
# not deepspeed, omegaconf, datasets, pydantic, hjson, and an older transformers (5.17 < 5.19).
#   bash bench/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${DEST:-.gpu-wheels}
PY_VERSION=${PY_VERSION:-3.12}  # the image's Python (image_env.sh asks for its own)
mkdir -p "$DEST"
PY=${PYTHON:-.venv/bin/python}
ver() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
# transformers: the lowest we support (setup.py), whose requirements the image meets
# (huggingface_hub >= 1.31; newer ones want 2.x and the kernels package the image lacks).
# pure-Python wheels and sdists (deepspeed and antlr are sdists: built there without isolation)
"$PY" -m pip download -q --no-deps -d "$DEST" "deepspeed==$(ver deepspeed)" \
    transformers==5.19.0 "omegaconf==$(ver omegaconf)" \
    antlr4-python3-runtime==4.9.3 hjson "datasets==$(ver datasets)" dill annotated-types \
    typing-inspection "pydantic==$(ver pydantic)"
# compiled ones, for the target CPython on x86_64 (regex: transformers wants >= 2025.10.22)
"$PY" -m pip download -q --no-deps -d "$DEST" --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    "pydantic-core==$(ver pydantic-core)" multiprocess "regex==$(ver regex)"
du -sh "$DEST"; ls "$DEST"
