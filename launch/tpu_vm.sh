#!/usr/bin/env bash
# The paper's ImageNet sweep on a Cloud TPU VM: create the VM (or reuse it when
# it exists), copy this checkout and the two checkpoints to every worker,
# install sage_jax with jax[tpu], convert the checkpoints, run the sweep on
# every worker (JAX's distributed runtime: each worker takes its share of the
# images, worker 0 writes the results), and copy worker 0's results back.
#
# Usage: bash launch/tpu_vm.sh --name=VM --zone=ZONE --data-dir=gs://... \
#          --edge=SRC --server=SRC [options] [-- FLAGS]
#   --name=VM               TPU VM name
#   --zone=ZONE             e.g. us-central2-b
#   --project=PROJECT       default: gcloud's configured project
#   --accelerator-type=T    default v4-8; multi-host slices split the images over hosts
#   --version=V             TPU software version (default tpu-ubuntu2204-base)
#   --data-dir=gs://...     TFDS data_dir holding imagenet2012
#   --edge=SRC              DeiT-Ti/16 weights: timm .safetensors/.pth, .npz or .msgpack (a file)
#   --server=SRC            DeiT-B/16 weights, same formats
#   --workdir=DIR           results folder, on the VM (under ~/sage_jax) and here
#                           (default results/imagenet_tpu)
#   --dry-run               print the commands instead of running them
#   -- FLAGS                passed on to sage_jax.main, e.g. -- --config.num_images=1000
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=launch/common.sh
source launch/common.sh

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
for src in "${edge}" "${server}"; do
  [[ -f "${src}" ]] || die "checkpoint file not found: ${src}"
done

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
run "${tpu[@]}" scp "${tgz}" "${edge}" "${server}" "${name}:~/" --worker=all "${where[@]}"

# On each worker (bash): unpack, install, convert (once per source), sweep.
# SRC (remote name) VARIANT DST -> shell lines; a .msgpack is used as it is.
remote_ckpt() {
  local src
  src="\"\$HOME\"/$(printf %q "$(basename "$1")")"
  if [[ "$1" == *.msgpack ]]; then
    printf 'mkdir -p checkpoints && cp %s %q\n' "${src}" "$3"
  else
    printf '.venv/bin/python -m sage_jax.convert --src=%s --dst=%q --variant=%q\n' \
      "${src}" "$3" "$2"
  fi
}
flags=""
if ((${#extra[@]})); then flags=$(printf ' %q' "${extra[@]}"); fi
remote="set -euo pipefail
mkdir -p ~/sage_jax && tar -xzf ~/sage_jax.tgz -C ~/sage_jax && cd ~/sage_jax
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e . 'jax[tpu]'
$(remote_ckpt "${edge}" Ti/16 checkpoints/deit_tiny.msgpack)
$(remote_ckpt "${server}" B/16 checkpoints/deit_base.msgpack)
.venv/bin/python -m sage_jax.main --config=configs/imagenet_deit.py --distributed \
 --workdir=$(printf %q "${workdir}") --config.dataset.data_dir=$(printf %q "${data_dir}") \
 --config.edge.checkpoint=checkpoints/deit_tiny.msgpack \
 --config.server.checkpoint=checkpoints/deit_base.msgpack${flags}"
run "${tpu[@]}" ssh "${name}" --worker=all "${where[@]}" --command="${remote}"

run mkdir -p "$(dirname "${workdir}")"
run "${tpu[@]}" scp --recurse "${name}:~/sage_jax/${workdir}" "$(dirname "${workdir}")/" \
  --worker=0 "${where[@]}"
