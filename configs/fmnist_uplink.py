"""The uplink as it is, on Fashion-MNIST: every rule at the default budgets under loss rates
p = 0, 0.1, 0.3, 0.5 and 8, 4 and 2 bits per pixel (every pair), from the shipped models.

  SWEEP_CONFIG=configs/fmnist_uplink.py bash launch/sweep_default.sh results/fmnist_uplink

results.csv has a row per (erasure, pixel_bits, rule, budget); report.md's uplink section
has accuracy against the loss rate at K=8 (erasure.png) and against bits per request per
bits-per-pixel (pixel_bits.png). Every knob is in `sage_jax/defaults.py`.
"""
from sage_jax import defaults




def get_config(arg=None):
  del arg
  c = defaults.sweep_config()
  c.rules += ",sage_nested"  # every rule of the default, and the one whose sets grow with K
  c.uplink.erasure = "0,0.1,0.3,0.5"
  c.uplink.pixel_bits = "8,4,2"
  return c
