"""The paper's ImageNet sweep projected onto accelerators by a roofline of XLA's cost
analysis of each compiled step, the method checked against this CPU's step times.

  python -m sage_jax.main --config=configs/roofline.py --workdir=DIR [--config.FIELD=VALUE]

Writes DIR/roofline.json and DIR/roofline.md. Every field: sage_jax/defaults.py
(roofline_config); the method: docs/imagenet.md.
"""
from sage_jax import defaults


def get_config():
  return defaults.roofline_config()
