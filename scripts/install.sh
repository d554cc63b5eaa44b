#!/usr/bin/env bash
# Set up fedlightning on a fresh Debian/Ubuntu machine with Python 3.11:
#   - the Fashion-MNIST IDX files from Debian's dataset-fashion-mnist package,
#   - a virtual environment in .venv with the library, its extras and the dev tools.
# Usage: bash scripts/install.sh [EXTRAS]   (EXTRAS defaults to "dev")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# pip (not uv/poetry) so that the pinned torch/torchvision wheels are taken from a local
# wheel cache or index when one is configured.
.venv/bin/python -m pip install -q -e ".[${extras}]"
