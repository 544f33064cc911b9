#!/usr/bin/env bash
# Throughput benchmark: sage_jax's jitted pipeline vs a PyTorch eager reference (issue 4).
# Usage: bash launch/benchmark.sh [--shapes=fmnist,deit --batch=64 --repeats=2 --out=FILE ...]
# --out=FILE is taken from the directory you run the script in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"
args=()
for arg in "$@"; do
  case "${arg}" in
    --out=*) arg="--out=$(abspath "${arg#--out=}")" ;;
  esac
  args+=("${arg}")
done
cd "${root}"
bash launch/setup.sh bench
exec .venv/bin/python -m sage_jax.benchmark ${args[@]+"${args[@]}"}
