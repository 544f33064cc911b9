"""Offload gate: each uncertainty maps the edge's logits f32[C] to an uncertainty (larger: less
sure); an image is offloaded when it is > the threshold. `margin` is minus the top-2 gap;
`fraction` offloads a fixed share, least confident first (`calibrate_fraction`).
"""
import jax
import jax.numpy as jnp
import numpy as np


def min_entropy(logits):
  """-log2 max_c p_c, in bits."""
  return -jax.nn.log_softmax(logits).max(-1) / jnp.log(2.0)


def entropy(logits):
  """Shannon entropy, in bits."""
  logp = jax.nn.log_softmax(logits)
  return -(jnp.exp(logp) * logp).sum(-1) / jnp.log(2.0)


def neg_margin(logits):
  """-(p1 - p2): larger when the two most likely classes are closer."""
  top2 = jax.lax.top_k(jax.nn.softmax(logits), 2)[0]
  return top2[..., 1] - top2[..., 0]


UNCERTAINTIES = {"min_entropy": min_entropy, "entropy": entropy, "margin": neg_margin,
            "fraction": min_entropy}


def get_uncertainty(name: str):
  if name not in UNCERTAINTIES:
    raise ValueError(f"unknown offload uncertainty {name!r}; allowed: {', '.join(UNCERTAINTIES)}")
  return UNCERTAINTIES[name]


def gate_threshold(gate, uncertainties=None) -> float:
  """The gate (uncertainty, eta, fraction) -> uncertainty threshold; `fraction` calibrates on
  `uncertainties()`, every evaluated image's (one more edge pass)."""
  if gate.uncertainty == "fraction":
    return calibrate_fraction(uncertainties(), gate.fraction)
  if gate.uncertainty == "margin":
    return -float(gate.eta)
  return float(gate.eta)


def calibrate_fraction(uncertainties: np.ndarray, fraction: float) -> float:
  """Threshold t with `uncertainty > t` true for the round(fraction * n) highest
  uncertainties (fewer when they tie at the boundary)."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"offload fraction {fraction} is not allowed; it must be in [0, 1]")
  n_off = int(round(fraction * len(uncertainties)))
  if n_off == len(uncertainties):
    return -float("inf")
  return float(np.sort(uncertainties)[len(uncertainties) - n_off - 1])
