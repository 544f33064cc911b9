import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.models import vit


@functools.partial(jax.jit, static_argnums=0, static_argnames="logits_only")
def apply(model, params, *args, logits_only=False):
  """model.apply, jitted: eager, every op compiles for each new shape (seconds a test)."""
  return model.apply({"params": params}, *args, logits_only=logits_only)


@pytest.fixture(scope="module")
def small():
  model = vit.ViT(num_classes=5, width=32, depth=2, num_heads=4, mlp_dim=64, patch_size=4,
                  num_patches=16)

  # One jitted init (eager, every op compiles: ~15 s on each xdist worker), then numpy noise
  # (jax.random.normal compiles a sampler per leaf shape: ~2 s).
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  # The head starts at zero; perturb every weight so the logits are informative.
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + 0.3 * rng.standard_normal(
      x.shape, np.float32)), params)
  images = jnp.asarray(rng.standard_normal((6, 16, 16, 3), np.float32))
  return model, params, images


def test_patchify_matches_loops():
  x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  got = np.asarray(vit.patchify(jnp.asarray(x), 4))
  want = np.stack([np.stack([x[b, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4].reshape(-1)
                             for r in range(2) for c in range(3)]) for b in range(2)])
  np.testing.assert_array_equal(got, want)


def test_edge_outputs(small):
  model, params, images = small
  logits, out = apply(model, params, images)
  assert logits.shape == (6, 5)
  assert out["attn"].shape == (6, 4, 17, 17) and len(out["attns"]) == 2
  np.testing.assert_allclose(out["attn"].sum(-1), 1.0, atol=1e-5)
  assert out["tokens"].shape == (6, 16, 32)


def test_subset_with_all_indices_equals_full_forward(small):
  model, params, images = small
  full = apply(model, params, images)[0]
  idx = jnp.broadcast_to(jnp.arange(16), (6, 16))
  sub = apply(model, params, images, idx)[0]
  np.testing.assert_allclose(sub, full, atol=1e-5)
  # Any order of all patches gives the same logits: each patch keeps its own position.
  perm = jnp.stack([jax.random.permutation(jax.random.PRNGKey(i), 16) for i in range(6)])
  np.testing.assert_allclose(apply(model, params, images, perm)[0], full, atol=1e-5)


def test_subset_positions_matter(small):
  model, params, images = small
  idx = jnp.broadcast_to(jnp.arange(3), (6, 3))  # first row, columns 0..2
  a = apply(model, params, images, idx)[0]
  # The same pixels claimed one column to the right: different logits.
  shifted = jnp.roll(images, 4, axis=2)  # patch column c moves to c+1
  np.testing.assert_array_equal(vit.patchify(shifted, 4)[:, 1:4], vit.patchify(images, 4)[:, 0:3])
  b = apply(model, params, shifted, idx + 1)[0]
  assert np.abs(np.asarray(a - b)).max() > 1e-3


def test_masked_padding_leaves_logits_unchanged(small):
  model, params, images = small
  idx = jnp.asarray([[3, 7, 0, 12, 5]] * 6)
  want = apply(model, params, images, idx)[0]
  pad_idx = jnp.concatenate([idx, jnp.asarray([[9, 9, 1]] * 6)], axis=1)
  mask = jnp.asarray([[True] * 5 + [False] * 3] * 6)
  got = apply(model, params, images, pad_idx, mask)[0]
  assert np.abs(np.asarray(got - want)).max() <= 1e-5
  # Without the mask the padding does change the answer (the test can fail).
  unmasked = apply(model, params, images, pad_idx)[0]
  assert np.abs(np.asarray(unmasked - want)).max() > 1e-4


def test_logits_only_gives_the_same_logits(small):
  model, params, images = small
  idx = jnp.asarray([[3, 7, 0, 12, 5, 9]] * 6)
  mask = jnp.asarray([[True] * 4 + [False] * 2] * 6)
  for args in ((), (idx,), (idx, mask)):
    logits, out = apply(model, params, images, *args)
    fast, fast_out = apply(model, params, images, *args, logits_only=True)
    np.testing.assert_allclose(fast, logits, atol=1e-5)
    np.testing.assert_allclose(fast_out["pre_logits"], out["pre_logits"], atol=1e-5)
    assert "tokens" not in fast_out and "attn" not in fast_out


def test_variants_and_bad_sizes():
  assert vit.decode_variant("B/16")["width"] == 768
  with pytest.raises(ValueError, match="unknown ViT variant"):
    vit.decode_variant("X/3")
  with pytest.raises(ValueError, match="not divisible"):
    vit.Model(10, "fm-edge", 30)


def test_bfloat16_activations_stay_close(small):
  model, params, images = small
  bf16 = model.clone(dtype=jnp.bfloat16)
  idx = jnp.asarray([[3, 7, 0, 12, 5]] * 6)
  for args in ((images,), (images, idx)):
    want = apply(model, params, *args)[0]
    got = apply(bf16, params, *args)[0]
    assert got.dtype == jnp.float32
    # bf16 keeps 8 mantissa bits: about 1% of the logit scale here.
    assert np.abs(np.asarray(got - want)).max() <= 0.05 * np.abs(np.asarray(want)).max()


@pytest.mark.parametrize("variant,kept,gflop", [("B/16", 196, 35.16), ("Ti/16", 196, 2.51),
                                                ("B/16", 96, 17.06)])
def test_forward_flops(variant, kept, gflop):
  # timm's counts for the full forwards: DeiT-B 17.58, DeiT-Ti 1.26 GMACs.
  model = vit.Model(1000, variant, 224)
  assert vit.forward_flops(model, kept, 3) / 1e9 == pytest.approx(gflop, rel=5e-3)
