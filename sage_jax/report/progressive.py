"""Progressive offloading, evaluated from a sweep's per-image records (no further server pass).

The edge sends the units of the schedule's first budget; while the server's confidence is
below a threshold it sends the units of the next budget that the server has not seen yet,
and the server answers from the rule's set at that budget. An image stops at the first
budget whose confidence reaches the threshold, or at the last. Units are counted as the
records' units_sent: the union of the rule's sets so far (a rule whose set changes with K
pays for every new unit). Arrays are indexed [step, image] over the schedule's budgets.
Beside the confidence, the stop signals of report/stopping.py (patience, the anytime product,
the edge's opinion, consecutive KL, the next step's cost, temperature scaling) each give a
front; report/stop_study.py fits and chooses them on a development half or checks frozen
choices on a reporting half.
"""
import os

import numpy as np

from sage_jax.report import figures
from sage_jax.report import metrics
from sage_jax.report import stats
from sage_jax.report import stop_study
from sage_jax.report import stopping
from sage_jax.report import tables


# How an image stops: its confidence alone, or with the answer also equal to the previous
# step's (a second opinion from more evidence; the first step cannot stop then).
STOPS = ("confidence", "agree+confidence")
# Then the signals that need no calibration: on every rule from the answers, confidences and
# units; on the signal rules from their log-probabilities (and temperature where fitted).
PLAIN = ("cost", "patience")
FROM_LOGP = ("product", "edge", "kl", "temperature")


def stop_step(confidence, threshold: float, pred=None) -> np.ndarray:
  """i32[I]: the first step whose confidence reaches `threshold` (and, given pred [step,
  image], whose answer equals the step before's), else the last step."""
  return stopping.threshold_stop(confidence, threshold, pred)


def evaluate(correct, confidence, units, threshold: float, pred=None) -> dict:
  """Accuracy, mean units sent and mean round trips when stopping at `threshold` (pred:
  stop only where the answer repeats, `stop_step`)."""
  stop = stop_step(confidence, threshold, pred)
  images = np.arange(stop.shape[0])
  return dict(threshold=float(threshold),
              accuracy=float(np.asarray(correct)[stop, images].mean()),
              mean_units=float(np.asarray(units)[stop, images].mean()),
              mean_rounds=float((stop + 1).mean()),
              stop=stop)


def pareto(points) -> list:
  """The (mean_units, accuracy) points no other point beats in both (fewer or equal units,
  higher or equal accuracy, one strictly), sorted by units."""
  points = sorted(points, key=lambda p: (p[0], -p[1]))
  front, best = [], -np.inf
  for units, acc in points:
    if acc > best:
      front.append((units, acc))
      best = acc
  return front


def _column(plan, i) -> int:
  """Rule i's server column under the reference uplink condition (`plan.reference`)."""
  return plan.reference * len(plan.labels) + i


def _arrays(records, plan, i) -> tuple:
  """Rule i's (correct, confidence, units sent so far, prediction) [step, image] on the
  schedule, under the reference uplink condition."""
  label = records["label"][records["offloaded"].astype(bool)]
  cols = [plan.budgets.index(k) for k in plan.report.progressive.schedule]
  pred = records["server_pred"][:, _column(plan, i)][:, cols]
  return ((pred == label[:, None]).T, records["server_conf"][:, _column(plan, i)][:, cols].T,
          records["units_sent"][:, i][:, cols].T, pred.T)


def rule_arrays(records, plan) -> dict:
  """rule -> what its stop signals read: correct, conf, units, pred [step, image], label
  [image], and for the signal rules logp f32[step, image, class] and edge_logp [image, class]."""
  prog, out = plan.report.progressive, {}
  label = records["label"][records["offloaded"].astype(bool)]
  for i, rule in enumerate(plan.labels):
    correct, conf, units, pred = _arrays(records, plan, i)
    out[rule] = dict(correct=correct, conf=conf, units=units, pred=pred, label=label)
    if rule in prog.signal_rules and "server_logp" in records:
      logp = records["server_logp"][:, prog.signal_rules.index(rule)]  # [image, step, class]
      out[rule].update(logp=logp.transpose(1, 0, 2).astype(np.float32),
                       edge_logp=records["edge_logp"].astype(np.float32))
  return out


