"""Tests for sage_jax.channel: arithmetic known answers, rounding, errors."""
import numpy as np
import pytest

from sage_jax.report import link_cost


def test_bits_per_unit_known_answers():
  assert link_cost.bits_per_unit(4, 1, num_patches=49) == 128 + 6  # Fashion-MNIST, 7x7 grid
  assert link_cost.bits_per_unit(16, 3, num_patches=196) == 16 * 16 * 3 * 8 + 8  # ImageNet 224/16
  assert link_cost.bits_per_unit(16, 3, num_patches=196) == 6152
  assert link_cost.bits_per_unit(4, 1) == 128  # no index bits
  assert link_cost.bits_per_unit(4, 1, num_patches=1) == 128  # one patch needs no name
  assert link_cost.bits_per_unit(4, 1, num_patches=64) == 128 + 6  # exact power of two
  assert link_cost.bits_per_unit(4, 1, num_patches=65) == 128 + 7
  assert link_cost.bits_per_unit((2, 3), 3, bit_depth=10) == 2 * 3 * 3 * 10
  assert link_cost.bits_per_unit(np.int64(4), np.int64(1), num_patches=np.int64(49)) == 134


def test_units_for_bits_floors():
  assert link_cost.units_for_bits(134, 134) == 1
  assert link_cost.units_for_bits(267, 134) == 1
  assert link_cost.units_for_bits(268, 134) == 2
  assert link_cost.units_for_bits(6152 * 16 + 6151, 6152) == 16
  with pytest.raises(ValueError, match="budget_bits 133 is too small.*134"):
    link_cost.units_for_bits(133, 134)
  with pytest.raises(ValueError, match="bits_per_unit 0"):
    link_cost.units_for_bits(100, 0)


def test_latency():
  assert link_cost.latency_ms(60e3, 60e3) == pytest.approx(1000.0)
  assert link_cost.latency_ms(134 * 8, 1e6) == pytest.approx(1.072)
  np.testing.assert_allclose(link_cost.latency_ms(np.array([1e6, 2e6]), 1e6), [1000.0, 2000.0])
  with pytest.raises(ValueError, match="rate_bps 0"):
    link_cost.latency_ms(100, 0)


def test_channel_table():
  rows = link_cost.channel_table([4, 49], 134, {"slow": 1e3, "fast": 1e6})
  assert rows == [
      dict(budget=4, bits=536, latency_ms_slow=pytest.approx(536.0),
           latency_ms_fast=pytest.approx(0.536)),
      dict(budget=49, bits=6566, latency_ms_slow=pytest.approx(6566.0),
           latency_ms_fast=pytest.approx(6.566))]
  default = link_cost.channel_table([8], 134)
  assert set(default[0]) == {"budget", "bits"} | {f"latency_ms_{c}" for c in link_cost.CHANNELS}
  assert all(r > 0 for r in link_cost.CHANNELS.values())


@pytest.mark.parametrize("kw,match", [
    (dict(patch_size=0, channels=1), "patch_size 0"),
    (dict(patch_size=4, channels=0), "channels 0"),
    (dict(patch_size=4, channels=1, bit_depth=2.5), "bit_depth 2.5"),
    (dict(patch_size=4, channels=1, num_patches=0), "num_patches 0"),
])
def test_bits_per_unit_errors(kw, match):
  with pytest.raises(ValueError, match=match):
    link_cost.bits_per_unit(**kw)


def test_parse_rates():
  assert link_cost.parse_rates("") == link_cost.CHANNELS
  assert link_cost.parse_rates("a=1e3, b=20") == {"a": 1e3, "b": 20.0}
  with pytest.raises(ValueError, match="report.rates item 'a:3' is not name=bits_per_second"):
    link_cost.parse_rates("a:3")
  with pytest.raises(ValueError, match="report.rates item 'a=0': the rate must be > 0"):
    link_cost.parse_rates("a=0")
