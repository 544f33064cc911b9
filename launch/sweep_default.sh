#!/usr/bin/env bash
# The main job on the embedded default: SAGE budget sweep on Fashion-MNIST.
# Usage: bash launch/sweep_default.sh [WORKDIR] [--config.field=value ...]
# SWEEP_CONFIG=configs/....py runs another sweep config the same way (launch/sweep_scenes.sh).
# WORKDIR (default results/fmnist) is taken from the directory you run the script in;
# without it, every argument goes to sage_jax.main. Paths inside --config overrides
# are taken from the repository (the job runs there).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"
workdir=results/fmnist
if (($#)) && [[ "$1" != -* ]]; then
  workdir="$1"
  shift
fi
workdir=$(abspath "${workdir}")
cd "${root}"
bash launch/setup.sh
exec .venv/bin/python -m sage_jax.main --config="${SWEEP_CONFIG:-configs/fmnist_sweep.py}" --workdir="${workdir}" "$@"
