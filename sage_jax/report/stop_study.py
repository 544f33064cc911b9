"""The stop signals' honest protocol (issue 37; configs/*_progressive.py): on the development
half everything is fitted or chosen (mode "fit"): the temperatures, each signal's setting,
the risk-controlled thresholds and the pick; the reporting half (mode "frozen") only
evaluates those frozen choices and checks the goal and the promised risk.

The criterion (both halves say it): the goal is the best fixed accuracy at the goal budget
with at most goal_share of its mean units (the target). Among a signal's settings, those
within the target that reach the accuracy: the fewest units; else those within the target:
the most accurate; else the fewest units. The pick is the best of every signal's by the same
criterion. Arrays per rule as progressive.rule_arrays gives them ([step, image]).
"""
import json
import os

import numpy as np

from sage_jax import files
from sage_jax.report import metrics
from sage_jax.report import stats
from sage_jax.report import stopping
from sage_jax.report import tables

# Fitted temperatures are rounded to this many decimals before any use, so the literals
# frozen in a config reproduce the development half's numbers.
DECIMALS = 3


def temperatures(arrays, st) -> dict:
  """rule -> f64[S]: fitted on this run's images (mode fit), frozen (mode frozen), or none."""
  if st.mode == "frozen":
    return {rule: np.asarray(t, np.float64) for rule, t in st.temperatures}
  if st.mode == "fit":
    return {rule: np.round(stopping.fit_temperatures(a["logp"], a["label"]), DECIMALS)
            for rule, a in arrays.items() if "logp" in a}
  return {}


def goal_of(rows, prog) -> tuple:
  """(the best fixed row at the goal budget, the target: goal_share of its mean units)."""
  best = max((r for r in rows if r["budget"] == prog.goal_budget),
             key=lambda r: r["offloaded_acc"])
  return best, prog.goal_share * best["mean_units"]


def criterion(p, accuracy: float, target: float) -> tuple:
  """Sort key of a point (smallest first): see the module's docstring."""
  if p["mean_units"] <= target and p["accuracy"] >= accuracy:
    return (0, p["mean_units"], -p["accuracy"])
  if p["mean_units"] <= target:
    return (1, -p["accuracy"], p["mean_units"])
  return (2, p["mean_units"], -p["accuracy"])


def summary(a, stop) -> dict:
  """Accuracy, mean units and round trips of a rule's arrays stopped at i32[I]."""
  images = np.arange(stop.shape[0])
  return dict(accuracy=float(a["correct"][stop, images].mean()),
              mean_units=float(a["units"][stop, images].mean()),
              mean_rounds=float((stop + 1).mean()))


def ltt_points(arrays, prog, temps, rules=None) -> list:
  """Per delta and rule of `rules` (None: every rule with temperatures): Learn-then-Test's
  threshold on the temperature-scaled confidence at level epsilon / R (Bonferroni over the R
  rules with temperatures, so the promise holds whichever rule is named from these images),
  as a point with the p-values tested."""
  st, out = prog.stopping, []
  level = st.epsilon / max(len(temps), 1)
  for delta in st.deltas:
    for rule in temps if rules is None else rules:
      a, t = arrays[rule], temps[rule]
      score = stopping.max_prob(a["logp"], t)
      chosen, tested = stopping.ltt_threshold(score, a["pred"], prog.thresholds, delta, level)
      stop = stopping.threshold_stop(score, chosen)
      out.append(dict(summary(a, stop), rule=rule, stop=f"{stopping.RISK}@{delta:g}",
                      threshold=chosen, tested=tested, level=level))
  return out


def choose(pts, ltt, accuracy: float, target: float) -> list:
  """The pick, then each signal's choice by the criterion (the pick's signal once)."""
  by_signal = {}
  for p in list(pts) + list(ltt):
    by_signal.setdefault(p["stop"], []).append(p)
  best = [min(group, key=lambda p: criterion(p, accuracy, target))
          for group in by_signal.values()]
  pick = min(best, key=lambda p: criterion(p, accuracy, target))
  return [pick] + [p for p in best if p is not pick]


def frozen_literals(chosen, temps) -> str:
  """The Python literals a config freezes: the temperatures the choices need, the choices."""
  need = {p["rule"] for p in chosen if p["stop"].partition("@")[0] in stopping.NEED_TEMPERATURE}
  t = [(rule, tuple(float(x) for x in temps[rule])) for rule in temps if rule in need]
  c = [(p["stop"], p["rule"], float(p["threshold"])) for p in chosen]
  lines = lambda xs: "".join(f"    {x!r},\n" for x in xs)
  return (f"TEMPERATURES = (\n{lines(t)})\nFROZEN = (  # the pick first\n{lines(c)})\n"
          .replace("'", '"'))


