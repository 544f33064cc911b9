#!/usr/bin/env bash
# Throughput benchmark: sage_jax's jitted pipeline vs a PyTorch eager reference, and the
# sweep at scale (`sage_jax.main --config=configs/benchmark.py:SHAPES`; docs/benchmark.md).
# Writes WORKDIR/benchmark.json (rewritten after every row) and WORKDIR/benchmark.md.
#
# Usage: bash launch/benchmark.sh WORKDIR [SHAPES] [--config.FIELD=VALUE ...]
#   SHAPES                 fmnist, deit or fmnist,deit (default)
#   --config.FIELD=VALUE   e.g. --config.batch=64 --config.repeats=3 --config.min_seconds=1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"

first_dir "${1:-}" WORKDIR; shift
shapes="fmnist,deit"
if (($#)) && [[ "$1" != -* ]]; then
  shapes="$1"
  shift
fi
cd "${root}"
bash launch/setup.sh bench
exec .venv/bin/python -m sage_jax.main --config="configs/benchmark.py:${shapes}" \
  --workdir="${out_dir}" "$@"
