import numpy as np
import pytest

from sage_jax.sweep import offload
from sage_jax.sweep import plan


def test_measures_known_answers():
  uniform = np.zeros((1, 8), np.float32)
  sure = np.array([[100.0, 0, 0, 0]], np.float32)
  np.testing.assert_allclose(offload.min_entropy(uniform), [3.0], atol=1e-5)
  np.testing.assert_allclose(offload.entropy(uniform), [3.0], atol=1e-5)
  np.testing.assert_allclose(offload.min_entropy(sure), [0.0], atol=1e-5)
  p = np.array([0.5, 0.3, 0.2])
  logits = np.log(p)[None].astype(np.float32)
  np.testing.assert_allclose(offload.min_entropy(logits), [1.0], atol=1e-5)
  np.testing.assert_allclose(offload.entropy(logits), [-(p * np.log2(p)).sum()], atol=1e-5)
  np.testing.assert_allclose(offload.neg_margin(logits), [-0.2], atol=1e-5)


def test_margin_threshold_sign():
  thr = offload.gate_threshold(plan.Gate("margin", 0.3, 0.0))
  logits = np.log(np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]], np.float32))
  # margins 0.2 (< 0.3: offload) and 0.85 (keep)
  np.testing.assert_array_equal(np.asarray(offload.neg_margin(logits)) > thr, [True, False])


def test_threshold_of_each_gate():
  assert offload.gate_threshold(plan.Gate("min_entropy", 0.6, 0.0)) == 0.6
  assert offload.gate_threshold(plan.Gate("entropy", 1.5, 0.0)) == 1.5
  u = np.arange(8.0)
  assert offload.gate_threshold(plan.Gate("fraction", 0.0, 0.25), lambda: u) == 5.0  # 6, 7 offload


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1 / 3, 0.5, 1.0])
def test_calibrate_fraction_offloads_exact_share(fraction):
  scores = np.random.default_rng(0).random(99)
  thr = offload.calibrate_fraction(scores, fraction)
  assert (scores > thr).sum() == round(fraction * 99)
  assert scores[scores > thr].min(initial=np.inf) >= scores[scores <= thr].max(initial=-np.inf)


def test_bad_measure_and_fraction():
  with pytest.raises(ValueError, match="unknown offload uncertainty 'maxprob'"):
    offload.get_uncertainty("maxprob")
  with pytest.raises(ValueError, match="fraction 1.5"):
    offload.calibrate_fraction(np.zeros(3), 1.5)
