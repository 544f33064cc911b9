import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.report import metrics
from sage_jax.report import stats
from sage_jax.sweep import server_step

# The CSV's public format, pinned here (not read back from metrics.COLUMNS, the code under test).
COLUMNS = ("method", "budget", "offloaded_acc", "offloaded_acc_lo", "offloaded_acc_hi",
           "ceiling_acc", "ceiling_acc_lo", "ceiling_acc_hi", "pct_of_ceiling",
           "overall_acc", "overall_acc_lo", "overall_acc_hi", "edge_acc", "offload_rate",
           "mean_units", "comm_cost", "bits_per_request", "cap_bind_rate", "coverage",
           "acc_low_attn_entropy", "acc_high_attn_entropy",
           "diff_vs_topk", "diff_vs_topk_lo", "diff_vs_topk_hi", "p_vs_topk",
           "n_images", "n_offloaded")
UPLINK_COLUMNS = ("erasure", "pixel_bits", "agree_full", "no_arrival_rate", "kl_full")
DIFF_COLUMNS = ("diff_vs_topk", "diff_vs_topk_lo", "diff_vs_topk_hi", "p_vs_topk")


def _records():
  # 5 images; 2 offloaded (indices 1, 3). Rules "r" and "topk", two budgets.
  sp = np.array([[[1, 1], [1, 0]], [[0, 3], [3, 3]]])  # [m=2, R=2, nB=2]
  return dict(
      index=np.arange(5), label=np.array([0, 1, 2, 3, 4]),
      edge_pred=np.array([0, 0, 2, 0, 1]), score=np.zeros(5),
      offloaded=np.array([False, True, False, True, False]),
      attn_entropy=np.array([0.0, 2.0, 0.0, 1.0, 0.0]),
      off_index=np.array([1, 3]), ceiling_pred=np.array([1, 3]),
      server_pred=sp,
      units=np.array([[[2, 4], [2, 4]], [[1, 4], [2, 4]]]),
      demand=np.array([[[5, 4], [2, 4]], [[1, 4], [2, 4]]]),
      coverage=np.array([[[0.25, 0.5], [0.25, 0.5]], [[0.5, 1.0], [0.5, 1.0]]], np.float32))


def test_summarize_known_answers():
  rows = metrics.summarize(_records(), ["r", "topk"], [2, 4], num_patches=4, bits_per_unit=10,
                           n_boot=200)
  a, b, t2, t4 = rows
  assert metrics.COLUMNS == COLUMNS
  assert all(tuple(r) == COLUMNS + UPLINK_COLUMNS for r in rows)
  assert (a["erasure"], a["pixel_bits"]) == (0.0, 8)
  assert (a["n_images"], a["n_offloaded"], a["offload_rate"]) == (5, 2, 0.4)
  assert a["edge_acc"] == pytest.approx(2 / 5)        # images 0 and 2
  assert a["ceiling_acc"] == 1.0 and (a["ceiling_acc_lo"], a["ceiling_acc_hi"]) == (1.0, 1.0)
  assert a["offloaded_acc"] == 0.5 and b["offloaded_acc"] == 1.0
  assert a["offloaded_acc_lo"] == 0.0 and a["offloaded_acc_hi"] == 1.0
  assert a["pct_of_ceiling"] == pytest.approx(50.0)
  # edge right on non-offloaded images 0, 2 (+ server right on 1 or on 1 and 3)
  assert a["overall_acc"] == pytest.approx(3 / 5) and b["overall_acc"] == pytest.approx(4 / 5)
  assert a["mean_units"] == 1.5 and a["bits_per_request"] == 15.0
  assert a["comm_cost"] == pytest.approx(1.5 / 4 * 0.4)
  assert a["cap_bind_rate"] == 0.5 and b["cap_bind_rate"] == 0.0
  assert a["coverage"] == pytest.approx(0.375) and b["coverage"] == pytest.approx(0.75)
  # Entropy split: image 3 (entropy 1) is the low half, image 1 (entropy 2) the high half.
  assert a["acc_low_attn_entropy"] == 0.0 and a["acc_high_attn_entropy"] == 1.0
  # vs topk at budget 2: r right on image 1 only, topk on 1 and 3 -> diff -0.5.
  assert a["diff_vs_topk"] == -0.5 and t2["diff_vs_topk"] == 0.0 and t2["p_vs_topk"] == 1.0
  # budget 4: r right on both, topk on image 3 only.
  assert b["diff_vs_topk"] == 0.5 and b["p_vs_topk"] == pytest.approx(1.0)


