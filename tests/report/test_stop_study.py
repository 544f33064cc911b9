"""The stop signals' protocol (sage_jax/report/stop_study.py): fitted and chosen on a
development half, frozen, then only evaluated on a reporting half; constructed records."""
import dataclasses
import json
import re

import numpy as np
import pytest

from sage_jax import defaults
from sage_jax.report import progressive
from sage_jax.report import stop_study
from sage_jax.report import stopping
from sage_jax.sweep import plan as plan_lib

M, C = 400, 10
BUDGETS = (4, 8, 16, 49)


def _plan(mode, temperatures=(), frozen=()):
  c = defaults.sweep_config()
  c.rules, c.budgets, c.report.n_boot = "topk,sage", ",".join(map(str, BUDGETS)), 50
  c.report.progressive.update(dict(
      thresholds=",".join(f"{t / 20:g}" for t in range(21)), goal_budget=16, goal_share=0.6,
      signal_rules="all", stopping=dict(mode=mode, half=f"The {mode} half",
                                        temperatures=temperatures, frozen=frozen)))
  return plan_lib.make(c)


def _records(seed, sharpness):
  """M offloaded images; per rule and budget, logits favouring the label more as K grows,
  scaled by `sharpness` per rule (over- or under-confident servers)."""
  rng = np.random.RandomState(seed)
  label = rng.randint(0, C, M)
  logits = rng.randn(M, 2, 4, C)
  right = rng.rand(M, 2, 4) < np.array([0.45, 0.6, 0.75, 0.9])
  hit = np.where(right, label[:, None, None], rng.randint(0, C, (M, 2, 4)))
  np.put_along_axis(logits, hit[..., None], np.take_along_axis(logits, hit[..., None], -1) + 2.5,
                    -1)
  logits *= np.asarray(sharpness)[None, :, None, None]
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  edge = rng.randn(M, C) + 1.5 * np.eye(C)[label]
  units = np.broadcast_to(np.array(BUDGETS, np.int16), (M, 2, 4)).copy()
  units[:, 1, 1:3] += rng.randint(0, 4, (M, 2)).astype(np.int16)  # sage's sets change with K
  return dict(label=label, offloaded=np.ones(M, bool), server_pred=logits.argmax(-1),
              server_conf=np.exp(logp.max(-1)).astype(np.float32), units_sent=units,
              server_logp=logp[:, :, :3].astype(np.float16),
              edge_logp=(edge - np.log(np.exp(edge).sum(-1, keepdims=True))).astype(np.float16))


def _rows(records):
  """Fixed-budget rows of both rules (accuracy and mean units from the records)."""
  out = []
  for i, rule in enumerate(("topk", "sage")):
    for j, k in enumerate(BUDGETS):
      acc = float((records["server_pred"][:, i, j] == records["label"]).mean())
      out.append(dict(method=rule, budget=k, offloaded_acc=acc, ceiling_acc=0.9,
                      offloaded_acc_lo=acc, offloaded_acc_hi=acc,
                      mean_units=float(records["units_sent"][:, i, j].mean())))
  return out


def _frozen_literals(text):
  block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  scope = {}
  exec(block, scope)  # the literals report.md asks to paste into the config
  return scope["TEMPERATURES"], scope["FROZEN"]


def _temperature_stop(logp, temps, threshold):
  """Plain: the first step whose softmax(logp / T_step) has max >= threshold, else the last."""
  steps, images = logp.shape[:2]
  out = []
  for i in range(images):
    stop = steps - 1
    for s in range(steps):
      z = logp[s, i].astype(np.float64) / temps[s]
      p = np.exp(z - z.max())
      if (p / p.sum()).max() >= threshold:
        stop = s
        break
    out.append(stop)
  return np.asarray(out)


