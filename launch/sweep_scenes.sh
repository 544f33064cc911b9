#!/usr/bin/env bash
# The paper's regime on this machine: every rule at budgets 8..196 on the 10,000 Fashion-MNIST
# test scenes (56x56, 196 patches) with the scenes' shipped models; the scenes dataset is
# built on first use from the Fashion-MNIST files.
# Usage: bash launch/sweep_scenes.sh [WORKDIR] [--config.field=value ...]
# WORKDIR (default results/scenes) as in launch/sweep_default.sh, which this runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
workdir=results/scenes
if (($#)) && [[ "$1" != -* ]]; then
  workdir="$1"
  shift
fi
SWEEP_CONFIG=configs/scenes_sweep.py exec bash "${root}/launch/sweep_default.sh" "${workdir}" "$@"
