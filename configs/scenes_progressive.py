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

# Frozen from the development run (its report.md's literals; stop_choices.json).
TEMPERATURES = (
    ("swap@0.25", (1.194, 1.286, 1.385, 1.383, 1.265, 1.142, 0.942)),
    ("swap@0.5", (1.1, 1.206, 1.258, 1.271, 1.191, 1.108, 0.938)),
)
FROZEN = (  # the pick first
    ("edge", "swap@0.25", 0.42),
    ("confidence", "swap@0.25", 0.35),
    ("agree+confidence", "swap@0.25", 0.25),
    ("cost", "swap@0.5", 0.57),
    ("patience", "swap@0.25", 1.0),
    ("product", "swap@0.5", 0.46),
    ("kl", "swap@0.5", 0.88),
    ("temperature", "swap@0.25", 0.29),
    ("ltt@0.02", "swap@0.5", 0.69),
    ("ltt@0.05", "swap@0.5", 0.58),
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
