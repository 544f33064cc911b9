#!/usr/bin/env bash
# The paper's ImageNet sweep on this (single-GPU) host: a .venv with sage_jax and
# jax[cuda12] (the version the tests ran with), the two checkpoints converted to
# sage_jax's format (skipped for .msgpack files), then the sweep of configs/imagenet_deit.py.
#
# Usage: bash launch/gpu_host.sh --edge=SRC --server=SRC --data-dir=DIR [options] [-- FLAGS]
#   --edge=SRC        DeiT-Ti/16 weights: timm .safetensors/.pth, HF directory, .npz or .msgpack
#   --server=SRC      DeiT-B/16 weights, same formats
#   --data-dir=DIR    TFDS data_dir holding imagenet2012 (a local path or gs://bucket/path)
#   --workdir=DIR     where results go (default results/imagenet)
#   --python=PY       interpreter for a new .venv, Python >= 3.11 (default python3.11 if
#                     there is one, else python3)
#   --no-install      use the existing .venv as it is
#   --dry-run         print the commands instead of running them
#   -- FLAGS          passed on to sage_jax.main, e.g. -- --config.num_images=1000
# Relative paths are taken from the directory you run the script in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"

edge="" server="" data_dir="" workdir="results/imagenet" py="" install=1 dry_run=0
extra=()
while (($#)); do
  case "$1" in
    --edge=*) edge="${1#*=}" ;;
    --server=*) server="${1#*=}" ;;
    --data-dir=*) data_dir="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --python=*) py="${1#*=}" ;;
    --no-install) install=0 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n "${edge}" ]] || die "--edge is required"
[[ -n "${server}" ]] || die "--server is required"
[[ -n "${data_dir}" ]] || die "--data-dir is required"
edge=$(abspath "${edge}")
server=$(abspath "${server}")
data_dir=$(abspath "${data_dir}")
workdir=$(abspath "${workdir}")
for src in "${edge}" "${server}"; do
  [[ -e "${src}" ]] || die "checkpoint not found: ${src}"
done
if [[ -z "${py}" ]]; then
  py=python3
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; fi
elif [[ "${py}" == */* ]]; then
  py=$(abspath "${py}")
fi

cd "${root}"
if ((install)); then
  if [[ ! -x .venv/bin/python ]]; then
    python_ok "${py}" || die "--python=${py}: jax ${JAX_VERSION} needs Python >= ${MIN_PYTHON}" \
      "(found: $("${py}" --version 2>&1 || echo none)); give one, e.g. --python=python3.11"
    run "${py}" -m venv .venv
  fi
  run .venv/bin/python -m pip install -q -e . "jax[cuda12]==${JAX_VERSION}"
  if needs_torch "${edge}" || needs_torch "${server}"; then
    run .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX}"
  fi
fi

# SRC VARIANT DST: converts once; a sage_jax .msgpack is used as it is.
ckpt() {
  if [[ "$1" == *.msgpack ]]; then
    ckpt_path="$1"
  else
    ckpt_path="$3"
    run .venv/bin/python -m sage_jax.models.convert --src="$1" --dst="$3" --variant="$2"
  fi
}
ckpt "${edge}" Ti/16 checkpoints/deit_tiny.msgpack
edge_ckpt="${ckpt_path}"
ckpt "${server}" B/16 checkpoints/deit_base.msgpack
server_ckpt="${ckpt_path}"

run .venv/bin/python -m sage_jax.main --config=configs/imagenet_deit.py --workdir="${workdir}" \
  --config.dataset.data_dir="${data_dir}" \
  --config.edge.checkpoint="${edge_ckpt}" --config.server.checkpoint="${server_ckpt}" \
  ${extra[@]+"${extra[@]}"}
