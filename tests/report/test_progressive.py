"""Progressive offloading from records (sage_jax/report/progressive.py): hand-computed answers; the
rule whose set grows with K (paper.sage_nested). The units sent so far against a set
computation: tests/sweep/test_pipeline.py."""
import jax
import numpy as np
import pytest

from sage_jax.report import progressive
from sage_jax.rules import paper

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


def test_agree_stop_waits_for_a_repeated_answer():
  pred = np.array([[3, 1, 2, 5], [3, 4, 2, 6], [3, 4, 7, 5]])
  # confident at 0.5: [0, 1, -, 0]; the answer repeats at steps [1, 2, 1, -]
  np.testing.assert_array_equal(progressive.stop_step(CONFIDENCE, 0.5, pred), [1, 2, 2, 2])
  np.testing.assert_array_equal(progressive.stop_step(CONFIDENCE, 0.0, pred), [1, 2, 1, 2])
  r = progressive.evaluate(CORRECT, CONFIDENCE, UNITS, 0.5, pred)
  assert (r["accuracy"], r["mean_units"], r["mean_rounds"]) == (1.0, (8 + 16 + 14 + 20) / 4,
                                                               (2 + 3 + 3 + 3) / 4)


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


# One program for every budget at once (each static): op by op, the greedy loops compile
# again at every call (1.5 to 4 s a seed against 1 s for the program).
_NESTED_EVERY_K = jax.jit(lambda imp, emb: [paper.sage_nested(imp, emb, None, k)
                                            for k in range(1, 17)])
POOLS = ((0.5, 4), (0.25, 2), (1.0, 8))  # (pool_frac, K): P = 8, 4, 16 = 2K
_NESTED_AND_PLAIN = jax.jit(lambda imp, emb: [
    (paper.sage_nested(imp, emb, None, k, pool_frac=pool_frac),
     paper.sage(imp, emb, None, k, pool_ratio=2.0)) for pool_frac, k in POOLS])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sage_nested_sets_grow_with_the_budget(seed):
  importance, embeddings = _example(seed=seed)
  previous = set()
  for k, s in enumerate(_NESTED_EVERY_K(importance, embeddings), 1):
    idx = np.asarray(s.keep_idx)[np.asarray(s.keep_mask)]
    assert len(idx) == k == len(set(idx.tolist()))
    assert previous <= set(idx.tolist()), f"the set at K={k} drops a unit sent at K={k - 1}"
    previous = set(idx.tolist())
  assert k == 16


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sage_nested_equals_sage_where_their_pools_agree(seed):
  importance, embeddings = _example(seed=seed)
  for nested, plain in _NESTED_AND_PLAIN(importance, embeddings):
    np.testing.assert_array_equal(np.asarray(nested.keep_idx), np.asarray(plain.keep_idx))


def test_sage_nested_continues_max_min_outside_the_pool():
  # Pool = the 2 most attended of 4 (identical directions); the third pick is the patch
  # farthest from the whole pool, the orthogonal one, whatever its attention.
  importance = np.array([0.9, 0.8, 0.7, 0.1], np.float32)
  embeddings = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1]], np.float32)
  s = jax.jit(paper.sage_nested, static_argnums=(3, 4))(importance, embeddings, None, 3, 0.5)
  assert np.asarray(s.keep_idx).tolist() == [0, 1, 3]


def test_sage_nested_refuses_a_bad_pool_frac():
  importance, embeddings = _example()
  with pytest.raises(ValueError, match="pool_frac 0 is not allowed"):
    paper.sage_nested(importance, embeddings, None, 4, pool_frac=0)


