#!/usr/bin/env bash
# A rehearsal of the ImageNet sweep at ImageNet shapes on this machine: a synthetic
# imagenet2012 validation split (built once through TFDS's builder, cached under
# ~/.cache/sage_jax/rehearsal) and random DeiT-Ti/16 / DeiT-B/16 weights, swept with
# configs/imagenet_deit.py (CPU-sized: budgets 16,64, rules topk,sage,threshold, 1,000
# images). The job is `sage_jax.main --config=configs/rehearsal.py`. Writes
# WORKDIR/rehearsal.json; the last line printed holds images_per_second, bytes_read_ratio
# and pipeline_efficiency (see docs/imagenet.md).
#
# Usage: bash launch/rehearsal.sh WORKDIR [--config.FIELD=VALUE ...] [main's flags]
#   --config.num_images=N                    images to sweep (default 1000)
#   --config.rehearsal.synthetic_images=N    images in the synthetic split (default 5000)
#   --config.rehearsal.repeats=N             timed calls per forward shape (default 2)
#   --config.rehearsal.overwrite=True        clear an earlier run's progress in WORKDIR first
#   --distributed --coordinator_address=HOST:PORT --num_processes=P --process_id=I
#                           one of P processes (each its own WORKDIR on one machine); process
#                           0 reports bytes_read_ratio over every process's reads
#   --config.FIELD=VALUE    any sweep config override, e.g. --config.budgets=16,32,64
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"

first_dir "${1:-}" WORKDIR; shift
cd "${root}"
bash launch/setup.sh
exec .venv/bin/python -m sage_jax.main --config=configs/rehearsal.py --workdir="${out_dir}" "$@"
