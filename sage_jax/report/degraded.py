"""The report's section on degraded uplinks: rules under lost units (erasure rate p) and
coarser units (fewer bits per pixel), and what each condition costs in bits."""
import os

import numpy as np

from sage_jax.report import figures
from sage_jax.report import metrics
from sage_jax.report import stats
from sage_jax.report import tables


def _correct(records, plan, rate, bits, rule, budget):
  """bool[m]: per offloaded image, whether rule at budget is right under (rate, bits)."""
  u = [c[:2] for c in plan.condition_bits].index((rate, bits))
  return metrics.correct(records, u * len(plan.labels) + plan.labels.index(rule),
                         plan.budgets.index(budget))


def _reference(plan) -> tuple:
  """(loss rate, bits per pixel) of the reference condition (`plan.reference`): the lowest
  rate and the most bits, wherever the config lists them."""
  return plan.condition_bits[plan.reference][:2]


def _erasure_sentence(records, plan, k, bits) -> str:
  """Which rule loses least from the reference rate to the one nearest 0.3, paired with the
  rest."""
  base = _reference(plan)[0]
  p = min((r for r in plan.uplink.erasure if r != base), key=lambda r: (abs(r - 0.3), r))
  loss = {m: (_correct(records, plan, base, bits, m, k).astype(float)
              - _correct(records, plan, p, bits, m, k)) for m in plan.labels}
  best = min(plan.labels, key=lambda m: loss[m].mean())
  vs = "; ".join(f"`{m}` {_paired(loss[best], loss[m], plan.report.n_boot)}"
                 for m in plan.labels if m != best)
  acc = lambda rate: 100 * _correct(records, plan, rate, bits, best, k).mean()
  return (f"At loss rate p={p:g} (K={k}, {bits}-bit pixels), `{best}` loses least: "
          f"{acc(base):.1f}% at p={base:g}, {acc(p):.1f}% at p={p:g}. Its loss minus "
          f"each other rule's (points, paired 95% interval; below 0: it loses less): {vs}.")


def _paired(a, b, n_boot) -> str:
  d = stats.paired_bootstrap(a, b, n_boot)
  diff, lo, hi = (metrics.format_points(d[k]) for k in ("diff", "lo", "hi"))
  return f"{diff} [{lo}, {hi}]"


def _coarse_rows(records, plan, rows, rules) -> list:
  """At each bit budget of the reference (full-precision) rows: each coarser bits-per-pixel's
  largest budget that fits, against the reference (paired), per rule of `rules`."""
  p, full = _reference(plan)
  at = {(r["method"], r["pixel_bits"], r["budget"]): r for r in rows if r["erasure"] == p}
  out = []
  for m in rules:
    for k in sorted(plan.budgets):
      ref = at[(m, full, k)]
      for b in _coarser(plan):
        fits = [c for c in plan.budgets if at[(m, b, c)]["bits_per_request"]
                <= ref["bits_per_request"]]
        if not fits:
          continue
        c = max(fits)
        d = stats.paired_bootstrap(_correct(records, plan, p, b, m, c),
                                   _correct(records, plan, p, full, m, k), plan.report.n_boot)
        out.append(dict(rule=m, bits=int(ref["bits_per_request"]), full_k=k, coarse_bits=b,
                        coarse_k=c, full_acc=ref["offloaded_acc"],
                        coarse_acc=at[(m, b, c)]["offloaded_acc"], diff=d["diff"], lo=d["lo"],
                        hi=d["hi"]))
  return out


