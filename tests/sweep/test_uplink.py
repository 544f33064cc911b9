"""Erasure fates and coarser units (sage_jax/sweep/uplink.py) against numpy references."""
import jax
import numpy as np
import pytest

from sage_jax.sweep import uplink

N = 196


def test_fates_depend_only_on_image_and_patch_index():
  together = np.asarray(uplink.unit_uniforms(0, np.array([3, 7, 11], np.int32), N))
  alone = np.asarray(uplink.unit_uniforms(0, np.array([7], np.int32), N))
  jitted = np.asarray(jax.jit(uplink.unit_uniforms, static_argnums=(0, 2))(
      0, np.array([11, 3], np.int32), N))
  np.testing.assert_array_equal(together[1], alone[0])
  np.testing.assert_array_equal(together[[2, 0]], jitted)
  assert not np.array_equal(together[0], together[1])
  other_seed = np.asarray(uplink.unit_uniforms(1, np.array([3], np.int32), N))
  assert not np.array_equal(other_seed[0], together[0])


def test_erasure_stream_is_not_the_random_rules_stream():
  u = np.asarray(uplink.unit_uniforms(0, np.array([5], np.int32), N))[0]
  random_rule = np.asarray(jax.random.uniform(
      jax.random.fold_in(jax.random.PRNGKey(0), 5), (N,)))
  assert abs(np.corrcoef(u, random_rule)[0, 1]) < 0.3


def _numpy_arrived(keep_idx, valid, u, rate):
  return np.array([[bool(v) and u[b, i] >= rate for i, v in zip(row, vrow)]
                   for b, (row, vrow) in enumerate(zip(keep_idx, valid))])


def test_arrived_matches_numpy_and_is_paired_and_nested():
  rng = np.random.RandomState(0)
  u = np.asarray(uplink.unit_uniforms(0, np.arange(4, dtype=np.int32), N))
  rule_a = np.stack([rng.permutation(N)[:24] for _ in range(4)]).astype(np.int32)
  rule_b = np.concatenate([rule_a[:, 12:], rng.randint(0, N, (4, 12))], 1).astype(np.int32)
  valid = np.ones((4, 24), bool)
  valid[1, 20:] = False  # padding of a rule that sent fewer than K
  valid_b = np.concatenate([valid[:, 12:], np.ones((4, 12), bool)], 1)
  previous = None
  for rate in (0.0, 0.1, 0.3, 0.5, 1.0):
    a = np.asarray(uplink.arrived(rule_a, valid, u, rate))
    b = np.asarray(uplink.arrived(rule_b, valid_b, u, rate))
    np.testing.assert_array_equal(a, _numpy_arrived(rule_a, valid, u, rate))
    np.testing.assert_array_equal(a[:, 12:], b[:, :12])  # shared patches share their fate
    assert not a[1, 20:].any()
    if previous is not None:
      assert not (a & ~previous).any(), f"a unit lost at a smaller rate arrived at {rate}"
    previous = a
  assert previous.sum() == 0  # rate 1 loses everything
  assert np.asarray(uplink.arrived(rule_a, valid, u, 0.0)).sum() == valid.sum()


def test_loss_rate_is_p_over_many_units():
  u = np.asarray(uplink.unit_uniforms(0, np.arange(2000, dtype=np.int32), N))
  for rate in (0.1, 0.3, 0.5):
    assert abs((u < rate).mean() - rate) < 0.005


def test_quantise_gives_the_exact_levels():
  x = np.arange(256, dtype=np.float32)
  np.testing.assert_array_equal(np.asarray(uplink.quantise(x, 8)), x)
  two = np.asarray(uplink.quantise(x, 2))
  assert set(two.tolist()) == {0.0, 85.0, 170.0, 255.0}
  np.testing.assert_array_equal(two[[0, 42, 43, 127, 128, 212, 213, 255]],
                                [0, 0, 85, 85, 170, 170, 255, 255])
  one = np.asarray(uplink.quantise(x, 1))
  np.testing.assert_array_equal(one, np.where(x >= 128, 255.0, 0.0))
  four = np.asarray(uplink.quantise(x, 4))
  np.testing.assert_allclose(four, np.round(x / 17) * 17)
  assert np.abs(four - x).max() <= 8.5


@pytest.mark.parametrize("bits", [0, 9])
def test_quantise_refuses_bits_outside_1_to_8(bits):
  with pytest.raises(ValueError, match=f"pixel_bits {bits} is not allowed"):
    uplink.quantise(np.zeros(3), bits)
