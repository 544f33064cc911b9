"""Patch importance from the edge's intermediates (pure, one example; vmap for a batch).

An importance function maps one image's `out` (`vit.ViT`: "attns", per block f32[H, T, T]
with CLS first; "tokens", f32[N, D]) to f32[N] >= 0 summing to 1, so thresholds compare
across images. Beside attention and rollout, three sink-aware scores (docs/beyond.md).
"""
import jax.numpy as jnp


def _normalize(x):
  return x / jnp.maximum(jnp.sum(x), 1e-12)


def _distribution(x):
  """Non-negative x: f32[N] -> x / sum(x); all zero -> uniform 1/N (a score must sum to 1)."""
  total = jnp.sum(x)
  return jnp.where(total > 0, x / jnp.where(total > 0, total, 1.0), 1.0 / x.shape[0])


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


def rollout_im(out):
  """Attention rollout as Im et al. (2024)'s code computes it: the head mean of per-head
  products of (A + I) -> f32[N]. How it differs from `rollout`: docs/choices.md."""
  attns = out["attns"]
  t = attns[0].shape[-1]
  joint = jnp.broadcast_to(jnp.eye(t, dtype=attns[0].dtype), attns[0].shape)
  for a in attns:
    joint = (a + jnp.eye(t, dtype=a.dtype)) @ joint
  return _distribution(joint.mean(0)[0, 1:])


def cls_all(out):
  """Mean over blocks of each block's CLS->patch attention (head mean, normalised) -> f32[N]:
  a sink need not sit in every block (docs/choices.md). One block: `cls_attention`."""
  rows = jnp.stack([a[:, 0, 1:].mean(0) for a in out["attns"]])  # f32[L, N]
  rows = rows / jnp.maximum(rows.sum(-1, keepdims=True), 1e-12)
  return _distribution(rows.mean(0))


def cls_specific(out, block=-1):
  """CLS attention beyond what the patch queries pay a patch in `block` (head and query
  mean): relu(cls_j - received_j) -> f32[N]; all zero -> uniform (docs/choices.md)."""
  a = out["attns"][block]
  return _distribution(jnp.maximum(a[:, 0, 1:].mean(0) - a[:, 1:, 1:].mean((0, 1)), 0.0))


def norm_filtered(out, z=2.0):
  """Last block's CLS attention with register-like patches (token norm z-score > z, Darcet
  et al. 2024) set to 0 -> f32[N]; nothing flagged: `cls_attention` (docs/choices.md)."""
  tokens = out["encoded"][1:] if "encoded" in out else out["tokens"]
  norms = jnp.linalg.norm(tokens, axis=-1)
  sd = norms.std()
  zs = (norms - norms.mean()) / jnp.where(sd > 0, sd, 1.0)
  return _distribution(jnp.where(zs > z, 0.0, out["attns"][-1][:, 0, 1:].mean(0)))


IMPORTANCES = {"cls_attention": cls_attention, "rollout": rollout, "rollout_im": rollout_im,
               "cls_all": cls_all, "cls_specific": cls_specific, "norm_filtered": norm_filtered}


def get(name: str):
  if name not in IMPORTANCES:
    raise ValueError(f"unknown importance {name!r}; allowed: {', '.join(IMPORTANCES)}")
  return IMPORTANCES[name]