def signal_settings(arrays, plan, temperatures) -> list:
  """(rule, signal, setting, stop i32[I]) of every front: STOPS, cost and the thresholds on
  every rule, patience at each t, the log-probability signals on the rules that have them
  (temperature where `temperatures` has the rule)."""
  prog, out = plan.report.progressive, []
  for rule, a in arrays.items():
    signals = STOPS + PLAIN + tuple(
        s for s in FROM_LOGP if "logp" in a and (s != "temperature" or rule in temperatures))
    for signal in signals:
      if signal == "patience":
        out += [(rule, signal, t, stopping.patience_stop(a["pred"], t))
                for t in prog.stopping.patience]
        continue
      score = stopping.scores(signal, a, temperatures.get(rule))
      pred = a["pred"] if signal == "agree+confidence" else None
      out += [(rule, signal, t, stopping.threshold_stop(score, t, pred)) for t in prog.thresholds]
  return out


def point(plan, a, rule, signal, setting, stop) -> dict:
  """A stop rule's point: accuracy, mean units and bits sent, mean round trips and mean
  latency per channel (serialisation of the bits + one round trip per request)."""
  prog, unit_bits = plan.report.progressive, plan.condition_bits[plan.reference][2]
  images = np.arange(stop.shape[0])
  acc = float(a["correct"][stop, images].mean())
  units, rounds = float(a["units"][stop, images].mean()), float((stop + 1).mean())
  bits = units * unit_bits
  return dict(rule=rule, stop=signal, threshold=setting, accuracy=acc, mean_units=units,
              mean_bits=bits, mean_rounds=rounds,
              **{f"latency_ms_{name}": bits / rate * 1e3 + rounds * prog.rtt_ms
                 for name, rate in plan.report.rates})


def pareto_points(records, plan, arrays=None, temperatures=None) -> list:
  """One point (`point`) per (rule, stop signal, setting) of `signal_settings`."""
  arrays = rule_arrays(records, plan) if arrays is None else arrays
  return [point(plan, arrays[rule], rule, signal, setting, stop)
          for rule, signal, setting, stop in signal_settings(arrays, plan, temperatures or {})]


def goal(records, plan, rows, pts, temperatures=None, arrays=None) -> dict:
  """The goal: the most accurate progressive point with at most goal_share of the mean units
  of the best fixed rule at goal_budget, against that rule (paired over images)."""
  prog = plan.report.progressive
  fixed = [r for r in rows if r["budget"] == prog.goal_budget]
  if not fixed:
    return dict(fixed=None)
  best = max(fixed, key=lambda r: r["offloaded_acc"])
  target = prog.goal_share * best["mean_units"]
  within = [p for p in pts if p["mean_units"] <= target]
  enough = [p for p in pts if p["accuracy"] >= best["offloaded_acc"]]
  # A threshold no image reaches before the last budget stops none early: that point is
  # the last budget's request, not progressive offloading, and "fewest" skips it.
  early = [p for p in enough if p["mean_rounds"] < len(prog.schedule)]
  out = dict(fixed=best, target=target, point=None, reached=False,
             fewest=min(early, key=lambda p: p["mean_units"], default=None),
             climb=min(enough, key=lambda p: p["mean_units"], default=None),
             last=prog.schedule[-1], oracle=_oracle_units(records, plan, best["method"]))
  if within:
    p = max(within, key=lambda q: (q["accuracy"], -q["mean_units"]))
    a = (rule_arrays(records, plan) if arrays is None else arrays)[p["rule"]]
    correct, units = a["correct"], a["units"]
    stop = stopping.stop_of(p["stop"], a, p["threshold"], (temperatures or {}).get(p["rule"]))
    images = np.arange(stop.shape[0])
    ref = metrics.correct(records, _column(plan, plan.labels.index(best["method"])),
                          plan.budgets.index(prog.goal_budget))
    out.update(point=p, reached=p["accuracy"] >= best["offloaded_acc"],
               paired=stats.paired_bootstrap(correct[stop, images], ref, plan.report.n_boot),
               units_ci=stats.bootstrap_ci(units[stop, images], plan.report.n_boot))
  return out


