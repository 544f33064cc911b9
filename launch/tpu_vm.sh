#!/usr/bin/env bash
# The paper's ImageNet sweep on a Cloud TPU VM: create the VM (or reuse it when
# it exists), copy this checkout and the two checkpoints to every worker, give
# each worker a CPython 3.11 (uv) with sage_jax and jax[tpu] (the version the
# tests ran with), convert the checkpoints, run the sweep on every worker (JAX's
# distributed runtime: each worker takes its share of the images, worker 0
# writes the results), and copy worker 0's results back.
#
# Usage: bash launch/tpu_vm.sh --name=VM --zone=ZONE --data-dir=gs://... \
#          --edge=SRC --server=SRC [options] [-- FLAGS]
#   --name=VM               TPU VM name
#   --zone=ZONE             e.g. us-central2-b
#   --project=PROJECT       default: gcloud's configured project
#   --accelerator-type=T    default v4-8; multi-host slices split the images over hosts
#   --version=V             TPU software version (default tpu-ubuntu2204-base)
#   --data-dir=gs://...     TFDS data_dir holding imagenet2012
#   --edge=SRC              DeiT-Ti/16 weights: timm .safetensors/.pth, Hugging Face
#                           directory, .npz or .msgpack
#   --server=SRC            DeiT-B/16 weights, same formats
#   --workdir=DIR           where the results land here (default results/imagenet_tpu);
#                           on the VM they are written to ~/sage_jax/results/<its name>
#   --dry-run               print the commands (and what runs on the workers) instead
#   -- FLAGS                passed on to sage_jax.main, e.g. -- --config.num_images=1000
# Relative paths are taken from the directory you run the script in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"

# The workers' Python: the TPU images' own is too old for jax ${JAX_VERSION}
# (tpu-ubuntu2204-base ships 3.10), so uv (pinned) installs a standalone CPython.
UV_VERSION=0.13.8
WORKER_PYTHON=3.11

name="" zone="" project="" accel="v4-8" version="tpu-ubuntu2204-base" data_dir=""
edge="" server="" workdir="results/imagenet_tpu" dry_run=0
extra=()
while (($#)); do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator-type=*) accel="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --data-dir=*) data_dir="${1#*=}" ;;
    --edge=*) edge="${1#*=}" ;;
    --server=*) server="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
for flag in name zone data_dir edge server; do
  [[ -n "${!flag}" ]] || die "--${flag//_/-} is required"
