#!/usr/bin/env bash
# The main job on the embedded default: SAGE budget sweep on Fashion-MNIST.
# Usage: bash launch/sweep_default.sh [WORKDIR] [--config.field=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
workdir="${1:-results/fmnist}"
shift || true
exec .venv/bin/python -m sage_jax.main --config=configs/fmnist_sweep.py --workdir="${workdir}" "$@"
