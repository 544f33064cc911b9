"""report.md's "SAGE against the field" section: each of the field's 2025 selection rules
(`rules/field.py`) against SAGE on the same offloaded images, budget by budget, and a
verdict computed from the paired intervals (docs/field_rules.md)."""
from sage_jax.report import metrics
from sage_jax.report import tables

FIELD = ("divprune", "vispruner", "cdpruner", "dart")  # the rules of rules/field.py
REF = "sage"


def field_labels(labels) -> list:
  """The run's labels whose rule is one of the field's (`vispruner@0.25:cls_all` too)."""
  return [m for m in labels if m.split(":")[0].split("@")[0] in FIELD]


def verdict(row) -> str:
  """SAGE's side of one paired comparison: "better" where the interval of rule - SAGE lies
  below 0, "worse" where it lies above, "equal" where it holds 0 (or is undefined)."""
  _, lo, hi, _ = (row[c] for c in metrics.comparison_columns(REF))
  return "better" if hi < 0 else "worse" if lo > 0 else "equal"


def _budgets(rows, num_patches) -> list:
  """Budgets below N (at N every rule sends every patch)."""
  return sorted({r["budget"] for r in rows if r["budget"] < num_patches})


def summary(rows, labels, num_patches) -> dict:
  """{rule: {"better": [K...], "equal": [...], "worse": [...]}} from SAGE's side."""
  by = {(r["method"], r["budget"]): r for r in rows}
  out = {}
  for m in labels:
    out[m] = {"better": [], "equal": [], "worse": []}
    for b in _budgets(rows, num_patches):
      out[m][verdict(by[(m, b)])].append(b)
  return out


def _ks(budgets) -> str:
  return ", ".join(f"K={b}" for b in budgets) or "none"


def verdict_sentence(summ) -> str:
  """One sentence over every (rule, budget) pair."""
  count = {v: sum(len(s[v]) for s in summ.values()) for v in ("better", "equal", "worse")}
  total = sum(count.values())
  never_worse = [m for m, s in summ.items() if not s["worse"]]
  beats = [m for m, s in summ.items() if s["worse"]]
  return (f"SAGE is significantly better than a field rule in {count['better']} of the {total} "
          f"(rule, budget) pairs below N, not significantly different in {count['equal']} and "
          f"significantly worse in {count['worse']}; "
          + (f"{', '.join(f'`{m}`' for m in beats)} beat{'s' if len(beats) == 1 else ''} SAGE "
             "somewhere" if beats else "no field rule beats SAGE at any budget")
          + (f", and SAGE is never beaten by {', '.join(f'`{m}`' for m in never_worse)}"
             if beats and never_worse else "") + ".")


def _frozen_part(by, frozen, field, budgets) -> list:
  """The beyond study's frozen rule against each field rule (report.compare_to lists them)."""
  if not frozen or not all(f"diff_vs_{m}" in by[(frozen, budgets[0])] for m in field):
    return []
  cells = [[f"`{m}`", str(b), metrics.paired_text(by[(frozen, b)], m)]
           for m in field for b in budgets]
  return ["", f"The frozen rule `{frozen}` against each field rule (frozen - rule, points, 95% "
          "interval, McNemar p):", "",
          tables.markdown(["field rule", "K", f"`{frozen}` - rule"], cells)]


def section(rows, labels, num_patches, frozen=None) -> str:
  """The section, or "" when the run has no field rule or SAGE is not a comparison; with
  the beyond study's frozen rule, that rule against the field too."""
  field = field_labels(labels)
  if not field or REF not in labels or f"diff_vs_{REF}" not in rows[0]:
    return ""
  by = {(r["method"], r["budget"]): r for r in rows}
  budgets = _budgets(rows, num_patches)
  acc = tables.markdown(
      ["rule"] + [f"K={b}" for b in budgets],
      [[f"`{m}`"] + [f"{100 * by[(m, b)]['offloaded_acc']:.1f}" for b in budgets]
       for m in [REF] + field], range(1, len(budgets) + 1))
  paired = tables.markdown(
      ["rule", "K", "rule - SAGE", "SAGE is"],
      [[f"`{m}`", str(b), metrics.paired_text(by[(m, b)], REF), verdict(by[(m, b)])]
       for m in field for b in budgets])
  summ = summary(rows, field, num_patches)
  per_rule = tables.markdown(
      ["rule", "SAGE better", "equal", "SAGE worse"],
      [[f"`{m}`", _ks(s["better"]), _ks(s["equal"]), _ks(s["worse"])] for m, s in summ.items()])
  return "\n".join([
      "## SAGE against the field", "",
      "The field's training-free selection rules of 2025 (DivPrune, VisPruner, CDPruner, "
      "DART; docs/field_rules.md), each with its default parameters on this run's importance "
      "score, against SAGE on the same offloaded images. Verdict from SAGE's side: better "
      "where the paired 95% bootstrap interval of rule - SAGE lies below 0, worse where it "
      "lies above, equal where it holds 0.", "",
      f"**Verdict.** {verdict_sentence(summ)}", "",
      "Accuracy on the offloaded images (%):", "", acc, "",
      per_rule, "",
      "Every paired comparison (points, 95% interval, McNemar p):", "", paired,
      *_frozen_part(by, frozen, field, budgets)])


def write_section(rows, records, plan) -> str:
  """The section for a run (its reference condition's rows), with its own paired comparisons
  against SAGE (and the frozen rule's against each field rule) on copies of the rows, so the
  results files keep the columns report.compare_to asks for."""
  field = field_labels(plan.labels)
  if not field or REF not in plan.labels:
    return ""
  rows = [dict(r) for r in rows]
  compare = lambda subset, refs: metrics.add_comparisons(
      subset, records, plan.labels, plan.budgets, refs, plan.report.n_boot, plan.condition_bits)
  if f"diff_vs_{REF}" not in rows[0]:
    compare(rows, (REF,))
  frozen = plan.report.beyond.frozen if plan.report.beyond else None
  if frozen:
    compare([r for r in rows if r["method"] == frozen],
            [m for m in field if f"diff_vs_{m}" not in rows[0]])
  return section(rows, plan.labels, plan.num_patches, frozen)
