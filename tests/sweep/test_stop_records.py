"""What the records keep for the stop signals (issue 37): the server's log-softmax of every
signal rule at every budget of the progressive schedule, and the edge's, against plain
forwards of the same selections; the plan's checks of the stop-signal config."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax import defaults
from sage_jax import importance
from sage_jax import rules
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(overrides)
  return c


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.slow  # a sweep through the shipped models
def test_records_keep_the_signal_rules_log_softmax_at_the_schedule():
  """Budgets out of order, signal rules out of the rules' order, several server batches:
  server_logp[image, j, s] is the log-softmax of the server run on signal rule j's own
  selection at the s-th budget of the sorted schedule; edge_logp the edge's."""
  c = _config(rules="topk,sage,diversity", budgets="16,4,8,32", batch_size=16,
              server_batch_size=8)
  c.report.progressive.signal_rules = "diversity,topk"
  plan = plan_lib.make(c)
  assert plan.report.progressive.schedule == (4, 8, 16)
  rs = np.random.RandomState(0)
  images = rs.randn(32, 28, 28, 1).astype(np.float32)
  batches = [dict(image=images[s:s + 16], label=np.zeros(16, np.int32),
                  index=np.arange(s, s + 16, dtype=np.int32), valid=np.ones(16, bool))
             for s in (0, 16)]
  models = pipeline.load_models(plan)
  records, _ = pipeline.evaluate(pipeline.build(plan, models), batches, threshold=-1.0)
  assert records["server_logp"].shape == (32, 2, 3, 10)
  assert records["server_logp"].dtype == records["edge_logp"].dtype == np.float16
  edge_logits, out = models.edge.apply({"params": models.edge_params}, jnp.asarray(images))
  np.testing.assert_allclose(records["edge_logp"], _log_softmax(edge_logits), atol=2e-2,
                             rtol=2e-3)
  imp = jax.vmap(importance.get(plan.importance))(out)
  forward = jax.jit(lambda x, i, m: models.server.apply({"params": models.server_params},
                                                        x, i, m)[0])
  for j, label in enumerate(("diversity", "topk")):
    rule = plan.rules[plan.labels.index(label)]
    for s, k in enumerate((4, 8, 16)):
      sel = rules.select_batch(rule.name, imp, out["tokens"], jnp.arange(32), k, plan.seed,
                               **rule.kwargs)
      want = _log_softmax(forward(jnp.asarray(images), sel.keep_idx, sel.keep_mask))
      np.testing.assert_allclose(records["server_logp"][:, j, s], want, atol=2e-2, rtol=2e-3,
                                 err_msg=f"{label} K={k}")
      col = plan.budgets.index(k)
      np.testing.assert_allclose(np.exp(records["server_logp"][:, j, s].astype(float).max(-1)),
                                 records["server_conf"][:, plan.labels.index(label), col],
                                 atol=2e-3)


def test_no_signal_rules_keep_no_log_probabilities():
  c = _config(rules="topk", budgets="4,8")
  c.report.progressive.signal_rules = ""
  plan = plan_lib.make(c)
  records = pipeline._stacked(plan, {k: [] for k in ("server_pred", "edge_pred")})
  assert not pipeline._keeps_logp(plan) and "server_logp" not in records


@pytest.mark.parametrize("overrides,message", [
    (dict(signal_rules="topk,sagee"), "report.progressive.signal_rules 'sagee' is not allowed; "
                                      "name rules this sweep runs (topk, sage), auto, all or ''"),
    (dict(stopping=dict(mode="dev")), "report.progressive.stopping.mode 'dev' is not allowed; "
                                      "give '' (fronts only), fit (development half) or frozen "
                                      "(reporting half)"),
    (dict(stopping=dict(patience="0,2")), "report.progressive.stopping.patience 0.0 is not "
                                          "allowed; a patience is a whole number of steps >= 1"),
    (dict(stopping=dict(deltas="0.05,1")), "report.progressive.stopping.deltas 1.0 is not "
                                           "allowed; a risk is in (0, 1)"),
    (dict(stopping=dict(epsilon=0.0)), "report.progressive.stopping.epsilon 0.0 is not "
                                       "allowed; it must be in (0, 1)"),
    (dict(stopping=dict(mode="frozen")), "report.progressive.stopping.frozen () is not allowed; "
                                         "mode frozen needs the choices made on the "
                                         "development half"),
    (dict(stopping=dict(mode="frozen", frozen=(("temperature", "sage", 0.7),))),
     "report.progressive.stopping.frozen entry ('temperature', 'sage', 0.7) is not allowed; "
     "this signal needs the rule's frozen temperatures"),
    (dict(stopping=dict(mode="frozen", frozen=(("vibes", "sage", 0.7),))),
     "report.progressive.stopping.frozen entry ('vibes', 'sage', 0.7) is not allowed; signals: "),
    (dict(stopping=dict(temperatures=(("sage", (1.0, 1.0)),))),
     "report.progressive.stopping.temperatures entry ('sage', (1.0, 1.0)) is not allowed; give "
     "3 temperatures > 0, one per step of the schedule"),
    (dict(goal_budget=49, stopping=dict(mode="fit")),
     "report.progressive.goal_budget 49 is not allowed; mode fit needs a goal on the schedule "
     "(4, 8, 16)"),
])
def test_stop_signal_config_errors_are_one_line(overrides, message):
  c = _config(rules="topk,sage", budgets="4,8,16,49")
  c.report.progressive.update(dict(signal_rules="all", goal_budget=16))
  c.report.progressive.update(overrides)
  with pytest.raises(ValueError) as e:
    plan_lib.make(c)
  assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)
