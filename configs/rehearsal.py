"""The ImageNet sweep rehearsed at ImageNet shapes: synthetic split, random weights.

  python -m sage_jax.main --config=configs/rehearsal.py --workdir=WORKDIR \
      [--config.num_images=N] [--config.rehearsal.synthetic_images=N] [--config.FIELD=VALUE]

Every field: sage_jax/defaults.py (rehearsal_config, then imagenet_deit); the measures:
docs/imagenet.md.
"""
from sage_jax import defaults


def get_config():
  return defaults.rehearsal_config()