def _oracle_units(records, plan, rule) -> float:
  """Mean units when each image stops at the first step whose answer is its last step's: no
  accuracy lost to stopping early; what a perfect stop signal would send."""
  _, _, units, pred = _arrays(records, plan, plan.labels.index(rule))
  first = (pred == pred[-1:]).argmax(0)
  return float(units[first, np.arange(first.shape[0])].mean())


def _goal_sentence(g, prog) -> str:
  if g["fixed"] is None:
    return (f"Goal: not checked; the sweep does not run the goal's budget K={prog.goal_budget}.")
  f = g["fixed"]
  head = (f"Goal: progressive offloading reaches the best fixed accuracy at K={prog.goal_budget} "
          f"(`{f['method']}`, {100 * f['offloaded_acc']:.1f}% with {f['mean_units']:.1f} units) "
          f"with at most {100 * prog.goal_share:.0f}% of its mean units ({g['target']:.1f})")
  if g["point"] is None:
    return head + ": **not reached**; no progressive point sends so few units."
  p, d = g["point"], g["paired"]
  return (head + f": **{'reached' if g['reached'] else 'not reached'}**. The most accurate "
          f"point within the units is `{p['rule']}` stopping at {p['stop']} {p['threshold']:g}: "
          f"{100 * p['accuracy']:.1f}% with {p['mean_units']:.2f} units (95% CI "
          f"{g['units_ci'][0]:.2f}-{g['units_ci'][1]:.2f}) and {p['mean_rounds']:.2f} round "
          f"trips; minus the fixed rule, paired: {metrics.format_points(d['diff'])} points "
          f"[95% CI {metrics.format_points(d['lo'])}, {metrics.format_points(d['hi'])}]. The "
          "point is chosen on these images among every rule, stop signal and setting, so its "
          "accuracy is optimistic."
          + _fewest(g))


def _fewest(g) -> str:
  f, p, climb = g["fixed"], g["fewest"], g["climb"]
  acc = f"{100 * f['offloaded_acc']:.1f}%"
  if p is not None:
    text = (f" The fewest units with which a progressive point reaches it: "
            f"{p['mean_units']:.2f} (`{p['rule']}`, {p['stop']} {p['threshold']:g}, "
            f"{100 * p['accuracy']:.1f}%).")
  elif climb is not None:  # only thresholds no image reaches before the last budget
    text = (f" No point that stops an image before the last budget K={g['last']} reaches "
            f"{acc}; every image climbing to it does (`{climb['rule']}`, "
            f"{climb['mean_units']:.2f} units).")
  else:
    text = f" No progressive point reaches {acc}."
  return text + (f" A perfect stop signal (each image stops at the first step whose answer is "
                 f"its last step's) would send `{f['method']}` {g['oracle']:.2f} units on "
                 "average: what falls short is the stop signal, the server's confidence.")


def section(records, plan, rows, workdir) -> tuple:
  """report.md's progressive section (and progressive.png) -> (markdown, every point).
  rows: the reference uplink condition's."""
  prog = plan.report.progressive
  if not prog.schedule or not prog.thresholds:
    return "", []
  arrays = rule_arrays(records, plan)
  temps = stop_study.temperatures(arrays, prog.stopping)
  pts = pareto_points(records, plan, arrays, temps)
  g = goal(records, plan, rows, pts, temps, arrays) if prog.goal_budget else None
  at = {(p["mean_units"], p["accuracy"]): p for p in pts}  # one point per (units, accuracy)
  table = [at[q] for q in pareto(at)]
  shown = list(dict.fromkeys([r for r in ("topk", "sage", "sage_nested") if r in plan.labels]
                             + [p["rule"] for p in table[-1:]]
                             + ([g["fixed"]["method"]] if g and g["fixed"] else [])))
  oracles = [(rule, _oracle_point(arrays[rule])) for rule in shown]
  _plot(rows, pts, shown, g, oracles, os.path.join(workdir, "progressive.png"))
  lat = [k for k in pts[0] if k.startswith("latency_ms_")]
  table = [dict(p, accuracy=f"{100 * p['accuracy']:.1f}", mean_units=f"{p['mean_units']:.2f}",
                mean_bits=f"{p['mean_bits']:.0f}", mean_rounds=f"{p['mean_rounds']:.2f}",
                threshold=f"{p['threshold']:g}", **{k: f"{p[k]:.0f}" for k in lat})
           for p in table]
  cols = ["rule", "stop", "threshold", "accuracy", "mean_units", "mean_bits", "mean_rounds"] + lat
  ks = ", ".join(map(str, prog.schedule))
  text = ["## Progressive offloading", "",
          f"The edge climbs the budgets K = {ks}, one request each, until the server's "
          "confidence (its max softmax probability) reaches a threshold (`confidence`), or "
          "reaches it with the same answer as the step before (`agree+confidence`), or the "
          "last budget; "
          "units count everything sent so far (the union of the rule's sets). Latency: "
          f"serialisation plus an assumed {prog.rtt_ms:g} ms round trip per request. "
          "Every (rule, stop, threshold) point is in progressive.csv.", "",
          _signals_text(prog), "",
          "![progressive offloading](progressive.png)", ""]
  text += [f"- {_goal_sentence(g, prog)}", ""] if g else []
  if prog.stopping.mode:
    text += [stop_study.section(arrays, plan, rows, pts, temps, workdir), ""]
  text += ["Points no other (rule, stop, threshold) beats in both accuracy and mean units "
           "(accuracy %, latency ms):", "",
           tables.markdown_rows(table, cols), ""]
  return "\n".join(text), pts


