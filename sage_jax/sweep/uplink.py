"""The uplink as it is: units lost on the way, and coarser units.

Each (image, patch) draws one uniform u from fold_in(fold_in(PRNGKey(seed), SALT), image
index); the unit is lost at rate p iff u < p. So a unit's fate depends only on the image and
patch index: every rule meets the same losses (paired comparisons), at any batch size,
chunking or device count, and a unit lost at p is lost at every larger rate (nested).
"""

import jax
import jax.numpy as jnp

# Keeps the erasure stream apart from the `random` rule's, which uses the same seed.
SALT = 0x6C6F7373  # "loss"


def unit_uniforms(seed: int, image_index, num_patches: int):
  """f32[B, N]: u per (image, patch); image_index: i32[B] (dataset indices)."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), SALT)
  draw = lambda i: jax.random.uniform(jax.random.fold_in(base, i), (num_patches,))
  return jax.vmap(draw)(image_index)


def arrived(keep_idx, valid, uniforms, rate):
  """bool[..., B, K]: sent units (valid) that survive `rate`; keep_idx: i32[..., B, K] patch
  indices (any leading axes, e.g. rules), uniforms f32[B, N]."""
  u = jnp.broadcast_to(uniforms, keep_idx.shape[:-1] + uniforms.shape[-1:])
  return valid & (jnp.take_along_axis(u, keep_idx, axis=-1) >= rate)


def quantise(pixels, bits: int, lo: float = 0.0, hi: float = 255.0):
  """Pixels on 2**bits uniform levels over [lo, hi], as the server reconstructs them.

  With 8 bits over [0, 255] integer pixels come back unchanged (the step is exactly 1).
  """
  if not 1 <= bits <= 8:
    raise ValueError(f"pixel_bits {bits} is not allowed; it must be in 1..8")
  step = (hi - lo) / (2 ** bits - 1)
  levels = jnp.round((jnp.clip(pixels, lo, hi) - lo) / step)
  return lo + levels * step


def requantise(images, bits: int, mean, std):
  """Normalised images ((x/255 - mean) / std, as both preprocessings end) -> the same with
  every pixel on 2**bits levels: what the server preprocesses from coarser patches."""
  pixels = (images * std + mean) * 255.0
  return (quantise(pixels, bits) / 255.0 - mean) / std


# The report's section: what the losses and the coarser units cost each rule.
