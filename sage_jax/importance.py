"""Patch importance from the edge's intermediates (pure, one example; vmap for a batch).

An importance function maps the edge's intermediates for one image, `out` (see
`vit.ViT`: "attns", a list over blocks of f32[H, T, T] with CLS first, and
"tokens", f32[N, D]), to f32[N]. Every one is non-negative and sums to 1 over
the N patches, so thresholds are comparable across images (uniform importance
= 1/N). Adding one: a function plus an entry in IMPORTANCES; a sweep then runs
any rule on it as `rule:name`.
"""
import jax.numpy as jnp


def _normalize(x):
  return x / jnp.maximum(jnp.sum(x), 1e-12)


def cls_attention(out):
  """Last block's CLS->patch attention, mean over heads -> f32[N]."""
  return _normalize(out["attns"][-1][:, 0, 1:].mean(0))


def rollout(out):
  """Attention rollout (Abnar & Zuidema 2020): head-mean, add identity for the residual,
  row-normalise, multiply through the blocks; CLS row over patches -> f32[N]."""
  attns = out["attns"]
  t = attns[0].shape[-1]
  joint = jnp.eye(t)
  for a in attns:
    a = 0.5 * a.mean(0) + 0.5 * jnp.eye(t)
    joint = (a / a.sum(-1, keepdims=True)) @ joint
  return _normalize(joint[0, 1:])


IMPORTANCES = {"cls_attention": cls_attention, "rollout": rollout}


def get(name: str):
  if name not in IMPORTANCES:
    raise ValueError(f"unknown importance {name!r}; allowed: {', '.join(IMPORTANCES)}")
  return IMPORTANCES[name]