def _signals_text(prog) -> str:
  rules = ", ".join(f"`{r}`" for r in prog.signal_rules) or "none"
  return ("Other stop signals (sage_jax/report/stopping.py; the answer is always the server's "
          "at the step it stops): `patience` t (the answer unchanged for t steps; the "
          "threshold column holds t) and `cost` (the doubt 1 - confidence per unit the next "
          "request would add, scaled by the first request's units) on every rule; on the "
          f"rules whose log-probabilities the records keep ({rules}), `product` (the "
          "probability of the answer under the product of the softmaxes so far), `edge` "
          "(under the product of the edge's softmax and the server's), `kl` (exp(-KL) "
          "between consecutive steps' softmaxes) and, where temperatures were fitted on a "
          "calibration half, `temperature` (the max softmax at one temperature per budget).")


def _oracle_point(a) -> tuple:
  """(mean units, accuracy) when each image stops at the first step whose answer is its
  last step's (`stopping.oracle_stop`)."""
  stop = stopping.oracle_stop(a["pred"])
  images = np.arange(stop.shape[0])
  return float(a["units"][stop, images].mean()), float(a["correct"][stop, images].mean())


# Line styles of the signals' fronts in progressive.png, one per signal.
_STYLES = dict(zip(STOPS + PLAIN + FROM_LOGP,
                   [("C0", "x"), ("C1", "+"), ("C2", "v"), ("C3", "^"), ("C4", "s"),
                    ("C5", "D"), ("C6", "P"), ("C9", "h")]))


def _plot(rows, pts, rules, g, oracles, path):
  """Each rule of `rules` at fixed budgets (solid, grey shades), each stop signal's front over
  every rule and setting (dashed), each rule's oracle stop (stars), the goal's mark."""
  series, grey = [], lambda i: f"{0.1 + 0.65 * i / max(len(rules) - 1, 1):.2f}"
  for i, rule in enumerate(rules):
    fixed = sorted((r["mean_units"], r["offloaded_acc"]) for r in rows if r["method"] == rule)
    series.append(dict(label=f"{rule} fixed K", x=[u for u, _ in fixed],
                       y=[a for _, a in fixed], marker="o", color=grey(i)))
  for signal, (color, marker) in _STYLES.items():
    front = pareto([(p["mean_units"], p["accuracy"]) for p in pts if p["stop"] == signal])
    if front:
      series.append(dict(label=f"{signal} (front)", x=[u for u, _ in front],
                         y=[a for _, a in front], marker=marker, ls="--", color=color))
  series += [dict(label=f"oracle stop ({rule})", x=[u], y=[a], marker="*", ls="", ms=11,
                  color=grey(i)) for i, (rule, (u, a)) in enumerate(oracles)]
  marks = []
  if g and g["fixed"] is not None:
    f = g["fixed"]
    marks = [(f["mean_units"], f["offloaded_acc"], f"best fixed K={f['budget']} ({f['method']})",
              g["target"])]
  figures.line_plot(series, "mean units sent per offloaded image", path, rows[0], marks)
