#!/usr/bin/env bash
# Throughput benchmark: sage_jax's jitted pipeline vs a PyTorch eager reference (issue 4).
# Usage: bash launch/benchmark.sh [--shapes=fmnist,deit --batch=64 --repeats=2 --out=FILE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
exec .venv/bin/python -m sage_jax.benchmark "$@"
