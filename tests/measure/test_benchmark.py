"""sage_jax.benchmark (configs/benchmark.py): a smoke run at tiny shapes, and its PyTorch reference against sage_jax.

The reference is only worth timing if it computes what sage_jax computes: its forwards, its
selections (same indices, in the same order) and its sweep's answers are checked here on the
same random weights and inputs (continuous random values, so no ties).
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sage_jax.measure import benchmark
from sage_jax.measure import harness
from sage_jax.measure import torch_reference
from sage_jax import rules

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

torch.set_num_threads(2)


@pytest.mark.slow
def test_smoke_run_has_every_row(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "sage_jax.main", "--config=configs/benchmark.py:fmnist",
       "--config.batch=4", "--config.repeats=1", "--config.warmup=0",
       "--config.min_seconds=0", "--config.budgets=4", "--config.matmul_size=128",
       "--config.scale.images=0",  # the sweep at scale: test_device_bench.py
       f"--workdir={tmp_path}", "--compile_cache=off"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "benchmark.json").read_text())
  assert result["complete"] and result["rows"][0]["torch_device"] == "cpu"
  assert "| matmul fp32 128x128 |" in (tmp_path / "benchmark.md").read_text()
  rows = [r for r in result["rows"] if r["table"] == "benchmark"]
  expected = {"matmul fp32 128x128", "edge forward", "server forward K=4",
              "sage % of server K=4", "full sweep 5x1, 2/4 off",
              "sweep, threshold rules 2x1", "full sweep, server rows run", "compile edge step",
              "compile server K=4", "compile sweep step K=4", "compile sweep step ceiling",
              "compile sweep step select"}  # the slotted rules' one program for every K
  expected |= {f"select {rule} K=4" for rule in torch_reference.TORCH_RULES}
  assert {r["name"] for r in rows} == expected
  assert len(rows) == len(expected)
  for r in rows:
    assert r["name"] in proc.stdout
    assert r["jax"] > 0, r
    if not r["name"].startswith("compile"):
      assert r["torch"] > 0, r
    if r["unit"] in ("img/s", "GFLOP/s"):
      assert r["ratio"] > 0, r
    if "forward" in r["name"]:
      for key in ("gflop_per_image", "jax_gflops", "torch_gflops", "jax_peak_pct",
                  "torch_peak_pct"):
        assert r[key] > 0, (r, key)


@pytest.mark.slow
@pytest.mark.parametrize("shape,n,d", [("fmnist", 49, 48), ("deit", 196, 192)])
def test_torch_selections_equal_sage_jax(shape, n, d):
  rng = np.random.default_rng(n)
  b = 6
  imp = jax.nn.softmax(2.0 * rng.standard_normal((b, n)).astype(np.float32), -1)
  tokens = rng.standard_normal((b, n, d)).astype(np.float32)
  imp_t, tokens_t = torch.from_numpy(np.array(imp)), torch.from_numpy(tokens)
  plan = harness.shape_plan(shape, torch_reference.TORCH_RULES, [1])
  cap_free = 0
  for rule in plan.rules:
    name, kw = rule.name, rule.kwargs
    for k in (1, n // 4, n):
      want = rules.select_batch(name, imp, jnp.asarray(tokens), jnp.arange(b), k, **kw)
      got = torch_reference.torch_select(name, imp_t, tokens_t, k, kw)
      if name in torch_reference.THRESHOLD_RULES:
        for i in range(b):
          kept = np.asarray(want.keep_idx[i])[np.asarray(want.keep_mask[i])]
          np.testing.assert_array_equal(got[i].numpy(), kept, err_msg=f"{rule} K={k} image {i}")
          cap_free += len(kept) < k
      else:
        np.testing.assert_array_equal(got.numpy(), np.asarray(want.keep_idx),
                                      err_msg=f"{rule} K={k}")
  assert cap_free > 0  # the threshold rules were also checked where the budget does not bind


@pytest.fixture(scope="module")
def setup():
  return benchmark.make_setup(harness.shape_plan("fmnist", torch_reference.TORCH_RULES, [12],
                                                batch=6, server_batch=6))


@pytest.mark.slow
def test_torch_forwards_equal_sage_jax(setup):
  su = setup
  edge_params, server_params = su.pipe.edge_params, su.pipe.server_params
  t_edge, t_server = su.torch_models
  want = su.pipe.steps.edge(edge_params, su.images)
  want["importance"] = want["importance"]["cls_attention"]
  with torch.inference_mode():
    got = torch_reference.torch_edge(t_edge, su.images_t)
  for key, tol in (("importance", 1e-6), ("tokens", 1e-4), ("uncertainty", 1e-5)):
    np.testing.assert_allclose(got[key].numpy(), want[key], atol=tol, err_msg=key)
  keep = jax.lax.top_k(want["importance"], 8)[1]
  logits = su.server.apply({"params": server_params}, su.images, keep)[0]
  with torch.inference_mode():
    got_logits = t_server(su.images_t, torch.from_numpy(np.array(keep)).long())[0]
  np.testing.assert_allclose(got_logits.numpy(), logits, atol=1e-4)


@pytest.mark.slow
def test_reference_sweep_answers_equal_sage_jax(setup):
  """Both sweep structures offload the same images and give the same server answers."""
  su = setup
  plan, n_off = su.pipe.plan, 2
  rules, budgets = plan.labels, plan.budgets
  outs = benchmark.jax_sweep(su.pipe, su.images, n_off)[1]
  specs = [(r.name, r.kwargs) for r in plan.rules]
  with torch.inference_mode():
    preds = torch_reference.torch_sweep(*su.torch_models, su.images_t, specs, budgets, n_off)[0]
  want = [outs[j]["server_pred"][i] for i in range(len(rules)) for j in range(len(budgets))]
  for (rule, k), w, p in zip([(r, k) for r in rules for k in budgets], want, preds):
    got = torch.cat(p) if isinstance(p, list) else p
    np.testing.assert_array_equal(got.numpy(), w, err_msg=f"{rule} K={k}")


@pytest.mark.slow
def test_torch_bf16_autocast_close_to_sage_jax_bf16():
  """The GPU configuration's numerics (bf16 activations, float32 weights), here on the CPU:
  torch under bf16 autocast against sage_jax with compute_dtype=bfloat16."""
  su = benchmark.make_setup(harness.shape_plan("fmnist", ["topk"], [12], "bfloat16", 6, 6))
  want = su.pipe.steps.edge(su.pipe.edge_params, su.images)
  device = torch_reference.resolve_device("auto", "cpu")
  with torch.inference_mode(), torch_reference.autocast(device, "bfloat16"):
    got = torch_reference.torch_edge(su.torch_models[0], su.images_t)
    keep = jax.lax.top_k(want["importance"]["cls_attention"], 8)[1]
    got_logits = su.torch_models[1](su.images_t, torch.from_numpy(np.array(keep)).long())[0]
  logits = su.server.apply({"params": su.pipe.server_params}, su.images, keep)[0]
  assert got_logits.dtype == torch.bfloat16  # autocast ran the head in bf16
  np.testing.assert_allclose(got["importance"].float().numpy(),
                             want["importance"]["cls_attention"], atol=3e-3)
  np.testing.assert_allclose(got["uncertainty"].float().numpy(), want["uncertainty"], atol=3e-2)
  # Logits of std about 2 (harness.random_params' head): bf16's ~0.4% per rounding, summed
  # over the blocks, is a few hundredths.
  np.testing.assert_allclose(got_logits.float().numpy(), logits, atol=6e-2)


def test_resolve_device_on_a_cpu_host():
  assert torch_reference.resolve_device("auto", "cpu").type == "cpu"
  assert torch_reference.resolve_device("cpu", "gpu").type == "cpu"
  with pytest.raises(ValueError, match="allowed: auto, cpu, cuda"):
    torch_reference.resolve_device("tpu", "cpu")
  if not torch.cuda.is_available():
    with pytest.raises(ValueError, match="'cuda' is not available here"):
      torch_reference.resolve_device("cuda", "gpu")
    assert torch_reference.resolve_device("auto", "gpu").type == "cpu"
