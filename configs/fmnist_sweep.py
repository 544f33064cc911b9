"""The embedded default: SAGE budget sweep on Fashion-MNIST with the shipped models.

  python -m sage_jax.main --config=configs/fmnist_sweep.py --workdir=/tmp/sage
  ... --config.rules=topk,sage --config.budgets=8,16 --config.num_images=500

Every knob, with its default and a comment, is in `sage_jax/defaults.py`.
"""
from sage_jax import defaults


def get_config(arg=None):
  del arg
  return defaults.sweep_config()
