#!/usr/bin/env bash
# Set up HairCLIP Studio in ./.venv: torch first (its wheel decides CPU/CUDA), then the project.
# Usage: bash tools/setup.sh [extras]      default: dev (the test tools, TensorBoard included)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
py="${PYTHON:-python3}"
# torchvision must match torch exactly, and the clip package needs torchvision.
torch_spec="${HAIRCLIP_TORCH:-torch==2.14.1 torchvision==0.29.1}"

"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python 3.10 or newer is needed" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip "setuptools<81" wheel
if ! .venv/bin/python -c 'import torch, torchvision' 2>/dev/null; then
    echo "Installing $torch_spec (this can take a few minutes)"
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -q $torch_spec
fi
.venv/bin/python -m pip install -q -e ".[${extras}]"
echo "Ready: .venv/bin/hairclip --help"
