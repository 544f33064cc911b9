"""End-to-end sweeps with the shipped checkpoints on the first few hundred test images."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax import defaults
from sage_jax import rules
from sage_jax.sweep import loop
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXED_SIZE = ("random", "grid", "topk", "diversity", "sage", "bat", "tome", "swap@0.25",
              "swap@0.5")


def _config(**overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.num_images = 300
  c.update(overrides)
  return c


def records(config):
  plan = plan_lib.make(config)
  return loop.sweep_chunks(plan, pipeline.load_models(plan))[0]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  rows = loop.run(_config(budgets="4,16,49"), workdir, progress=False).rows
  return rows, workdir


@pytest.mark.slow
def test_all_rows_and_files(full_run):
  rows, workdir = full_run
  assert [(r["method"], r["budget"]) for r in rows] == [
      (m, b) for m in defaults.sweep_config().rules.split(",") for b in (4, 16, 49)]
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


@pytest.mark.slow
def test_timing_breakdown_adds_up(full_run):
  rows, workdir = full_run
  with open(os.path.join(workdir, "timing.json")) as f:
    t = json.load(f)
  segments = t["segments_s"]
  assert set(segments) <= {"setup", "compile", "input_wait", "device_wait", "host", "write"}
  assert abs(sum(segments.values()) - t["wall_s"]) <= 0.05 * t["wall_s"], t
  assert t["images"] == 300 and t["edge_batches"] == 1 and t["batch_size"] == 500
  n_rules = len(defaults.sweep_config().rules.split(","))
  assert t["server_rows_run"] < t["server_rows_all"] == n_rules * 3 * rows[0]["n_offloaded"]
  assert t["server_calls"]["ceiling"] == t["server_batches"] >= 1
  assert set(t["server_calls"]) == {"ceiling", "4", "16", "49"}


@pytest.mark.slow
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


@pytest.mark.slow
def test_per_image_records_independent_of_batch_sizes():
  """Under lossy and coarse uplink conditions too: a unit's fate is its image's and patch's."""
  kw = dict(rules="random,topk,sage,threshold", budgets="8,49", num_images=80,
            uplink=dict(erasure="0.4", pixel_bits="3"))  # one lossy, coarse condition
  ref = records(_config(batch_size=64, server_batch_size=64, **kw))
  for bs, chunk in ((7, 30), (1, 2000)):
    other = records(_config(batch_size=bs, server_batch_size=bs, chunk_size=chunk, **kw))
    assert ref.keys() == other.keys()
    for k in ref:  # decisions exactly; float scores up to summation order
      if k in pipeline.MAP_KEYS:  # each chunk keeps its first map examples; the run the first
        ref[k], other[k] = ref[k][:6], other[k][:6]
      if ref[k].dtype == np.float16:  # one float16 step: a 1e-6 move can cross a rounding
        np.testing.assert_allclose(ref[k].astype(np.float32), other[k].astype(np.float32),
                                   rtol=2.0**-10, atol=2.0**-14, err_msg=k)
      elif ref[k].dtype.kind == "f":
        np.testing.assert_allclose(ref[k], other[k], rtol=1e-4, atol=1e-6, err_msg=k)
      else:
        np.testing.assert_array_equal(ref[k], other[k], err_msg=f"{k}, batch size {bs}")


@pytest.mark.slow
def test_fraction_gate_offloads_the_asked_share():
  rec = records(_config(rules="topk", budgets="8", num_images=120,
                        gate=dict(uncertainty="fraction", eta=0.2, fraction=0.25)))
  assert rec["offloaded"].sum() == 30
  # Offloaded images are the least confident ones.
  assert rec["score"][rec["offloaded"]].min() > rec["score"][~rec["offloaded"]].max()


def test_runs_of_consecutive_chunks():
  assert list(loop._runs([0, 1, 2, 5, 7, 8])) == [[0, 1, 2], [5], [7, 8]]
  assert list(loop._runs([])) == []


@pytest.mark.slow
def test_swap_zero_is_topk_per_image():
  rec = records(_config(rules="topk,swap@0", budgets="4,12", num_images=100))
  np.testing.assert_array_equal(rec["server_pred"][:, 0], rec["server_pred"][:, 1])


def skip_top(importance, embeddings, key, budget, skip=1):
  """A rule with a parameter, written as a user would: the K patches after the `skip` most
  attended (skip=0 is top-K)."""
  del embeddings, key
  n = importance.shape[0]
  if not 0 <= skip <= n - budget:
    raise ValueError(f"skip {skip} is not allowed; it must be in 0..N-K = {n - budget}")
  order = jax.lax.top_k(importance, n)[1]
  return rules.Selection(order[skip:skip + budget].astype(jnp.int32),
                             jnp.ones(budget, bool), jnp.int32(budget))


@pytest.mark.slow
def test_new_rule_is_one_function_and_one_registry_entry(monkeypatch, tmp_path):
  monkeypatch.setitem(rules.RULES, "skip_top", rules.Rule(skip_top, primary="skip"))
  c = _config(rules="topk,skip_top@0,skip_top@3", budgets="4,8", num_images=60)
  rows = loop.run(c, str(tmp_path / "a"), progress=False).rows
  assert [r["method"] for r in rows] == ["topk"] * 2 + ["skip_top@0"] * 2 + ["skip_top@3"] * 2
  at = {(r["method"], r["budget"]): r for r in rows}
  for k in (4, 8):
    assert at[("skip_top@0", k)]["offloaded_acc"] == at[("topk", k)]["offloaded_acc"]
  c = _config(rules="skip_top", budgets="4,8", num_images=60)
  c.rule_params.skip_top.skip = 3  # the registry's parameter, reached through the config
  again = loop.run(c, str(tmp_path / "b"), progress=False).rows
  for r in again:  # the same rows, but for the comparison with top-K (not run here)
    want = dict(at[("skip_top@3", r["budget"])], method="skip_top")
    # kl_full: the same logits, computed in another position of a server chunk
    assert r.pop("kl_full") == pytest.approx(want.pop("kl_full"), rel=1e-5)
    assert {k: v for k, v in r.items() if "topk" not in k} == {
        k: v for k, v in want.items() if "topk" not in k}
  with np.load(tmp_path / "a" / "per_image.npz") as a, np.load(tmp_path / "b" /
                                                                "per_image.npz") as b:
    np.testing.assert_array_equal(a["server_pred"][:, 2], b["server_pred"][:, 0])
    assert (a["server_pred"][:, 1] != a["server_pred"][:, 2]).any()  # skip 3 is not top-K
  with pytest.raises(ValueError, match="skip 9 is not allowed"):
    loop.run(_config(rules="skip_top@9", budgets="41"), str(tmp_path / "c"))
