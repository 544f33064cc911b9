"""Issue 37 in the paper's regime: the stop signals on Fashion-MNIST scenes (196 patches),
by the same protocol as configs/fmnist_progressive.py, with its own choices.

  python -m sage_jax.main --config=configs/scenes_progressive.py:dev --workdir=W  # development
  python -m sage_jax.main --config=configs/scenes_progressive.py --workdir=W      # reporting

Every rule of the scenes job and sage_nested at its budgets; the schedule climbs K = 8..96 and
the goal is the best fixed accuracy at K = 48. `:dev` runs scenes test 0..4999 and chooses;
the reporting half, 5000..9999, evaluates the choices frozen below.
"""
import os

from sage_jax import defaults

# Frozen from the development run with the models retrained on 2026-12-07 (its report.md's
# literals; stop_choices.json).
TEMPERATURES = (
    ("diversity", (1.171, 1.178, 1.207, 1.134, 1.078, 1.04, 0.965)),
)
FROZEN = (  # the pick first
    ("edge", "divprune", 0.35),
    ("confidence", "diversity", 0.3),
    ("agree+confidence", "divprune", 0.2),
    ("cost", "diversity", 0.43),
    ("patience", "divprune", 1.0),
    ("product", "divprune", 0.42),
    ("kl", "divprune", 0.93),
    ("temperature", "diversity", 0.27),
    ("ltt@0.02", "diversity", 0.59),
    ("ltt@0.05", "diversity", 0.49),
)

HALVES = {
    None: ("test[5000:]", "frozen", "The reporting half, Fashion-MNIST scenes test 5000..9999 "
                                    "(nothing was chosen on it)"),
    "dev": ("test[:5000]", "fit", "The development half, Fashion-MNIST scenes test 0..4999 "
                                  "(every choice was made on it)"),
}


def _fmnist_progressive():
  return defaults.load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "fmnist_progressive.py"))


def get_config(arg=None):
  return _fmnist_progressive().progressive(defaults.scenes_sweep(), arg, HALVES, TEMPERATURES,
                                           FROZEN)
