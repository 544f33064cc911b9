"""Progressive offloading from records (sage_jax/progressive.py): hand-computed answers and
set computations; the rule whose set grows with K (selection.sage_nested)."""
import numpy as np
import pytest

from sage_jax import progressive, selection

# [step, image]: 3 budgets of the schedule, 4 offloaded images.
CORRECT = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 1]], bool)
CONFIDENCE = np.array([[0.9, 0.2, 0.1, 0.5], [0.95, 0.8, 0.3, 0.6], [0.1, 0.9, 0.4, 0.99]])
UNITS = np.array([[4, 4, 4, 4], [8, 9, 8, 10], [16, 16, 14, 20]])


def test_stops_at_the_first_confident_step_or_at_the_last():
  np.testing.assert_array_equal(progressive.stop_step(CONFIDENCE, 0.7), [0, 1, 2, 2])
  np.testing.assert_array_equal(progressive.stop_step(CONFIDENCE, 0.5), [0, 1, 2, 0])
  np.testing.assert_array_equal(progressive.stop_step(CONFIDENCE, 2.0), [2, 2, 2, 2])
  np.testing.assert_array_equal(progressive.stop_step(CONFIDENCE, 0.0), [0, 0, 0, 0])


def test_evaluate_by_hand():
  r = progressive.evaluate(CORRECT, CONFIDENCE, UNITS, 0.7)
  # stops [0, 1, 2, 2]: correct 1, 1, 1, 1; units 4, 9, 14, 20; rounds 1, 2, 3, 3
  assert r["accuracy"] == 1.0
  assert r["mean_units"] == (4 + 9 + 14 + 20) / 4
  assert r["mean_rounds"] == 9 / 4
  r = progressive.evaluate(CORRECT, CONFIDENCE, UNITS, 0.5)
  # stops [0, 1, 2, 0]: correct 1, 1, 1, 1; units 4, 9, 14, 4
  assert (r["accuracy"], r["mean_units"], r["mean_rounds"]) == (1.0, 31 / 4, 7 / 4)
  r = progressive.evaluate(CORRECT, CONFIDENCE, UNITS, 0.0)  # everything stops at once
  assert (r["accuracy"], r["mean_units"], r["mean_rounds"]) == (0.5, 4.0, 1.0)


def test_cumulative_units_is_the_size_of_the_union_so_far():
  rng = np.random.RandomState(0)
  masks = rng.rand(4, 7, 12) < 0.3
  expected = [[len(set().union(*(np.flatnonzero(masks[t, i]) for t in range(s + 1))))
               for i in range(7)] for s in range(4)]
  np.testing.assert_array_equal(progressive.cumulative_units(masks), expected)
  nested = np.zeros((3, 1, 6), bool)
  nested[0, 0, :2] = nested[1, 0, :4] = nested[2, 0, :] = True
  changing = np.zeros((3, 1, 6), bool)
  changing[0, 0, [0, 1]] = changing[1, 0, [2, 3, 4, 5]] = changing[2, 0, [0, 5]] = True
  np.testing.assert_array_equal(progressive.cumulative_units(nested)[:, 0], [2, 4, 6])
  np.testing.assert_array_equal(progressive.cumulative_units(changing)[:, 0], [2, 6, 6])


def test_pareto_against_brute_force():
  assert progressive.pareto([(4, .5), (2, .5), (3, .7), (3, .6), (5, .6), (6, .8)]) == [
      (2, .5), (3, .7), (6, .8)]
  rng = np.random.RandomState(1)
  points = [(int(u), float(a)) for u, a in zip(rng.randint(0, 10, 40), rng.rand(40).round(1))]
  beaten = lambda p: any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)
  expected = sorted({p for p in points if not beaten(p)})
  assert progressive.pareto(points) == expected


def _example(n=16, d=5, seed=0):
  rng = np.random.RandomState(seed)
  return rng.rand(n).astype(np.float32), rng.randn(n, d).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sage_nested_sets_grow_with_the_budget(seed):
  importance, embeddings = _example(seed=seed)
  previous = set()
  for k in range(1, 17):
    s = selection.sage_nested(importance, embeddings, None, k)
    idx = np.asarray(s.keep_idx)[np.asarray(s.keep_mask)]
    assert len(idx) == k == len(set(idx.tolist()))
    assert previous <= set(idx.tolist()), f"the set at K={k} drops a unit sent at K={k - 1}"
    previous = set(idx.tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sage_nested_equals_sage_where_their_pools_agree(seed):
  importance, embeddings = _example(seed=seed)
  for pool_frac, k in ((0.5, 4), (0.25, 2), (1.0, 8)):  # P = 8, 4, 16 = 2K
    nested = selection.sage_nested(importance, embeddings, None, k, pool_frac=pool_frac)
    plain = selection.sage(importance, embeddings, None, k, pool_ratio=2.0)
    np.testing.assert_array_equal(np.asarray(nested.keep_idx), np.asarray(plain.keep_idx))


def test_sage_nested_continues_max_min_outside_the_pool():
  # Pool = the 2 most attended of 4 (identical directions); the third pick is the patch
  # farthest from the whole pool, the orthogonal one, whatever its attention.
  importance = np.array([0.9, 0.8, 0.7, 0.1], np.float32)
  embeddings = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1]], np.float32)
  s = selection.sage_nested(importance, embeddings, None, 3, pool_frac=0.5)
  assert np.asarray(s.keep_idx).tolist() == [0, 1, 3]


def test_sage_nested_refuses_a_bad_pool_frac():
  importance, embeddings = _example()
  with pytest.raises(ValueError, match="pool_frac 0 is not allowed"):
    selection.sage_nested(importance, embeddings, None, 4, pool_frac=0)
