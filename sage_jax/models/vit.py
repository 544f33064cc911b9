"""Vision Transformer (DeiT, timm's parameter names) for the edge and the server.

Edge: `apply(images)` -> (logits, out): "attns" (per block f32[B, H, T, T]), "attn" (the
last), "tokens" (final-norm patch tokens, f32[B, N, D]), "encoded". Server: `apply(images,
keep_idx, keep_mask)` embeds only the kept patches; masked slots are no attention keys.
"""
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# name -> (width, depth, heads, patch). DeiT widths/depths as in the DeiT paper;
# the fm-* variants are the embedded Fashion-MNIST models (28px, 4px patches).
VARIANTS = {
    "Ti/16": (192, 12, 3, 16),
    "S/16": (384, 12, 6, 16),
    "B/16": (768, 12, 12, 16),
    "fm-edge": (48, 4, 3, 4),
    "fm-server": (128, 6, 4, 4),
}


def decode_variant(variant: str) -> dict:
  """'B/16' -> dict(width, depth, num_heads, patch_size, mlp_dim)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown ViT variant {variant!r}; known: {sorted(VARIANTS)}")
  width, depth, heads, patch = VARIANTS[variant]
  return dict(width=width, depth=depth, num_heads=heads, patch_size=patch,
              mlp_dim=4 * width)


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """f32[B, H, W, C] -> f32[B, N, patch*patch*C], patches in row-major grid order."""
  b, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"image size {h}x{w} is not divisible by patch size {patch}")
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


gelu = functools.partial(nn.gelu, approximate=False)  # exact erf GELU (timm)
LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-6)


class Attention(nn.Module):
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask=None, cls_only=False):
    """cls_only: only the CLS token queries (its row is all a classifier reads)."""
    b, t, d = x.shape
    hd = d // self.num_heads
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x).reshape(b, t, 3, self.num_heads, hd)
    # (B, H, T, hd) batched matmuls: fastest layout on XLA:CPU in our tests.
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    if cls_only:
      q, t = q[:, :, :1], 1
    logits = (q * hd**-0.5) @ k.swapaxes(-1, -2)
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :], logits, -jnp.inf)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # f32 even under bf16
    y = (attn.astype(v.dtype) @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    return nn.Dense(d, dtype=self.dtype, name="proj")(y), attn


class Block(nn.Module):
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask=None, cls_only=False):
    norm = functools.partial(LayerNorm, dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    y, attn = Attention(self.num_heads, self.dtype, name="attn")(norm(name="norm1")(x), key_mask,
                                                                 cls_only)
    x = x[:, :1] + y if cls_only else x + y
    y = gelu(dense(self.mlp_dim, name="fc1")(norm(name="norm2")(x)))
    x = x + dense(x.shape[-1], name="fc2")(y)
    return x, attn


class ViT(nn.Module):
  """Pre-LN ViT with a CLS token and learned position embeddings."""
  num_classes: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  num_patches: int
  dtype: Any = jnp.float32  # activations; parameters stay float32 (bf16 for accelerators)

  @nn.compact
  def __call__(self, images, keep_idx: Optional[jax.Array] = None,
               keep_mask: Optional[jax.Array] = None, logits_only: bool = False):
    """images: f32[B, H, W, C]; keep_idx: i32[B, K] or None; keep_mask: bool[B, K].
    logits_only: the last block runs for the CLS token alone and `out` holds no maps."""
    patches = patchify(images, self.patch_size)
    if patches.shape[1] != self.num_patches:
      raise ValueError(f"images give {patches.shape[1]} patches, model expects "
                       f"{self.num_patches}")
    pos = self.param("pos_embed", nn.initializers.normal(0.02),
                     (1, 1 + self.num_patches, self.width))
    cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width))
    x = nn.Dense(self.width, dtype=self.dtype, name="patch_embed")(patches)
    patch_pos = jnp.broadcast_to(pos[:, 1:], x.shape)
    key_mask = None
    if keep_idx is not None:
      x = jnp.take_along_axis(x, keep_idx[..., None], axis=1)
      patch_pos = jnp.take(pos[0, 1:], keep_idx, axis=0)
      if keep_mask is not None:
        key_mask = jnp.concatenate(
            [jnp.ones((x.shape[0], 1), bool), keep_mask.astype(bool)], axis=1)
    x = x + patch_pos
    x = jnp.concatenate([jnp.broadcast_to(cls + pos[:, :1], (x.shape[0], 1, self.width)), x], 1)
    out, attns = {}, []
    for i in range(self.depth):
      x, attn = Block(self.num_heads, self.mlp_dim, self.dtype, name=f"blocks_{i}")(
          x, key_mask, logits_only and i == self.depth - 1)
      attns.append(attn)
    encoded = x
    x = LayerNorm(dtype=self.dtype, name="norm")(x)
    if not logits_only:
      out.update(attns=attns, attn=attns[-1], tokens=x[:, 1:].astype(jnp.float32),
                 encoded=encoded.astype(jnp.float32))
    out["pre_logits"] = x[:, 0].astype(jnp.float32)
    logits = nn.Dense(self.num_classes, name="head",
                      kernel_init=nn.initializers.zeros)(out["pre_logits"])
    return logits, out


# compute_dtype (config) -> the activations' dtype; params stay float32.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def Model(num_classes: int, variant: str, image_size: int, dtype=jnp.float32) -> ViT:
  """Factory: ViT for `variant` on square `image_size` images, activations in `dtype`."""
  v = decode_variant(variant)
  if image_size % v["patch_size"]:
    raise ValueError(f"image size {image_size} is not divisible by patch size "
                     f"{v['patch_size']} of variant {variant!r}")
  n = (image_size // v["patch_size"]) ** 2
  return ViT(num_classes=num_classes, num_patches=n, dtype=dtype, **v)


def forward_flops(model: ViT, kept: int, channels: int) -> float:
  """FLOPs of one image's forward with `kept` patches (multiply-adds count 2, elementwise work
  left out): 2*N*P*D (every patch embedded) + L*(2*T*(4*D^2 + 2*D*M) + 4*T^2*D) + 2*D*C."""
  d, m, t, n = model.width, model.mlp_dim, kept + 1, model.num_patches
  patch_dim = model.patch_size ** 2 * channels
  return (2 * n * patch_dim * d + model.depth * (2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d)
          + 2 * d * model.num_classes)
