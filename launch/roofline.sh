#!/usr/bin/env bash
# The paper's ImageNet sweep (DeiT-Ti/16 -> DeiT-B/16, every rule, B = 16..196, 50,000
# images) projected onto accelerators (H100, H200, A100, TPU v4, v5e, v5p) by a roofline
# of XLA's cost analysis of each compiled step, the method checked against this CPU's
# measured step times (`sage_jax.main --config=configs/roofline.py`; docs/imagenet.md).
# Writes OUTDIR/roofline.json, OUTDIR/roofline.md and OUTDIR/roofline.txt (the printed
# tables).
#
# Usage: bash launch/roofline.sh OUTDIR [--config.FIELD=VALUE ...]
#   --config.edge_batch=N --config.server_batch=N   per-chip batches (default 256, 64)
#   --config.share=F                   offloaded share (default 0.357, the paper's)
#   --config.dedup=F                   server rows run / all rows (default 214107/300960)
#   --config.accelerators=A,B          a subset of the peaks table
#   --config.check_shapes=fmnist,deit  shapes of the CPU check ('' for none)
#   --config.decode_images=N           synthetic JPEGs timed for the decode rate per core
#   any other field of configs/roofline.py (sage_jax/defaults.py, roofline_config)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"

first_dir "${1:-}" OUTDIR; shift
cd "${root}"
# torch: the CPU peak is the faster of jax's and torch's matmul, as the benchmark's.
bash launch/setup.sh bench
mkdir -p "${out_dir}"
.venv/bin/python -m sage_jax.main --config=configs/roofline.py --workdir="${out_dir}" "$@" \
  | tee "${out_dir}/roofline.txt"
