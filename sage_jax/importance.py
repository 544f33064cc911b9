"""Patch importance from the edge's attention (pure, one example; vmap for a batch).

Both scores are non-negative and sum to 1 over the N patches, so thresholds
are comparable across images (uniform importance = 1/N).
"""
import jax.numpy as jnp


def _normalize(x):
  return x / jnp.maximum(jnp.sum(x), 1e-12)


def cls_attention(attns):
  """Last block's CLS->patch attention, mean over heads. attns: list of f32[H, T, T] -> f32[N]."""
  return _normalize(attns[-1][:, 0, 1:].mean(0))


def rollout(attns):
  """Attention rollout (Abnar & Zuidema 2020): head-mean, add identity for the residual,
  row-normalise, multiply through the blocks; CLS row over patches -> f32[N]."""
  t = attns[0].shape[-1]
  joint = jnp.eye(t)
  for a in attns:
    a = 0.5 * a.mean(0) + 0.5 * jnp.eye(t)
    joint = (a / a.sum(-1, keepdims=True)) @ joint
  return _normalize(joint[0, 1:])


SCORES = {"cls_attention": cls_attention, "rollout": rollout}


def get_score(name: str):
  if name not in SCORES:
    raise ValueError(f"unknown importance {name!r}; allowed: {', '.join(SCORES)}")
  return SCORES[name]
