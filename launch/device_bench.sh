#!/usr/bin/env bash
# sage_jax measured on one GPU, in one call: the benchmark (sage_jax against
# PyTorch eager on the same GPU, both bf16: DeiT-Ti/16 -> B/16 forwards at batch 256 with
# their share of a bf16 8192^3 matmul's rate, SAGE's share of the server, the full sweep)
# and the sweep at scale (its own pipeline on 4096 synthetic 224 px images, every rule of
# configs/imagenet_deit.py at 16..196, 35.7% offloaded, projected to the 50,000-image
# ImageNet sweep). Sized to finish inside 5 minutes on one H100.
#
# It runs from the checkout through PYTHONPATH (no `pip install -e .`, which would pull in
# TensorFlow). The lent GPU machine (/work/.library/device/KINDS.md) has python3 3.12 with
# jax (CUDA), flax, optax, torch (CUDA), numpy, absl-py and PyYAML, and no TensorFlow, TFDS
# or ml_collections. ml_collections 1.1.0 (pure Python; it needs only absl-py and PyYAML)
# travels as a wheel, installed there with pip --no-index --no-deps into a temporary folder
# that goes on PYTHONPATH. Nothing on this path imports TensorFlow: the script fails if the
# run's JSON says `tensorflow` was in sys.modules at the end.
#
# A session whose task has a GPU:
#   1. here, with PyPI:  bash launch/device_bench.sh --fetch-wheels=.whl   (.whl/ is ignored)
#   2. the device tool:  run(command="bash launch/device_bench.sh --wheels=.whl",
#                            carry=[".whl"], timeout_s=420)
#      then give_back. benchmark.json, benchmark.md, bench.txt (the tables), log.txt and
#      nvidia-smi.txt come back from $OUT; benchmark.json is rewritten after each row, so a
#      run cut short still returns the rows measured so far.
#
# Usage: bash launch/device_bench.sh [options] [-- BENCHMARK FLAGS]
#   --out=DIR           where the files go (default: $OUT when set, else results/device_bench)
#   --wheels=DIR        install DIR/*.whl first (pip --no-index --no-deps)
#   --fetch-wheels=DIR  only download the wheels the GPU machine lacks into DIR, then exit
#   --python=PY         interpreter (default python3)
#   --dry-run           print the commands instead of running them
#   -- FLAGS            sage_jax.main flags after the defaults (the last one wins), e.g.
#                       -- --config.scale.images=8192 --config.budgets=16,32,48,64,96
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=launch/common.sh
source launch/common.sh

# What the GPU machine lacks, pinned (the import chain of sage_jax.main and the benchmark
# otherwise needs jax, flax, numpy, scipy, absl-py, PyYAML and torch, all there).
WHEELS=(ml_collections==1.1.0)
# The benchmark's defaults for one H100 in under 5 minutes: three budgets in the
# benchmark's rows (each budget compiles a DeiT-B forward, a sweep step and five selections
# in each of its two sweeps), the paper's six in the sweep at scale.
DEFAULTS=(--config=configs/benchmark.py:deit --config.batch=256 "--config.budgets=16,48,96"
          --config.compute_dtype=bfloat16 --config.offload_share=0.357 --config.repeats=3
          --config.scale.images=4096)

out="${OUT:-results/device_bench}" wheels="" fetch="" py="python3" dry_run=0
extra=()
while (($#)); do
  case "$1" in
    --out=*) out="${1#*=}" ;;
    --wheels=*) wheels="${1#*=}" ;;
    --fetch-wheels=*) fetch="${1#*=}" ;;
    --python=*) py="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n "${out}" ]] || die "--out is empty"

if [[ -n "${fetch}" ]]; then
  run "${py}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    -d "${fetch}" "${WHEELS[@]}"
  exit 0
fi

site=""
if [[ -n "${wheels}" ]]; then
  compgen -G "${wheels}/*.whl" >/dev/null || die "no .whl files in ${wheels}"
  site="/tmp/sage_jax_site.XXXXXX"
  ((dry_run)) || site="$(mktemp -d "${site}")"
  run "${py}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "${site}" "${wheels}"/*.whl
fi
export PYTHONPATH="${PWD}${site:+:${site}}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
# jax takes half the GPU's memory up front (its default is 75%), torch works in the rest.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"

bench=("${py}" -m sage_jax.main "${DEFAULTS[@]}" "${extra[@]}" --workdir="${out}")
if ((dry_run)); then
  run "${bench[@]}"
  exit 0
fi
mkdir -p "${out}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi >"${out}/nvidia-smi.txt" 2>&1 || true
fi

printf '+'; printf ' %q' "${bench[@]}"; printf '\n'
set +e
"${bench[@]}" 2> >(tee "${out}/log.txt" >&2) | tee "${out}/bench.txt"
status=${PIPESTATUS[0]}
set -e
((status == 0)) || exit "${status}"

"${py}" - "${out}/benchmark.json" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
if result["tensorflow_imported"]:
  sys.exit("error: TensorFlow was imported on the benchmark's path")
print(f"checked: {len(result['rows'])} rows, complete={result['complete']}, "
      "no TensorFlow imported")
EOF