def evaluate(choices, arrays, prog, temps, best, n_boot: int) -> list:
  """Each (signal, rule, setting) on this run's images: its point, units interval, paired
  difference with the best fixed rule at the goal budget, and for the risk-controlled rule
  the share of answers changed by stopping (and its upper 1 - epsilon bound)."""
  ref = arrays[best["method"]]["correct"][prog.schedule.index(prog.goal_budget)]
  out = []
  for signal, rule, setting in choices:
    a = arrays[rule]
    stop = stopping.stop_of(signal, a, setting, temps.get(rule))
    images = np.arange(stop.shape[0])
    row = dict(summary(a, stop), stop=signal, rule=rule, threshold=setting, stops=stop,
               paired=stats.paired_bootstrap(a["correct"][stop, images], ref, n_boot),
               units_ci=stats.bootstrap_ci(a["units"][stop, images], n_boot))
    base, _, delta = signal.partition("@")
    if base == stopping.RISK:
      changed = stopping.disagreement(stop, a["pred"])
      row.update(delta=float(delta), risk=float(changed.mean()),
                 risk_upper=stopping.clopper_pearson_upper(int(changed.sum()), len(changed),
                                                           prog.stopping.epsilon))
    out.append(row)
  return out


def section(arrays, plan, rows, pts, temps, workdir) -> str:
  """report.md's stop-signal study: fit and choose (mode fit; writes stop_choices.json) or
  the frozen choices' verdicts (mode frozen)."""
  prog, st = plan.report.progressive, plan.report.progressive.stopping
  best, target = goal_of(rows, prog)
  fixed = (f"`{best['method']}` at K={prog.goal_budget}, {100 * best['offloaded_acc']:.1f}% "
           f"with {best['mean_units']:.1f} units; target {target:.1f} units")
  if st.mode == "fit":  # risk control on the best fixed rule: its last answer is the goal's
    ltt = ltt_points(arrays, prog, temps, [best["method"]] if best["method"] in temps else None)
    chosen = choose(pts, ltt, best["offloaded_acc"], target)
    choices = [(p["stop"], p["rule"], float(p["threshold"])) for p in chosen]
    literals = frozen_literals(chosen, temps)
    files.write(os.path.join(workdir, "stop_choices.json"), (json.dumps(dict(
        temperatures={r: list(map(float, t)) for r, t in temps.items()},
        frozen=choices, ltt=[{k: p[k] for k in ("stop", "rule", "threshold", "tested", "level")}
                             for p in ltt]), indent=1) + "\n").encode())
  else:
    choices, literals = list(st.frozen), ""
  rated = evaluate(choices, arrays, prog, temps, best, plan.report.n_boot)
  head = ("### Stop signals: the development half (fitted and chosen here)" if st.mode == "fit"
          else "### Stop signals: the reporting half (frozen choices)")
  text = [head, "", f"{st.half or 'This run'}. The goal: the best fixed rule ({fixed}). "
          + _protocol(st, prog, len(temps)), "", _table(rated, prog), ""]
  text += [_verdict(rated, arrays, best, target, st.mode, plan.report.n_boot), ""]
  text += [_risk_text(r, st.epsilon) for r in rated if "risk" in r]
  if temps:
    text += ["", "Temperatures per budget (K = " + ", ".join(map(str, prog.schedule)) + "): "
             + "; ".join(f"`{r}` " + ", ".join(f"{x:g}" for x in t) for r, t in temps.items())
             + "."]
  if literals:
    text += ["", "Frozen for the reporting half (also in stop_choices.json):", "", "```python",
             literals.rstrip(), "```"]
  return "\n".join(text)


def _protocol(st, prog, n_rules) -> str:
  if st.mode == "frozen":
    return ("Every temperature, setting and threshold below was fitted or chosen on the "
            "development half and frozen in the config before this half was run; nothing "
            "is chosen here. The first row is the pick.")
  deltas = ", ".join(f"{d:g}" for d in st.deltas)
  return ("Fitted and chosen on these images: per rule and budget one temperature (NLL of the "
          f"labels, rounded to {DECIMALS} decimals); each signal's setting (thresholds "
          f"{prog.thresholds[0]:g}..{prog.thresholds[-1]:g}, patience "
          f"{', '.join(map(str, st.patience))}) by the criterion: within the target, the fewest "
          "units reaching the goal's accuracy, else the most accurate, else the fewest units; "
          f"the risk-controlled rule `ltt@delta` (delta = {deltas}) on the best fixed rule, "
          "whose last answer is the goal's (so at most delta of its answers change: accuracy "
          "at least the goal's minus delta), by Learn-then-Test on the temperature-scaled "
          "confidence (fixed sequence from the highest threshold, binomial tail, level "
          f"epsilon / {n_rules} = {st.epsilon / max(n_rules, 1):.3g}, Bonferroni over the "
          "rules with temperatures; a threshold of 1.01 stops no image early). The first "
          "row, the pick, is the best of all by the criterion; its numbers here are "
          "optimistic (chosen on them).")


