#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a .venv with sage_jax[test], and
# Debian's Fashion-MNIST files (the embedded default dataset) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-}"
if [[ -z "${py}" ]]; then
  py=python3
  command -v python3.11 >/dev/null 2>&1 && py=python3.11
fi
if [[ ! -x .venv/bin/python ]]; then
  "${py}" -m venv .venv
fi
if ! .venv/bin/python -c "import sage_jax, flax, optax, tensorflow_datasets, pytest" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
fi

if [[ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]]; then
  sudo_cmd=()
  [[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q dataset-fashion-mnist
fi
