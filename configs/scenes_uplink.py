"""The uplink as it is, on the scenes (196 patches): as configs/fmnist_uplink.py, at the
scenes' budgets under loss rates 0, 0.1, 0.3, 0.5 and 8, 4, 2 bits per pixel, for six rules
(the paper's two, the content-blind two, diversity and sage_nested) to keep it near 20
minutes on 2 cores; add rules with --config.rules.

  SWEEP_CONFIG=configs/scenes_uplink.py bash launch/sweep_default.sh results/scenes_uplink
"""
from sage_jax import defaults


def get_config(arg=None):
  del arg
  c = defaults.scenes_sweep()
  c.rules = "random,grid,topk,diversity,sage,sage_nested"
  c.uplink.erasure = "0,0.1,0.3,0.5"
  c.uplink.pixel_bits = "8,4,2"
  return c
