"""The gate's eta for a shipped edge, chosen on held-out training images: arg fmnist |
scenes. Prints (and writes WORKDIR/gate.json, .md) the eta that offloads gate.fraction of
train[50000:] (the images the models were not trained on; docs/models.md) and the share
the sweep config's eta offloads there.

  python -m sage_jax.main --config=configs/gate_eta.py:fmnist --workdir=/tmp/gate
"""
from sage_jax import defaults

SWEEPS = {"fmnist": defaults.sweep_config, "scenes": defaults.scenes_sweep}


def get_config(dataset="fmnist"):
  if dataset not in SWEEPS:
    raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(SWEEPS)}")
  c = SWEEPS[dataset]()
  c.mode = "measure"
  c.measures = "gate"
  c.dataset.split = "train[50000:]"
  c.gate.fraction = 0.34  # the share to offload (about the paper's 35.7%)
  return c
