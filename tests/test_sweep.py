"""End-to-end sweeps with the shipped checkpoints on the first few hundred test images."""
import csv
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import fmnist_sweep
from sage_jax import sweep

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
  kw = dict(methods="random,sage,threshold", budgets="8", num_images=150)
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
