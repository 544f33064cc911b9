"""The jitted pipeline: evidence de-duplication, the fresh-row server loop, the budget steps."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.data import input_pipeline
from sage_jax import defaults
from sage_jax import rules
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib
from sage_jax.sweep import server_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(overrides)
  return c


def test_evidence_sets_forget_order_and_padding():
  idx = jnp.asarray([[[3, 1, 0], [1, 3, 4]], [[2, 2, 2], [0, 1, 2]]])  # [2, 2, K=3]
  mask = jnp.asarray([[[True, True, False], [True, True, False]],
                      [[True, False, False], [True, True, True]]])
  got = np.asarray(server_step.evidence_sets(idx, mask, 5))
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
  source, fresh = server_step._first_match(jnp.asarray(rows), jnp.asarray(known))
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
  logits = jax.jit(lambda f: server_step._forward_fresh(
      forward, images, keep_idx, keep_mask, f, 64))(jnp.asarray(fresh.reshape(r, b)))
  want = np.arange(b)[None] + np.asarray(keep_idx).sum(-1)
  pred = np.asarray(logits).argmax(-1).ravel()
  np.testing.assert_array_equal(pred[fresh], want.ravel()[fresh])


@pytest.mark.slow
def test_budget_steps_reuse_seen_evidence_and_match_a_plain_forward():
  """Every prediction equals the server run on that rule's own selection, while the server
  skips what it has already seen: every rule at K = N, threshold beyond its demand."""
  plan = plan_lib.make(_config(rules="topk,threshold,sum_threshold,diversity,sage",
                               budgets="4,16,49"))
  models = pipeline.load_models(plan)
  budgets, model, params = plan.budgets, models.server, models.server_params
  images = next(input_pipeline.eval_batches(plan.dataset, 40, 0, 40))["image"]
  steps = pipeline.make_steps(plan, models.edge, models.server)
  out = steps.edge(models.edge_params, images)
  batch = dict(image=jnp.asarray(images), index=jnp.arange(40, dtype=jnp.int32),
               importance=out["importance"], tokens=out["tokens"], valid=jnp.ones(40, bool))
  _, outs = server_step.run_budgets(steps, params, batch, budgets)
  forward = jax.jit(lambda p, x, i, m: model.apply({"params": p}, x, i, m)[0])  # plain forward
  for k, o in zip(budgets, outs):
    for r, rule in enumerate(plan.rules):
      s = rules.select_batch(rule.name, batch["importance"][rule.importance],
                                 batch["tokens"], batch["index"], k, plan.seed, **rule.kwargs)
      want = forward(params, batch["image"], s.keep_idx, s.keep_mask)
      np.testing.assert_array_equal(o["server_pred"][r], want.argmax(-1),
                                    err_msg=f"{rule.label} {k}")
  fresh = {k: np.asarray(o["fresh"]) for k, o in zip(budgets, outs)}
  assert fresh[4][0].all() and not fresh[4][1:3].any()  # threshold rules = top-K at K = 4
  assert not fresh[49][[0, 3, 4]].any()                  # K = N: the ceiling
  demand = np.asarray(outs[2]["demand"][1])  # threshold: the same set at 16 and 49 iff <= 16
  assert 0 < (demand <= 16).sum() < len(demand)
  np.testing.assert_array_equal(fresh[49][1], (demand > 16) & (demand < 49))


def test_server_calls_count_each_devices_chunks():
  fresh = np.zeros((2, 8), bool)  # 2 rules x 8 rows, 2 devices of 4 rows
  assert pipeline._server_calls(fresh, 2) == 0
  fresh[0, :3] = True             # device 0: 3 rows -> 1 call
  assert pipeline._server_calls(fresh, 1) == 1 and pipeline._server_calls(fresh, 2) == 1
  fresh[1, :4] = True             # device 0: 7 rows -> 2 calls of 4; device 1: none
  assert pipeline._server_calls(fresh, 2) == 2
  fresh[:, 4:] = True             # device 1: 8 rows -> 2 calls
  assert pipeline._server_calls(fresh, 2) == 2 and pipeline._server_calls(fresh, 1) == 2


@pytest.mark.slow
def test_uplink_conditions_match_a_plain_forward_on_what_arrives():
  """Each (rate, bits) condition's answer is the server run on the units that arrive (a numpy
  fate: u >= p) with its pixels on 2**bits levels; where none arrives, the edge's answer. The
  units sent so far are the union of the rule's sets (a set computation)."""
  plan = plan_lib.make(_config(rules="topk,sage,diversity", budgets="4,8",
                               uplink=dict(erasure="0,0.97", pixel_bits="8,2")))
  models = pipeline.load_models(plan)
  model, params, ds = models.server, models.server_params, plan.dataset
  images = next(input_pipeline.eval_batches(ds, 24, 0, 24))["image"]
  steps = pipeline.make_steps(plan, models.edge, models.server)
  out = steps.edge(models.edge_params, images)
  index = jnp.arange(100, 124, dtype=jnp.int32)
  batch = dict(image=jnp.asarray(images), index=index, importance=out["importance"],
               tokens=out["tokens"], valid=jnp.ones(24, bool), edge_pred=out["pred"])
  _, outs = server_step.run_budgets(steps, params, batch, plan.budgets)
  key = jax.random.fold_in(jax.random.PRNGKey(plan.seed), 0x6C6F7373)  # "loss"
  fates = np.stack([np.asarray(jax.random.uniform(jax.random.fold_in(key, int(i)), (49,)))
                    for i in index])
  forward = jax.jit(lambda x, i, m: model.apply({"params": params}, x, i, m)[0])
  sent = {r: [set() for _ in range(24)] for r in range(3)}
  fell_back = 0
  for k, o in zip(plan.budgets, outs):
    for r, rule in enumerate(plan.rules):
      s = rules.select_batch(rule.name, batch["importance"][rule.importance],
                                 batch["tokens"], index, k, plan.seed, **rule.kwargs)
      idx, mask = np.asarray(s.keep_idx), np.asarray(s.keep_mask)
      for b in range(24):
        sent[r][b] |= set(idx[b][mask[b]].tolist())
      np.testing.assert_array_equal(o["units_sent"][r], [len(x) for x in sent[r]])
      for c, (rate, bits) in enumerate(plan.uplink.conditions):
        arrived = mask & (np.take_along_axis(fates, idx, 1) >= rate)
        pixels = (np.asarray(images) * ds.std[0] + ds.mean[0]) * 255
        if bits != 8:
          step = 255 / (2 ** bits - 1)
          pixels = np.round(np.clip(pixels, 0, 255) / step) * step
        want = forward((pixels / 255 - ds.mean[0]) / ds.std[0], idx, arrived).argmax(-1)
        none = ~arrived.any(-1)
        want = np.where(none, np.asarray(out["pred"]), want)
        fell_back += none.sum()
        np.testing.assert_array_equal(o["server_pred"][c * 3 + r], want,
                                      err_msg=f"{rule.label} K={k} p={rate} b={bits}")
        assert np.isnan(np.asarray(o["kl_full"][c * 3 + r])[none]).all()
  assert fell_back > 0  # at p = 0.97 some images received nothing
