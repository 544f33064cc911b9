"""The "SAGE against the field" section on constructed rows: the verdict follows the paired
interval of rule - SAGE, budgets at N are left out, and the section is absent without a
field rule or without SAGE's comparison columns."""
import math
import types

import numpy as np

from sage_jax.report import against_field


def _row(method, budget, acc, diff=math.nan, lo=math.nan, hi=math.nan, p=math.nan, **more):
  return dict(method=method, budget=budget, offloaded_acc=acc, diff_vs_sage=diff,
              diff_vs_sage_lo=lo, diff_vs_sage_hi=hi, p_vs_sage=p, **more)


def _rows():
  return [
      _row("sage", 4, 0.50, 0.0, 0.0, 0.0, 1.0), _row("sage", 8, 0.60, 0.0, 0.0, 0.0, 1.0),
      _row("sage", 49, 0.80, 0.0, 0.0, 0.0, 1.0),
      _row("divprune", 4, 0.45, -0.05, -0.08, -0.02, 0.001),   # SAGE better
      _row("divprune", 8, 0.61, 0.01, -0.01, 0.03, 0.4),       # equal
      _row("divprune", 49, 0.80, 0.0, 0.0, 0.0, 1.0),
      _row("vispruner@0.25:cls_all", 4, 0.55, 0.05, 0.02, 0.08, 0.002),  # SAGE worse
      _row("vispruner@0.25:cls_all", 8, 0.60, 0.0, 0.0, 0.0, 1.0),       # equal (holds 0)
      _row("vispruner@0.25:cls_all", 49, 0.80, 0.0, 0.0, 0.0, 1.0),
      _row("topk", 4, 0.40), _row("topk", 8, 0.5), _row("topk", 49, 0.8)]


def test_verdicts_follow_the_paired_interval_and_skip_k_equal_n():
  labels = ["topk", "sage", "divprune", "vispruner@0.25:cls_all"]
  assert against_field.field_labels(labels) == ["divprune", "vispruner@0.25:cls_all"]
  summ = against_field.summary(_rows(), ["divprune", "vispruner@0.25:cls_all"], 49)
  assert summ == {"divprune": {"better": [4], "equal": [8], "worse": []},
                  "vispruner@0.25:cls_all": {"better": [], "equal": [8], "worse": [4]}}
  sentence = against_field.verdict_sentence(summ)
  assert sentence.startswith("SAGE is significantly better than a field rule in 1 of the 4 "
                             "(rule, budget) pairs below N, not significantly different in 2 "
                             "and significantly worse in 1")
  assert "`vispruner@0.25:cls_all` beats SAGE somewhere" in sentence
  assert "never beaten by `divprune`" in sentence


def test_an_undefined_interval_is_equal():
  assert against_field.verdict(_row("dart", 4, 0.5)) == "equal"


def test_section_tables_and_absence():
  rows = _rows()
  labels = ["topk", "sage", "divprune", "vispruner@0.25:cls_all"]
  text = against_field.section(rows, labels, 49)
  assert text.startswith("## SAGE against the field")
  assert "| `divprune` | 4 | -5.0 [-8.0, -2.0], p=0.001 | better |" in text
  assert "K=49" not in text
  assert against_field.section(rows, ["topk", "sage"], 49) == ""
  assert against_field.section(rows, ["topk", "divprune"], 49) == ""
  no_cols = [{k: v for k, v in r.items() if "vs_sage" not in k} for r in rows]
  assert against_field.section(no_cols, labels, 49) == ""


def test_frozen_rule_against_the_field_when_compared():
  rows = [dict(r, diff_vs_divprune=0.02, diff_vs_divprune_lo=0.01, diff_vs_divprune_hi=0.03,
               p_vs_divprune=0.01) for r in _rows() if r["method"] != "vispruner@0.25:cls_all"]
  text = against_field.section(rows, ["topk", "sage", "divprune"], 49, frozen="topk")
  assert "The frozen rule `topk` against each field rule" in text
  assert "| `divprune` | 4 | +2.0 [+1.0, +3.0], p=0.01 |" in text
  assert "frozen rule" not in against_field.section(rows, ["topk", "sage", "divprune"], 49)


def test_write_section_computes_its_own_paired_comparisons():
  """From records, without diff_vs_sage columns in the rows: divprune right on every offloaded
  image, SAGE on half of them -> rule - SAGE = +50 points, SAGE worse; rows stay as given."""
  m, labels, budgets = 40, ["sage", "divprune"], (4, 49)
  label = np.arange(m) % 3
  pred = np.zeros((m, 2, 2), np.int32)
  pred[:, 1, :] = label[:, None]                    # divprune: always right
  pred[:, 0, :] = np.where(np.arange(m) % 2 == 0, label, label + 1)[:, None]  # sage: half
  records = dict(server_pred=pred, label=label, offloaded=np.ones(m, bool))
  plan = types.SimpleNamespace(
      labels=labels, budgets=budgets, num_patches=49, condition_bits=((0.0, 8, 134),),
      report=types.SimpleNamespace(n_boot=200, beyond=None))
  rows = [dict(method=r, budget=b, offloaded_acc=float((pred[:, i, j] == label).mean()))
          for i, r in enumerate(labels) for j, b in enumerate(budgets)]
  text = against_field.write_section(rows, records, plan)
  assert "| `divprune` | 4 | +50.0 [" in text and "| worse |" in text
  assert "diff_vs_sage" not in rows[0]  # the results' rows keep their columns
