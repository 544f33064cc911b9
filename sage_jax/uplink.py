"""The uplink as it is: units lost on the way, and coarser units.

Each (image, patch) draws one uniform u from fold_in(fold_in(PRNGKey(seed), SALT), image
index); the unit is lost at rate p iff u < p. So a unit's fate depends only on the image and
patch index: every rule meets the same losses (paired comparisons), at any batch size,
chunking or device count, and a unit lost at p is lost at every larger rate (nested).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import figures, metrics, stats, tables

# Keeps the erasure stream apart from the `random` rule's, which uses the same seed.
SALT = 0x6C6F7373  # "loss"


def unit_uniforms(seed: int, image_index, num_patches: int):
  """f32[B, N]: u per (image, patch); image_index: i32[B] (dataset indices)."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), SALT)
  draw = lambda i: jax.random.uniform(jax.random.fold_in(base, i), (num_patches,))
  return jax.vmap(draw)(image_index)


def arrived(keep_idx, valid, uniforms, rate):
  """bool[..., B, K]: sent units (valid) that survive `rate`; keep_idx: i32[..., B, K] patch
  indices (any leading axes, e.g. rules), uniforms f32[B, N]."""
  u = jnp.broadcast_to(uniforms, keep_idx.shape[:-1] + uniforms.shape[-1:])
  return valid & (jnp.take_along_axis(u, keep_idx, axis=-1) >= rate)


def quantise(pixels, bits: int, lo: float = 0.0, hi: float = 255.0):
  """Pixels on 2**bits uniform levels over [lo, hi], as the server reconstructs them.

  With 8 bits over [0, 255] integer pixels come back unchanged (the step is exactly 1).
  """
  if not 1 <= bits <= 8:
    raise ValueError(f"pixel_bits {bits} is not allowed; it must be in 1..8")
  step = (hi - lo) / (2 ** bits - 1)
  levels = jnp.round((jnp.clip(pixels, lo, hi) - lo) / step)
  return lo + levels * step


def requantise(images, bits: int, mean, std):
  """Normalised images ((x/255 - mean) / std, as both preprocessings end) -> the same with
  every pixel on 2**bits levels: what the server preprocesses from coarser patches."""
  pixels = (images * std + mean) * 255.0
  return (quantise(pixels, bits) / 255.0 - mean) / std


# The report's section: what the losses and the coarser units cost each rule.

def _correct(records, plan, rate, bits, rule, budget):
  """bool[m]: per offloaded image, whether rule at budget is right under (rate, bits)."""
  u = [c[:2] for c in plan.conditions].index((rate, bits))
  return metrics.correct(records, u * len(plan.labels) + plan.labels.index(rule),
                         plan.budgets.index(budget))


def _erasure_sentence(records, plan, k, bits) -> str:
  """Which rule loses least from the first rate to the one nearest 0.3, paired with the rest."""
  rates = plan.uplink.erasure
  p = min((r for r in rates if r != rates[0]), key=lambda r: (abs(r - 0.3), r))
  loss = {m: (_correct(records, plan, rates[0], bits, m, k).astype(float)
              - _correct(records, plan, p, bits, m, k)) for m in plan.labels}
  best = min(plan.labels, key=lambda m: loss[m].mean())
  vs = "; ".join(f"`{m}` {_paired(loss[best], loss[m], plan.report.n_boot)}"
                 for m in plan.labels if m != best)
  acc = lambda rate: 100 * _correct(records, plan, rate, bits, best, k).mean()
  return (f"At loss rate p={p:g} (K={k}, {bits}-bit pixels), `{best}` loses least: "
          f"{acc(rates[0]):.1f}% at p={rates[0]:g}, {acc(p):.1f}% at p={p:g}. Its loss minus "
          f"each other rule's (points, paired 95% interval; below 0: it loses less): {vs}.")


def _paired(a, b, n_boot) -> str:
  d = stats.paired_bootstrap(a, b, n_boot)
  return f"{metrics.points(d['diff'])} [{metrics.points(d['lo'])}, {metrics.points(d['hi'])}]"