def test_summarize_rejects_misaligned_records():
  r = _records()
  r["off_index"] = np.array([3, 1])
  with pytest.raises(AssertionError, match="out of order"):
    metrics.summarize(r, ["r", "topk"], [2, 4], 4, 10)


def test_coverage_cells():
  cells = server_step.coverage_cells(196, 7)  # 14x14 patches, 7x7 cells of 2x2 patches
  assert cells[0] == cells[1] == cells[14] == cells[15] == 0 and cells[2] == 1
  assert np.bincount(cells).tolist() == [4] * 49
  assert sorted(set(server_step.coverage_cells(49, 4).tolist())) == list(range(16))


def test_coverage_on_constructed_selections():
  cells = jnp.asarray(server_step.coverage_cells(196, 7))
  keep = jnp.asarray([[0, 1, 14, 15],      # one 2x2 cell
                      [0, 2, 4, 6],        # four cells in the top row
                      [0, 2, 195, 194]])   # three cells; the last slot is masked out below
  mask = jnp.asarray([[True] * 4, [True] * 4, [True, True, True, False]])
  np.testing.assert_allclose(server_step.coverage(keep, mask, cells, 49), [1 / 49, 4 / 49, 3 / 49])


def _same(x, y):
  return x == y or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))


def test_summarize_without_topk():
  """No baseline among the methods: the diff/p columns are NaN, every other column unchanged."""
  r = _records()
  with_topk = metrics.summarize(r, ["r", "topk"], [2, 4], 4, 10, n_boot=200)[:2]
  for k in ("server_pred", "units", "demand", "coverage"):
    r[k] = r[k][:, :1]  # only rule "r"
  rows = metrics.summarize(r, ["r"], [2, 4], 4, 10, n_boot=200)
  assert len(rows) == 2 and all(tuple(row) == COLUMNS + UPLINK_COLUMNS for row in rows)
  for row, ref in zip(rows, with_topk):
    assert all(np.isnan(row[c]) for c in DIFF_COLUMNS), row
    assert all(_same(row[c], ref[c]) for c in COLUMNS if c not in DIFF_COLUMNS), (row, ref)
    assert not any(np.isnan(ref[c]) for c in DIFF_COLUMNS)  # they were numbers with topk


def test_summarize_nothing_offloaded():
  """No image offloaded: rows are still produced; offloaded-image statistics are NaN."""
  r = _records()
  r["offloaded"] = np.zeros(5, bool)
  for k in ("off_index", "ceiling_pred"):
    r[k] = r[k][:0]
  for k in ("server_pred", "units", "demand", "coverage"):
    r[k] = r[k][:0]
  rows = metrics.summarize(r, ["r", "topk"], [2, 4], 4, 10, n_boot=200)
  assert [(row["method"], row["budget"]) for row in rows] == [
      ("r", 2), ("r", 4), ("topk", 2), ("topk", 4)]
  edge_correct = r["edge_pred"] == r["label"]  # right on images 0 and 2
  lo, hi = stats.bootstrap_ci(edge_correct, 200)
  for row in rows:
    assert tuple(row) == COLUMNS + UPLINK_COLUMNS
    assert (row["n_images"], row["n_offloaded"], row["offload_rate"]) == (5, 0, 0.0)
    assert row["edge_acc"] == row["overall_acc"] == pytest.approx(2 / 5)
    assert (row["overall_acc_lo"], row["overall_acc_hi"]) == (lo, hi) and lo < 0.4 < hi
    assert row["comm_cost"] == 0.0
    nan = ("offloaded_acc", "offloaded_acc_lo", "offloaded_acc_hi", "ceiling_acc",
           "ceiling_acc_lo", "ceiling_acc_hi", "pct_of_ceiling", "mean_units",
           "bits_per_request", "cap_bind_rate", "coverage", "acc_low_attn_entropy",
           "acc_high_attn_entropy", "diff_vs_topk", "diff_vs_topk_lo", "diff_vs_topk_hi",
           "p_vs_topk")  # no image to compare on: no p-value either
    assert all(np.isnan(row[c]) for c in nan), {c: row[c] for c in nan}