def _table(rated, prog) -> str:
  cols = ["stop", "rule", "setting", "accuracy %", "mean units (95% CI)", "rounds",
          f"minus best fixed K={prog.goal_budget} (points, 95% CI)", "changed answers %"]
  body = []
  for r in rated:
    d, lo, hi = (r["paired"][k] for k in ("diff", "lo", "hi"))
    body.append([f"`{r['stop']}`", f"`{r['rule']}`", f"{r['threshold']:g}",
                 f"{100 * r['accuracy']:.1f}",
                 f"{r['mean_units']:.2f} ({r['units_ci'][0]:.2f}-{r['units_ci'][1]:.2f})",
                 f"{r['mean_rounds']:.2f}", f"{metrics.format_points(d)} "
                 f"[{metrics.format_points(lo)}, {metrics.format_points(hi)}]",
                 f"{100 * r['risk']:.1f}" if "risk" in r else ""])
  return tables.markdown(cols, body)


def _verdict(rated, arrays, best, target, mode, n_boot: int) -> str:
  """The goal's verdict for the pick, and how far it closed the gap between the frozen
  confidence stop and the oracle stop on the pick's rule."""
  pick, d = rated[0], rated[0]["paired"]
  reached = pick["accuracy"] >= best["offloaded_acc"] and pick["mean_units"] <= target
  text = (f"Goal (issue 37{', development half' if mode == 'fit' else ''}): "
          f"**{'reached' if reached else 'not reached'}**. The pick, `{pick['stop']}` "
          f"{pick['threshold']:g} on `{pick['rule']}`, gives {100 * pick['accuracy']:.1f}% with "
          f"{pick['mean_units']:.2f} units (target {target:.1f}); minus the best fixed rule, "
          f"paired: {metrics.format_points(d['diff'])} points [95% CI "
          f"{metrics.format_points(d['lo'])}, {metrics.format_points(d['hi'])}].")
  conf = next((r for r in rated if r["stop"] == "confidence"), None)
  a = arrays[pick["rule"]]
  oracle = summary(a, stopping.oracle_stop(a["pred"]))
  if conf is None or conf is pick:
    return text + (f" The oracle stop on `{pick['rule']}`: {100 * oracle['accuracy']:.1f}% "
                   f"with {oracle['mean_units']:.2f} units.")
  gap = oracle["accuracy"] - conf["accuracy"]
  share = (pick["accuracy"] - conf["accuracy"]) / gap if gap > 0 else float("nan")
  images = np.arange(pick["stops"].shape[0])
  vs = stats.paired_bootstrap(a["correct"][pick["stops"], images],
                              arrays[conf["rule"]]["correct"][conf["stops"], images], n_boot)
  return text + (f" Against the confidence stop chosen the same way (`{conf['rule']}` "
                 f"{conf['threshold']:g}: {100 * conf['accuracy']:.1f}% with "
                 f"{conf['mean_units']:.2f} units) and the oracle stop on `{pick['rule']}` "
                 f"({100 * oracle['accuracy']:.1f}% with {oracle['mean_units']:.2f} units), the "
                 f"pick closes {100 * share:.0f}% of the accuracy gap (pick minus confidence, "
                 f"paired: {metrics.format_points(vs['diff'])} points [95% CI "
                 f"{metrics.format_points(vs['lo'])}, {metrics.format_points(vs['hi'])}]).")


def _risk_text(r, epsilon) -> str:
  held = r["risk"] <= r["delta"]
  return (f"- `{r['stop']}` on `{r['rule']}` promised at most {100 * r['delta']:g}% of answers "
          f"changed by stopping early, with probability {1 - epsilon:g}: here "
          f"{100 * r['risk']:.2f}% (one-sided {100 * (1 - epsilon):g}% upper bound "
          f"{100 * r['risk_upper']:.2f}%): **{'held' if held else 'not held'}**.")