def _coarse_rows(records, plan, rows, rules) -> list:
  """At each bit budget of the full-precision rows: each coarser bits-per-pixel's largest
  budget that fits, against full precision (paired), per rule of `rules`."""
  p, full = plan.uplink.erasure[0], plan.uplink.pixel_bits[0]
  at = {(r["method"], r["pixel_bits"], r["budget"]): r for r in rows if r["erasure"] == p}
  out = []
  for m in rules:
    for k in sorted(plan.budgets):
      ref = at[(m, full, k)]
      for b in plan.uplink.pixel_bits[1:]:
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
  if len(plan.conditions) == 1:
    return ""
  k, rates, bits = plan.report.map_budget, plan.uplink.erasure, plan.uplink.pixel_bits
  text = ["## The uplink: lost units and coarser units", "",
          "Each sent unit is lost independently at rate p (the same units for every rule); "
          "when none arrives the edge's answer stands. Coarser units carry b bits per pixel "
          "value; the server is not retrained. Bits count what was sent.", ""]
  if len(rates) > 1:
    at = [r for r in rows if r["pixel_bits"] == bits[0] and r["budget"] == k]
    series = [dict(label=m, x=[r["erasure"] for r in at if r["method"] == m],
                   y=[r["offloaded_acc"] for r in at if r["method"] == m],
                   lo=[r["offloaded_acc_lo"] for r in at if r["method"] == m],
                   hi=[r["offloaded_acc_hi"] for r in at if r["method"] == m], marker="o")
              for m in plan.labels]
    figures.line_plot(series, f"loss rate p (K={k}, {bits[0]}-bit pixels)",
                      os.path.join(workdir, "erasure.png"), rows[0])
    text += ["![accuracy vs loss rate](erasure.png)", "",
             f"- {_erasure_sentence(records, plan, k, bits[0])}", ""]
  if len(bits) > 1:
    text += _bits_part(records, plan, rows, workdir)
  return "\n".join(text)


def _bits_part(records, plan, rows, workdir) -> list:
  p, full = plan.uplink.erasure[0], plan.uplink.pixel_bits[0]
  main = [r for r in rows if r["erasure"] == p and r["pixel_bits"] == full]
  mean_acc = lambda m: np.mean([r["offloaded_acc"] for r in main if r["method"] == m])
  others = [m for m in plan.labels if m not in ("topk", "sage")]
  rules = [m for m in ("topk", "sage") if m in plan.labels] + (
      [max(others, key=mean_acc)] if others else [])
  series = []
  for i, m in enumerate(rules):
    for b, ls in zip(plan.uplink.pixel_bits, ("-", "--", ":", "-.") * 2):
      rs = sorted((r for r in rows if r["method"] == m and r["erasure"] == p
                   and r["pixel_bits"] == b), key=lambda r: r["bits_per_request"])
      series.append(dict(label=f"{m}, {b} bits", x=[r["bits_per_request"] for r in rs],
                         y=[r["offloaded_acc"] for r in rs], color=f"C{i}", ls=ls, marker="o"))
  figures.line_plot(series, f"bits per request (p={p:g})",
                    os.path.join(workdir, "pixel_bits.png"), rows[0])
  cmp = _coarse_rows(records, plan, rows, rules)
  parts = []
  for m, b in ((m, b) for m in rules for b in plan.uplink.pixel_bits[1:]):
    mine = [c for c in cmp if c["rule"] == m and c["coarse_bits"] == b]
    wins, losses = [c for c in mine if c["lo"] > 0], [c for c in mine if c["hi"] < 0]
    top = max(mine, key=lambda c: c["diff"], default=None)
    parts.append(f"`{m}` {b}-bit: wins at {len(wins)} of {len(mine)} bit budgets"
                 + (f" ({', '.join(str(c['bits']) for c in wins)} bits)" if wins else "")
                 + (f", loses at {', '.join(str(c['bits']) for c in losses)} bits" if losses
                    else "")
                 + (f"; best difference {metrics.points(top['diff'])} "
                    f"[{metrics.points(top['lo'])}, {metrics.points(top['hi'])}] at "
                    f"{top['bits']} bits" if top else ""))
  sentence = (f"Coarser units against {full}-bit ones at the same bits per request (paired 95% "
              "interval above 0: a win, below: a loss): " + "; ".join(parts) + ".")
  table = [dict(c, full_acc=f"{100 * c['full_acc']:.1f}", coarse_acc=f"{100 * c['coarse_acc']:.1f}",
                diff=metrics.points(c["diff"]), ci=f"[{metrics.points(c['lo'])}, "
                f"{metrics.points(c['hi'])}]") for c in cmp]
  return ["![accuracy vs bits per request](pixel_bits.png)", "", f"- {sentence}", "",
          f"Each bit budget of the {full}-bit rows against the largest budget of coarser units "
          "that fits in it (accuracy %, difference in points, paired):", "",
          tables.markdown_rows(table, ("rule", "bits", "full_k", "full_acc", "coarse_bits",
                                       "coarse_k", "coarse_acc", "diff", "ci")), ""]