def test_choices_are_fitted_on_the_development_half_and_only_evaluated_on_the_other(tmp_path):
  dev = _records(0, sharpness=(2.0, 0.6))
  text, _ = progressive.section(dev, _plan("fit"), _rows(dev), str(tmp_path))
  assert "### Stop signals: the development half (fitted and chosen here)" in text
  temps, frozen = _frozen_literals(text)
  saved = json.loads((tmp_path / "stop_choices.json").read_text())
  assert [tuple(x) for x in saved["frozen"]] == list(frozen)
  assert {s for s, _, _ in frozen} >= {"confidence", "patience", "ltt@0.02", "ltt@0.05"}
  fitted = saved["temperatures"]  # every rule's; the literals keep those the choices use
  assert fitted["topk"][0] > 1.5 > fitted["sage"][0]  # over-confident, less so
  assert temps and all(tuple(fitted[rule]) == t for rule, t in temps)
  # The reporting half: another draw, with servers calibrated otherwise.
  rep = _records(1, sharpness=(1.0, 1.0))
  plan = _plan("frozen", temps, frozen)
  arrays = progressive.rule_arrays(rep, plan)
  refit = stop_study.temperatures(arrays, dataclasses.replace(
      plan.report.progressive.stopping, mode="fit"))
  used = stop_study.temperatures(arrays, plan.report.progressive.stopping)
  for rule, t in temps:
    np.testing.assert_array_equal(used[rule], t)
    assert np.abs(refit[rule] - np.asarray(t)).max() > 0.2  # refitting here would differ
  best, _ = stop_study.goal_of(_rows(rep), plan.report.progressive)
  rated = stop_study.evaluate(frozen, arrays, plan.report.progressive, used, best, 50)
  for (signal, rule, setting), r in zip(frozen, rated):
    a = arrays[rule]
    if signal.startswith("ltt@"):
      want = _temperature_stop(rep["server_logp"][:, ["topk", "sage"].index(rule)]
                               .transpose(1, 0, 2), dict(temps)[rule], setting)
      np.testing.assert_array_equal(r["stops"], want, err_msg=signal)
      changed = a["pred"][want, np.arange(M)] != a["pred"][-1]
      assert r["risk"] == changed.mean()
    want_acc = a["correct"][r["stops"], np.arange(M)].mean()
    assert r["accuracy"] == want_acc and r["threshold"] == setting
  text, _ = progressive.section(rep, plan, _rows(rep), str(tmp_path))
  assert "### Stop signals: the reporting half (frozen choices)" in text
  assert "Frozen for the reporting half" not in text
  assert re.search(r"`ltt@0.02` on `\w+` promised at most 2% of answers changed", text)


def test_the_criterion_prefers_reaching_the_goal_then_accuracy_within_the_target():
  pt = lambda s, acc, units: dict(stop=s, rule="r", threshold=0.5, accuracy=acc,
                                  mean_units=units)
  pts = [pt("a", 0.80, 12.0), pt("a", 0.78, 9.0), pt("b", 0.70, 5.0), pt("b", 0.76, 9.5),
         pt("c", 0.90, 20.0), pt("c", 0.60, 11.0)]
  chosen = stop_study.choose(pts, [], accuracy=0.77, target=10.0)
  # a: 0.78 with 9 units reaches 0.77 within 10; b: the most accurate within 10; c: none
  # within 10 but 11 units, the fewest.
  assert [(p["stop"], p["accuracy"]) for p in chosen] == [("a", 0.78), ("b", 0.76), ("c", 0.60)]
  chosen = stop_study.choose(pts[2:], [], accuracy=0.95, target=10.0)
  assert [(p["stop"], p["accuracy"]) for p in chosen] == [("b", 0.76), ("c", 0.60)]


def test_ltt_points_are_bonferroni_over_the_rules_on_the_temperature_score():
  dev = _records(2, sharpness=(1.5, 1.0))
  plan = _plan("fit")
  arrays = progressive.rule_arrays(dev, plan)
  temps = {"topk": np.array([1.5, 1.2, 1.0]), "sage": np.array([0.8, 1.0, 1.1])}
  pts = stop_study.ltt_points(arrays, plan.report.progressive, temps)
  assert [(p["stop"], p["rule"]) for p in pts] == [
      ("ltt@0.02", "topk"), ("ltt@0.02", "sage"), ("ltt@0.05", "topk"), ("ltt@0.05", "sage")]
  for p in pts:
    assert p["level"] == pytest.approx(0.1 / 2)
    delta = float(p["stop"].split("@")[1])
    a = arrays[p["rule"]]
    score = stopping.max_prob(a["logp"], temps[p["rule"]])
    want, _ = stopping.ltt_threshold(score, a["pred"], plan.report.progressive.thresholds,
                                     delta, 0.05)
    assert p["threshold"] == want


def test_a_goal_not_reached_is_said_with_the_gap_closed_to_the_oracle(tmp_path):
  rep = _records(3, sharpness=(1.0, 1.0))
  temps = (("topk", (1.0, 1.0, 1.0)),)
  frozen = (("patience", "sage", 1.0), ("confidence", "topk", 0.6), ("ltt@0.05", "topk", 0.9))
  text, _ = progressive.section(rep, _plan("frozen", temps, frozen), _rows(rep), str(tmp_path))
  line = next(x for x in text.splitlines() if x.startswith("Goal (issue 37)"))
  assert "**not reached**" in line and "The pick, `patience` 1 on `sage`" in line, line
  assert re.search(r"the pick closes -?\d+% of the accuracy gap \(pick minus confidence, "
                   r"paired: [+-]\d+\.\d points \[95% CI", line), line