def test_agreement_and_kl_match_numpy_on_constructed_logits():
  rng = np.random.RandomState(0)
  full = rng.normal(size=(6, 5)).astype(np.float32)
  logits = full[None] + rng.normal(scale=2.0, size=(3, 6, 5)).astype(np.float32)
  got = {k: np.asarray(v) for k, v in server_step.answers(jnp.asarray(logits),
                                                         jnp.asarray(full)).items()}
  softmax = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(
      x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
  p, q = softmax(full.astype(np.float64))[None], softmax(logits.astype(np.float64))
  np.testing.assert_allclose(got["kl"], (p * np.log(p / q)).sum(-1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got["conf"], q.max(-1), rtol=1e-5)
  np.testing.assert_array_equal(got["pred"], logits.argmax(-1))
  same = np.asarray(server_step.answers(jnp.asarray(full), jnp.asarray(full))["kl"])
  np.testing.assert_allclose(same, 0.0, atol=1e-6)
  cols = metrics.agreement_columns(got["pred"][1], np.array([0.5, np.nan, 1.5, 1.0, 0, 1]),
                                   full.argmax(-1))
  agree = logits[1].argmax(-1) == full.argmax(-1)
  assert cols["agree_full"] == np.mean(np.delete(agree, 1))  # the NaN (edge fallback) is left
  assert cols["kl_full"] == pytest.approx(4.0 / 5)           # out of both
  assert cols["no_arrival_rate"] == 1 / 6


def test_agree_full_is_over_the_server_answers_and_no_arrival_has_its_own_column():
  """Issue 34: where no sent unit arrives the edge's answer stands in server_pred (NaN KL);
  agree_full counts only the images the server answered, as kl_full does, and
  no_arrival_rate is the share left to the edge. Nothing lost: no_arrival_rate 0, agree_full
  over every image."""
  ceiling = np.array([0, 1, 2, 3])
  pred = np.array([0, 1, 9, 3])                # image 1: nothing arrived, the edge's answer
  kl = np.array([0.1, np.nan, 0.2, 0.3])
  cols = metrics.agreement_columns(pred, kl, ceiling)
  assert cols["agree_full"] == pytest.approx(2 / 3)  # images 0, 2, 3: agree on 0 and 3
  assert cols["no_arrival_rate"] == 0.25 and cols["kl_full"] == pytest.approx(0.2)
  cols = metrics.agreement_columns(pred, np.array([0.1, 0.4, 0.2, 0.3]), ceiling)
  assert (cols["agree_full"], cols["no_arrival_rate"]) == (0.75, 0.0)
  r = _records()
  r["kl_full"] = np.zeros((2, 2, 2), np.float32)
  r["kl_full"][0, 0, 0] = np.nan  # rule r at K=2: no unit of image 1 arrived (edge's answer 1)
  rows = metrics.summarize(r, ["r", "topk"], [2, 4], 4, 10, n_boot=50)
  assert tuple(rows[0]) == COLUMNS + UPLINK_COLUMNS
  assert [x["no_arrival_rate"] for x in rows] == [0.5, 0.0, 0.0, 0.0]
  # Image 3 only (answer 0, all patches 3); image 1's stand-in answer equals the all-patch
  # one and no longer counts as agreement.
  assert rows[0]["agree_full"] == 0.0 and rows[1]["agree_full"] == 1.0


def test_conditions_are_condition_major_and_compared_within_their_condition():
  r = _records()
  # Two uplink conditions: the second one's server columns swap the two rules.
  r["server_pred"] = np.concatenate([r["server_pred"], r["server_pred"][:, ::-1]], 1)
  r["kl_full"] = np.zeros((2, 4, 2), np.float32)
  conditions = [(0.0, 8, 10), (0.3, 4, 7)]
  rows = metrics.summarize(r, ["r", "topk"], [2, 4], 4, 10, n_boot=200, conditions=conditions)
  assert [(x["erasure"], x["pixel_bits"], x["method"], x["budget"]) for x in rows] == [
      (e, b, m, k) for e, b in ((0.0, 8), (0.3, 4)) for m in ("r", "topk") for k in (2, 4)]
  first, second = rows[:4], rows[4:]
  for a, b in zip(first, second[2:] + second[:2]):  # r under one is topk under the other
    assert a["offloaded_acc"] == b["offloaded_acc"]
  for a, b in zip(first[:2], second[:2]):  # so r - topk changes sign
    assert a["diff_vs_topk"] == -b["diff_vs_topk"] != 0
  assert second[0]["bits_per_request"] == first[0]["mean_units"] * 7  # bits of what was sent
  metrics.add_comparisons(rows, r, ["r", "topk"], [2, 4], ["r"], 200, conditions)
  assert all(x["diff_vs_r"] == 0 for x in rows if x["method"] == "r")
  assert rows[2]["diff_vs_r"] == -rows[0]["diff_vs_topk"]


def _random_records(n=80, rules=3, budgets=2, conditions=2, seed=0):
  rng = np.random.default_rng(seed)
  off = rng.random(n) < 0.4
  m = int(off.sum())
  label = rng.integers(0, 3, n)
  per_rule = lambda hi: rng.integers(0, hi, (m, rules, budgets))
  return dict(index=np.arange(n), label=label, edge_pred=rng.integers(0, 3, n),
              score=np.zeros(n), offloaded=off, attn_entropy=rng.random(n),
              off_index=np.arange(n)[off], ceiling_pred=rng.integers(0, 3, m),
              server_pred=rng.integers(0, 3, (m, conditions * rules, budgets)),
              units=per_rule(5), demand=per_rule(6), coverage=rng.random((m, rules, budgets)),
              kl_full=np.zeros((m, conditions * rules, budgets), np.float32))


def test_batched_intervals_equal_the_per_row_statistics():
  """summarize's and add_comparisons' intervals (all rows resampled together) equal each
  row's own bootstrap_ci / paired_bootstrap on its flags: the right column, its condition's
  baseline, the overall flags with the edge's answers."""
  r, labels, budgets = _random_records(), ["a", "topk", "b"], [2, 4]
  conditions = [(0.0, 8, 10), (0.3, 4, 7)]
  rows = metrics.summarize(r, labels, budgets, 4, 10, n_boot=150, conditions=conditions)
  metrics.add_comparisons(rows, r, labels, budgets, ["b"], 150, conditions)
  off = r["offloaded"]
  label_off = r["label"][off]
  for row, (u, i, j) in zip(rows, np.ndindex(2, 3, 2)):
    correct = r["server_pred"][:, 3 * u + i, j] == label_off
    overall = r["edge_pred"] == r["label"]
    overall[off] = correct
    ref, other = (r["server_pred"][:, 3 * u + k, j] == label_off for k in (1, 2))
    topk, vs_b = stats.paired_bootstrap(correct, ref, 150), stats.paired_bootstrap(
        correct, other, 150)
    assert (row["offloaded_acc_lo"], row["offloaded_acc_hi"]) == stats.bootstrap_ci(correct, 150)
    assert (row["overall_acc_lo"], row["overall_acc_hi"]) == stats.bootstrap_ci(overall, 150)
    assert [row[f"diff_vs_topk{s}"] for s in ("", "_lo", "_hi")] == list(topk.values())
    assert [row[f"diff_vs_b{s}"] for s in ("", "_lo", "_hi")] == list(vs_b.values())
    assert row["p_vs_b"] == stats.mcnemar(correct, other)["p_value"]
    assert all(type(row[c]) is float for c in ("offloaded_acc_lo", "diff_vs_topk", "diff_vs_b"))
