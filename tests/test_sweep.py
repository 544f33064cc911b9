"""End-to-end sweeps with the shipped checkpoints on the first few hundred test images."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fmnist_sweep
from sage_jax import data, selection, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED_SIZE = ("random", "grid", "topk", "diversity", "sage", "bat", "tome", "swap@0.25",
              "swap@0.5")


def _config(**overrides):
  c = fmnist_sweep.get_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.num_images = 300
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  rows = sweep.run(_config(budgets="4,16,49"), workdir, progress=False)
  return rows, workdir


def test_all_rows_and_files(full_run):
  rows, workdir = full_run
  assert [(r["method"], r["budget"]) for r in rows] == [
      (m, b) for m in fmnist_sweep.get_config().methods.split(",") for b in (4, 16, 49)]
  with open(os.path.join(workdir, "results.csv")) as f:
    csv_rows = list(csv.DictReader(f))
  assert len(csv_rows) == len(rows) and csv_rows[0]["method"] == "random"
  for col in ("offloaded_acc", "ceiling_acc", "pct_of_ceiling", "overall_acc", "edge_acc",
              "offload_rate", "mean_units", "comm_cost", "n_images", "n_offloaded"):
    assert col in csv_rows[0]
  with open(os.path.join(workdir, "results.json")) as f:
    assert len(json.load(f)) == len(rows)
  for png in ("curves.png", "acc_vs_bits.png", "acc_vs_latency.png", "selection_map.png"):
    assert os.path.getsize(os.path.join(workdir, png)) > 10_000, png
  report_md = open(os.path.join(workdir, "report.md")).read()
  for needle in ("## The paper's claims on this run", "SAGE vs top-K", "![selection map]",
                 "## Swap experiment", "| 0.25 |"):
    assert needle in report_md, needle


def test_numbers_are_sane(full_run):
  rows, _ = full_run
  r0 = rows[0]
  assert r0["n_images"] == 300 and 0 < r0["n_offloaded"] < 300
  for r in rows:
    for k in ("offloaded_acc", "ceiling_acc", "overall_acc", "edge_acc", "offload_rate",
              "comm_cost", "cap_bind_rate"):
      assert 0.0 <= r[k] <= 1.0, (r["method"], r["budget"], k, r[k])
    assert 1 <= r["mean_units"] <= r["budget"]
    assert 0.0 < r["coverage"] <= 1.0
    assert r["offloaded_acc_lo"] <= r["offloaded_acc"] <= r["offloaded_acc_hi"]
    if r["method"] in FIXED_SIZE:
      assert r["mean_units"] == r["budget"]
      if r["budget"] == 49:  # every patch sent: exactly the ceiling, every cell covered
        assert r["offloaded_acc"] == r["ceiling_acc"], r["method"]
        assert r["coverage"] == 1.0
  # The hybrid with all patches sent is at least as good as the edge alone on this data.
  at_n = [r for r in rows if r["budget"] == 49 and r["method"] == "topk"][0]
  assert at_n["overall_acc"] >= at_n["edge_acc"]


def test_per_image_records_independent_of_batch_sizes():
  kw = dict(methods="random,topk,sage,threshold", budgets="8,16,49", num_images=150)
  ref = sweep.evaluate_config(_config(batch_size=64, server_batch_size=64, **kw))
  for bs in (7, 1):
    other = sweep.evaluate_config(_config(batch_size=bs, server_batch_size=bs, **kw))
    assert ref.keys() == other.keys()
    for k in ref:  # decisions exactly; float scores up to summation order
      if k in ("score", "threshold", "attn_entropy"):
        np.testing.assert_allclose(ref[k], other[k], rtol=1e-5, err_msg=k)
      else:
        np.testing.assert_array_equal(ref[k], other[k], err_msg=f"{k}, batch size {bs}")


def test_fraction_gate_offloads_the_asked_share():
  rec = sweep.evaluate_config(_config(methods="topk", budgets="8", num_images=120,
                                      gate=dict(measure="fraction", eta=0.2, fraction=0.25)))
  assert rec["offloaded"].sum() == 30
  # Offloaded images are the least confident ones.
  assert rec["score"][rec["offloaded"]].min() > rec["score"][~rec["offloaded"]].max()


def test_method_specs():
  c = _config()
  assert sweep.method_spec("swap@0.5", c) == ("swap", dict(swap_frac=0.5))
  assert sweep.method_spec("sage", c) == ("sage", dict(pool_ratio=2.0))
  assert sweep.method_spec("sage@4", c) == ("sage", dict(pool_ratio=4.0))
  with pytest.raises(ValueError, match="rule 'tome' takes no @value"):
    sweep.method_spec("tome@3", c)
  with pytest.raises(ValueError, match="'x' is not a number"):
    sweep.method_spec("swap@x", c)


def test_swap_zero_is_topk_per_image():
  rec = sweep.evaluate_config(_config(methods="topk,swap@0", budgets="4,12", num_images=100))
  np.testing.assert_array_equal(rec["server_pred"][:, 0], rec["server_pred"][:, 1])


def test_budget_bits_become_units():
  c = _config(budget_bits="536,1100,6566")  # 134 bits per 4x4 8-bit patch + 6 index bits
  assert sweep.prepare(c)[1] == [4, 8, 49]


def test_coverage_cells():
  cells = sweep.coverage_cells(196, 7)  # 14x14 patches, 7x7 cells of 2x2 patches
  assert cells[0] == cells[1] == cells[14] == cells[15] == 0 and cells[2] == 1
  assert np.bincount(cells).tolist() == [4] * 49
  assert sorted(set(sweep.coverage_cells(49, 4).tolist())) == list(range(16))


def test_coverage_on_constructed_selections():
  cells = jnp.asarray(sweep.coverage_cells(196, 7))
  keep = jnp.asarray([[0, 1, 14, 15],      # one 2x2 cell
                      [0, 2, 4, 6],        # four cells in the top row
                      [0, 2, 195, 194]])   # three cells; the last slot is masked out below
  mask = jnp.asarray([[True] * 4, [True] * 4, [True, True, True, False]])
  np.testing.assert_allclose(sweep.coverage(keep, mask, cells, 49), [1 / 49, 4 / 49, 3 / 49])


def test_evidence_sets_forget_order_and_padding():
  idx = jnp.asarray([[[3, 1, 0], [1, 3, 4]], [[2, 2, 2], [0, 1, 2]]])  # [2, 2, K=3]
  mask = jnp.asarray([[[True, True, False], [True, True, False]],
                      [[True, False, False], [True, True, True]]])
  got = np.asarray(sweep.evidence_sets(idx, mask, 5))
  want = [[[0, 1, 0, 1, 0], [0, 1, 0, 1, 0]], [[0, 0, 1, 0, 0], [1, 1, 1, 0, 0]]]
  np.testing.assert_array_equal(got, np.asarray(want, bool))


def test_first_match_points_at_the_first_equal_set():
  n, b = 4, 1
  known = np.zeros((2, b, n), bool)
  known[0] = True            # the ceiling: every patch
  known[1, 0, 0] = True      # a previous budget's row: patch 0
  rows = np.zeros((4, b, n), bool)
  rows[0, 0, 0] = True       # = known row 1
  rows[1, 0, [1, 2]] = True  # new
  rows[2, 0, [1, 2]] = True  # = row 1 of this budget (index 2 + 1)
  rows[3] = True             # = the ceiling
  source, fresh = sweep._first_match(jnp.asarray(rows), jnp.asarray(known))
  np.testing.assert_array_equal(np.asarray(source)[:, 0], [1, 3, 3, 0])
  np.testing.assert_array_equal(np.asarray(fresh)[:, 0], [False, True, False, False])


@pytest.mark.parametrize("fresh_rows", [[], [5], [0, 3, 4, 7, 8, 11], list(range(12))])
def test_forward_fresh_computes_every_fresh_row(fresh_rows):
  r, b, k = 3, 4, 2
  images = jnp.arange(b, dtype=jnp.float32).reshape(b, 1, 1, 1)
  keep_idx = jnp.arange(r * b * k, dtype=jnp.int32).reshape(r, b, k) % 7
  keep_mask = jnp.ones((r, b, k), bool)
  # A stand-in server whose answer names the row: image value + sum of the kept indices.
  forward = lambda x, idx, mask: jax.nn.one_hot(
      x[:, 0, 0, 0].astype(jnp.int32) + (idx * mask).sum(-1), 64)
  fresh = np.zeros(r * b, bool)
  fresh[fresh_rows] = True
  pred, finite = jax.jit(lambda f: sweep._forward_fresh(forward, images, keep_idx, keep_mask, f))(
      jnp.asarray(fresh.reshape(r, b)))
  want = np.arange(b)[None] + np.asarray(keep_idx).sum(-1)
  np.testing.assert_array_equal(np.asarray(pred).ravel()[fresh], want.ravel()[fresh])
  assert np.asarray(finite).all()


def test_budget_steps_reuse_seen_evidence_and_match_a_plain_forward():
  """Every prediction equals the server run on that rule's own selection, while the server
  skips what it has already seen: every rule at K = N, threshold beyond its demand."""
  c = _config(methods="topk,threshold,sum_threshold,diversity,sage", budgets="4,16,49")
  methods, budgets, (edge_model, edge_params), (model, params), _ = sweep.prepare(c)
  images = next(data.eval_batches(c.dataset, 40))["image"]
  out = sweep.make_edge_step(edge_model, c.importance, c.gate.measure)(edge_params, images)
  batch = dict(image=jnp.asarray(images), index=jnp.arange(40, dtype=jnp.int32),
               importance=out["importance"], tokens=out["tokens"], valid=jnp.ones(40, bool))
  steps = sweep.make_server_steps(model, methods, c)
  _, outs = sweep.run_budgets(*steps, params, batch, budgets)
  specs = [sweep.method_spec(m, c) for m in methods]
  for k, o in zip(budgets, outs):
    for r, (name, kw) in enumerate(specs):
      s = selection.select_batch(name, batch["importance"], batch["tokens"], batch["index"], k,
                                 c.seed, **kw)
      want = model.apply({"params": params}, batch["image"], s.keep_idx, s.keep_mask)[0]
      np.testing.assert_array_equal(o["server_pred"][r], want.argmax(-1), err_msg=f"{name} {k}")
  fresh = {k: np.asarray(o["fresh"]) for k, o in zip(budgets, outs)}
  assert fresh[4][0].all() and not fresh[4][1:3].any()  # threshold rules = top-K at K = 4
  assert not fresh[49][[0, 3, 4]].any()                  # K = N: the ceiling
  demand = np.asarray(outs[2]["demand"][1])  # threshold: the same set at 16 and 49 iff <= 16
  assert 0 < (demand <= 16).sum() < len(demand)
  np.testing.assert_array_equal(fresh[49][1], (demand > 16) & (demand < 49))
