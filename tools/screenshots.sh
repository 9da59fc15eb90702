#!/usr/bin/env bash
# Regenerate the README's pictures (docs/img/*.png, at most 1200 px wide) from real Krita under Xvfb, on the
# demo networks. Run from a checkout with the venv: tools/screenshots.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
PYTHONPATH=$root/backend:$root/shared${PYTHONPATH:+:$PYTHONPATH} exec "$py" "$root/tools/screenshots.py" "$@"
