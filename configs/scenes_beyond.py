"""The frozen "Beyond the paper" rule meets a second regime: Fashion-MNIST scenes.

  python -m sage_jax.main --config=configs/scenes_beyond.py --workdir=W

`configs/fmnist_beyond.py`'s reporting run, unchanged but for the data and the models: the
frozen rule (`mmr@0.5:cls_all`), every other idea at its frozen parameters, SAGE, diversity,
top-K and random, on scenes test[5000:] with the scenes' edge and server at the scenes
sweep's budgets below N. Nothing was chosen or tuned on the scenes; the ideas' reasons were
written for Fashion-MNIST, so here each verdict stands without one.
"""
import os

from sage_jax import defaults


def _fmnist_beyond():
  return defaults.load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "fmnist_beyond.py"))


def get_config(arg=None):
  del arg
  beyond = _fmnist_beyond()
  c = beyond.get_config()  # the reporting run: its rules, comparisons and frozen rule
  scenes = defaults.scenes_sweep()
  for key in ("dataset", "edge", "server", "gate", "coverage_grid", "batch_size",
              "server_batch_size"):
    c[key] = scenes[key]
  c.dataset.split = "test[5000:]"
  c.budgets = "8,16,24,32,48,64,96"
  c.report.map_budget = scenes.report.map_budget
  c.report.moderate = scenes.report.moderate
  c.report.beyond.half = ("Fashion-MNIST scenes test 5000..9999, a second regime: the rule and "
                          "every parameter were frozen on Fashion-MNIST and run here unchanged")
  why = ("the ideas were designed against Fashion-MNIST's attention sinks and this run only "
         "measures whether they carry over to the scenes, so no reason is claimed")
  c.report.beyond.ideas = tuple((title, rules, why, why)
                                for title, rules, _, _ in c.report.beyond.ideas)
  return c