def section(records, plan, rows, workdir) -> str:
  """report.md's uplink section (erasure.png, pixel_bits.png); "" for a single condition."""
  if len(plan.condition_bits) == 1:
    return ""
  k, rates, bits = plan.report.map_budget, plan.uplink.erasure, _reference(plan)[1]
  text = ["## The uplink: lost units and coarser units", "",
          "Each sent unit is lost independently at rate p (the same units for every rule); "
          "when none arrives the edge's answer stands. Coarser units carry b bits per pixel "
          "value; the server is not retrained. Bits count what was sent.", ""]
  if len(rates) > 1:
    at = [r for r in rows if r["pixel_bits"] == bits and r["budget"] == k]
    series = [dict(label=m, x=[r["erasure"] for r in at if r["method"] == m],
                   y=[r["offloaded_acc"] for r in at if r["method"] == m],
                   lo=[r["offloaded_acc_lo"] for r in at if r["method"] == m],
                   hi=[r["offloaded_acc_hi"] for r in at if r["method"] == m], marker="o")
              for m in plan.labels]
    figures.line_plot(series, f"loss rate p (K={k}, {bits}-bit pixels)",
                      os.path.join(workdir, "erasure.png"), rows[0])
    text += ["![accuracy vs loss rate](erasure.png)", "",
             f"- {_erasure_sentence(records, plan, k, bits)}", ""]
  if len(plan.uplink.pixel_bits) > 1:
    text += _bits_part(records, plan, rows, workdir)
  return "\n".join(text)


def _coarser(plan) -> list:
  """The bits per pixel other than the reference's, in the config's order."""
  return [b for b in plan.uplink.pixel_bits if b != _reference(plan)[1]]


def _bits_part(records, plan, rows, workdir) -> list:
  p, full = _reference(plan)
  main = [r for r in rows if r["erasure"] == p and r["pixel_bits"] == full]
  mean_acc = lambda m: np.mean([r["offloaded_acc"] for r in main if r["method"] == m])
  others = [m for m in plan.labels if m not in ("topk", "sage")]
  rules = [m for m in ("topk", "sage") if m in plan.labels] + (
      [max(others, key=mean_acc)] if others else [])
  series = []
  for i, m in enumerate(rules):
    for b, ls in zip([full] + _coarser(plan), ("-", "--", ":", "-.") * 2):
      rs = sorted((r for r in rows if r["method"] == m and r["erasure"] == p
                   and r["pixel_bits"] == b), key=lambda r: r["bits_per_request"])
      series.append(dict(label=f"{m}, {b} bits", x=[r["bits_per_request"] for r in rs],
                         y=[r["offloaded_acc"] for r in rs], color=f"C{i}", ls=ls, marker="o"))
  figures.line_plot(series, f"bits per request (p={p:g})",
                    os.path.join(workdir, "pixel_bits.png"), rows[0])
  cmp = _coarse_rows(records, plan, rows, rules)
  parts = []
  for m, b in ((m, b) for m in rules for b in _coarser(plan)):
    mine = [c for c in cmp if c["rule"] == m and c["coarse_bits"] == b]
    wins, losses = [c for c in mine if c["lo"] > 0], [c for c in mine if c["hi"] < 0]
    top = max(mine, key=lambda c: c["diff"], default=None)
    parts.append(f"`{m}` {b}-bit: wins at {len(wins)} of {len(mine)} bit budgets"
                 + (f" ({', '.join(str(c['bits']) for c in wins)} bits)" if wins else "")
                 + (f", loses at {', '.join(str(c['bits']) for c in losses)} bits" if losses
                    else "")
                 + (f"; best difference {metrics.format_points(top['diff'])} "
                    f"[{metrics.format_points(top['lo'])}, {metrics.format_points(top['hi'])}] at "
                    f"{top['bits']} bits" if top else ""))
  sentence = (f"Coarser units against {full}-bit ones at the same bits per request (paired 95% "
              "interval above 0: a win, below: a loss): " + "; ".join(parts) + ".")
  table = [dict(c, full_acc=f"{100 * c['full_acc']:.1f}", coarse_acc=f"{100 * c['coarse_acc']:.1f}",
                diff=metrics.format_points(c["diff"]), ci=f"[{metrics.format_points(c['lo'])}, "
                f"{metrics.format_points(c['hi'])}]") for c in cmp]
  return ["![accuracy vs bits per request](pixel_bits.png)", "", f"- {sentence}", "",
          f"Each bit budget of the {full}-bit rows against the largest budget of coarser units "
          "that fits in it (accuracy %, difference in points, paired):", "",
          tables.markdown_rows(table, ("rule", "bits", "full_k", "full_acc", "coarse_bits",
                                       "coarse_k", "coarse_acc", "diff", "ci")), ""]
