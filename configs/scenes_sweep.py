"""The paper's regime on this machine: every rule at budgets 8..196 on the 10,000 test
scenes (Fashion-MNIST items in cluttered 56x56 canvases, 196 patches; sage_jax/data/scenes.py).

  bash launch/sweep_scenes.sh results/scenes
  python -m sage_jax.main --config=configs/scenes_sweep.py --workdir=/tmp/scenes

The dataset is built on first use from the Fashion-MNIST files. Every knob is in
`sage_jax/defaults.py` (`scenes_sweep`).
"""
from sage_jax import defaults


def get_config(arg=None):
  del arg
  return defaults.scenes_sweep()
