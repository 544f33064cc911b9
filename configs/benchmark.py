"""The benchmark: sage_jax against PyTorch eager at random weights, and the sweep at scale.

  python -m sage_jax.main --config=configs/benchmark.py:fmnist,deit --workdir=DIR
  python -m sage_jax.main --config=configs/benchmark.py:deit --workdir=DIR \
      --config.batch=256 --config.compute_dtype=bfloat16   # a GPU

Every field: sage_jax/defaults.py (benchmark_config); what the rows mean: docs/benchmark.md.
"""
from sage_jax import defaults


def get_config(shapes="fmnist,deit"):
  return defaults.benchmark_config(shapes)