def test_points_and_goal_on_constructed_records():
  from sage_jax import defaults
  from sage_jax.sweep import plan as plan_lib
  c = defaults.sweep_config()
  c.rules, c.budgets, c.report.n_boot = "topk,sage", "4,8,16,49", 50
  c.report.progressive.update(dict(thresholds="0.5,0.9", goal_budget=16, goal_share=0.6))
  plan = plan_lib.make(c)
  assert plan.report.progressive.schedule == (4, 8, 16)
  # 4 offloaded images (labels 0..3); [image, rule, budget] over the budgets 4, 8, 16, 49.
  pred = np.zeros((4, 2, 4), np.int32)
  pred[:, 0] = [[0, 0, 0, 0], [9, 1, 1, 1], [9, 9, 2, 2], [9, 9, 9, 3]]  # topk
  pred[:, 1] = [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [9, 9, 3, 3]]  # sage
  conf = np.full((4, 2, 4), 0.95, np.float32)
  conf[1:, 0, :2] = 0.6   # topk: unsure at K = 4 and 8 for images 1-3 (stops there at 0.5)
  conf[3, 1, :2] = 0.2    # sage: unsure about image 3 until K = 16
  units = np.broadcast_to(np.array([4, 8, 16, 49], np.int16), (4, 2, 4)).copy()
  units[:, 1, 1:3] = [12, 22]  # sage's sets change with K: the union grows faster
  off = np.array([True, True, False, True, True])
  records = dict(label=np.array([0, 1, 7, 2, 3]), offloaded=off, server_pred=pred,
                 server_conf=conf, units_sent=units)
  pts = {(p["rule"], p["stop"], p["threshold"]): p for p in progressive.pareto_points(records, plan)}
  p = pts[("topk", "confidence", 0.5)]  # every image stops at K = 4: right on image 0 only
  assert (p["accuracy"], p["mean_units"], p["mean_rounds"]) == (0.25, 4.0, 1.0)
  p = pts[("topk", "confidence", 0.9)]  # image 0 at K = 4, the rest at the last step K = 16
  assert (p["accuracy"], p["mean_units"], p["mean_rounds"]) == (0.75, 13.0, 2.5)
  assert p["mean_bits"] == 13.0 * 134
  assert p["latency_ms_nb_iot"] == pytest.approx(13.0 * 134 / 60e3 * 1e3 + 2.5 * 500.0)
  p = pts[("sage", "confidence", 0.5)]  # images 0-2 at K = 4, image 3 at K = 16 (22 units)
  assert (p["accuracy"], p["mean_units"], p["mean_rounds"]) == (1.0, 8.5, 1.5)
  p = pts[("sage", "agree+confidence", 0.5)]  # the answer repeats first at K = 8, image 3 K = 16
  assert (p["accuracy"], p["mean_units"], p["mean_rounds"]) == (1.0, (12 * 3 + 22) / 4, 2.25)
  rows = [dict(method=m, budget=16, offloaded_acc=a, mean_units=16.0)
          for m, a in (("topk", 0.75), ("sage", 1.0))]
  g = progressive.goal(records, plan, rows, list(pts.values()))
  assert g["fixed"]["method"] == "sage" and g["target"] == pytest.approx(9.6)
  assert g["point"]["rule"] == "sage" and g["point"]["mean_units"] == 8.5 and g["reached"]
  assert g["paired"]["diff"] == 0.0
  assert g["oracle"] == 8.5  # sage's answers equal its last ones from K = 4 (image 3: K = 16)


def test_fewest_units_line_names_no_threshold_that_never_stops_early(tmp_path):
  """Issue 34: a threshold above every confidence the server gives stops no image early (the
  point is the last budget's); the "fewest units" line must not name it as if it did."""
  from sage_jax import defaults
  from sage_jax.sweep import plan as plan_lib
  c = defaults.sweep_config()
  c.rules, c.budgets, c.report.n_boot = "topk,sage", "4,8,16,49", 50
  c.report.progressive.update(dict(thresholds="0.5,0.9,0.95", goal_budget=16, goal_share=0.6))
  plan = plan_lib.make(c)
  # 4 offloaded images (labels 0..3); [image, rule, budget] over the budgets 4, 8, 16, 49.
  pred = np.full((4, 2, 4), 9, np.int32)        # sage is never right
  pred[:, 0, 2:] = np.arange(4)[:, None]         # topk is right from K = 16
  conf = np.full((4, 2, 4), 0.92, np.float32)    # the server's largest confidence: 0.92
  units = np.broadcast_to(np.array([4, 8, 16, 49], np.int16), (4, 2, 4)).copy()
  records = dict(label=np.arange(4), offloaded=np.ones(4, bool), server_pred=pred,
                 server_conf=conf, units_sent=units)
  rows = [dict(method=m, budget=k, offloaded_acc=float(m == "topk" and k >= 16),
               mean_units=float(k), ceiling_acc=1.0, offloaded_acc_lo=0.0, offloaded_acc_hi=1.0)
          for m in ("topk", "sage") for k in (4, 8, 16, 49)]
  text, pts = progressive.section(records, plan, rows, str(tmp_path))
  # Only a threshold no image reaches (0.95) gives 100%: every image climbs to K = 16 (as do
  # patience 2 and 3: with three steps they cannot stop before the last).
  assert {(p["stop"], p["threshold"], p["mean_rounds"]) for p in pts if p["accuracy"] == 1.0} == {
      ("confidence", 0.95, 3), ("agree+confidence", 0.95, 3), ("patience", 2, 3),
      ("patience", 3, 3)}
  goal_line = next(line for line in text.splitlines() if line.startswith("- Goal"))
  assert "0.95" not in goal_line, goal_line
  assert ("No point that stops an image before the last budget K=16 reaches 100.0%; "
          "every image climbing to it does (`topk`, 16.00 units)." in goal_line), goal_line