done
[[ "${data_dir}" == gs://* ]] || die "--data-dir must be a gs:// path the TPU VM can read"
edge=$(abspath "${edge}")
server=$(abspath "${server}")
workdir=$(abspath "${workdir}")
for src in "${edge}" "${server}"; do
  [[ -e "${src}" ]] || die "checkpoint not found: ${src}"
  if [[ -d "${src}" && ! -f "${src}/config.json" ]]; then
    die "${src} is a directory but not a Hugging Face checkpoint (no config.json)"
  fi
  case "$(basename "${src}")" in
    sage_jax | sage_jax.tgz | sage_jax_uv) die "rename ${src}: the workers use that name" ;;
  esac
done
# Both go to the workers' home directory under their own names.
[[ "$(basename "${edge}")" != "$(basename "${server}")" ]] ||
  die "--edge and --server have the same name $(basename "${edge}"); rename one"
remote_workdir="results/$(basename "${workdir}")"
cd "${root}"

where=(--zone="${zone}")
[[ -z "${project}" ]] || where+=(--project="${project}")
tpu=(gcloud compute tpus tpu-vm)
shape=(--accelerator-type="${accel}" --version="${version}")

# Create unless it exists (in a dry run: shown, as it would run if describe fails).
if ((dry_run)); then
  run "${tpu[@]}" describe "${name}" "${where[@]}"
  echo "# only if describe fails:"
  run "${tpu[@]}" create "${name}" "${where[@]}" "${shape[@]}"
elif "${tpu[@]}" describe "${name}" "${where[@]}" >/dev/null 2>&1; then
  echo "reusing TPU VM ${name}"
else
  run "${tpu[@]}" create "${name}" "${where[@]}" "${shape[@]}"
fi

# The workers unpack ~/sage_jax.tgz, so the archive keeps that name.
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
tgz="${tmp}/sage_jax.tgz"
run tar -czf "${tgz}" --exclude=./.git --exclude=./.venv --exclude=./results \
  --exclude=./checkpoints --exclude='*.safetensors' --exclude='*.pth' .
# --recurse: a Hugging Face checkpoint is a directory.
run "${tpu[@]}" scp --recurse "${tgz}" "${edge}" "${server}" "${name}:~/" --worker=all "${where[@]}"

# On each worker (bash): unpack, Python + install, convert (once per source), sweep.
# SRC (remote name) VARIANT DST -> shell lines; a .msgpack is used as it is.
remote_ckpt() {
  local src
  src="\"\$HOME\"/$(printf %q "$(basename "$1")")"
  if [[ "$1" == *.msgpack ]]; then
    printf 'mkdir -p checkpoints && cp %s %q\n' "${src}" "$3"
  else
    printf '.venv/bin/python -m sage_jax.models.convert --src=%s --dst=%q --variant=%q\n' \
      "${src}" "$3" "$2"
  fi
}
torch_line=""
if needs_torch "${edge}" || needs_torch "${server}"; then
  torch_line="\"\$uv\" pip install -q --python .venv/bin/python torch==${TORCH_VERSION} --index-url ${TORCH_CPU_INDEX}"
fi
flags=""
if ((${#extra[@]})); then flags=$(printf ' %q' "${extra[@]}"); fi
remote="set -euo pipefail
mkdir -p ~/sage_jax && tar -xzf ~/sage_jax.tgz -C ~/sage_jax && cd ~/sage_jax
uv=\"\$HOME/sage_jax_uv/uv\"
[[ -x \"\$uv\" ]] || curl -LsSf https://astral.sh/uv/${UV_VERSION}/install.sh | env UV_UNMANAGED_INSTALL=\"\$HOME/sage_jax_uv\" sh
.venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (${WORKER_PYTHON/./, }))' 2>/dev/null || { rm -rf .venv; \"\$uv\" venv -q --python ${WORKER_PYTHON} .venv; }
\"\$uv\" pip install -q --python .venv/bin/python -e . 'jax[tpu]==${JAX_VERSION}'
${torch_line}
$(remote_ckpt "${edge}" Ti/16 checkpoints/deit_tiny.msgpack)
$(remote_ckpt "${server}" B/16 checkpoints/deit_base.msgpack)
.venv/bin/python -m sage_jax.main --config=configs/imagenet_deit.py --distributed \\
 --workdir=${remote_workdir} --config.dataset.data_dir=$(printf %q "${data_dir}") \\
 --config.edge.checkpoint=checkpoints/deit_tiny.msgpack \\
 --config.server.checkpoint=checkpoints/deit_base.msgpack${flags}"
remote=$(printf '%s\n' "${remote}" | sed '/^$/d')
case "${version}" in
  tpu-ubuntu2204-base) image_python="ships Python 3.10" ;;
  *) image_python="has its own python3, not used" ;;
esac
echo "# Python on the workers: CPython ${WORKER_PYTHON} from uv ${UV_VERSION} (the image" \
  "${version} ${image_python}; jax[tpu]==${JAX_VERSION} needs Python >= ${MIN_PYTHON})"
if ((dry_run)); then
  echo "# on every worker (bash):"
  printf '%s\n' "${remote}" | sed 's/^/#   | /'
fi
run "${tpu[@]}" ssh "${name}" --worker=all "${where[@]}" --command="${remote}"

run mkdir -p "$(dirname "${workdir}")"
run "${tpu[@]}" scp --recurse "${name}:~/sage_jax/${remote_workdir}" "$(dirname "${workdir}")/" \
  --worker=0 "${where[@]}"
