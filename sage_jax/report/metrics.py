"""Per-image sweep records -> one summary row per (rule, budget), with 95% bootstrap
intervals and paired comparisons with `topk` and `report.compare_to` (`add_comparisons`).
"""
import math

import numpy as np

from sage_jax.report import stats

COLUMNS = ("method", "budget", "offloaded_acc", "offloaded_acc_lo", "offloaded_acc_hi",
           "ceiling_acc", "ceiling_acc_lo", "ceiling_acc_hi", "pct_of_ceiling",
           "overall_acc", "overall_acc_lo", "overall_acc_hi", "edge_acc", "offload_rate",
           "mean_units", "comm_cost", "bits_per_request", "cap_bind_rate", "coverage",
           "acc_low_attn_entropy", "acc_high_attn_entropy",
           "diff_vs_topk", "diff_vs_topk_lo", "diff_vs_topk_hi", "p_vs_topk",
           "n_images", "n_offloaded")


def on_item_columns(records, i: int, j: int, num_patches: int) -> dict:
  """For datasets with boxes: of the patches rule i sent at budget j, the mean share on the
  item's box (sent_on_item), the mean share of the item's patches sent (item_sent), and the
  item's mean share of all patches (item_share: what a blind rule's sent_on_item tends to)."""
  hits, units = records["on_item"][:, i, j], records["units"][:, i, j]
  item = records["item_patches"]
  return dict(sent_on_item=_mean(hits / np.maximum(units, 1)),
              item_sent=_mean(hits / np.maximum(item, 1)),
              item_share=_mean(item / num_patches))


def correct(records, column: int, j: int):
  """bool[m]: per offloaded image, whether the server's answer in records' server column
  (condition * R + rule) at budget index j is the label."""
  return records["server_pred"][:, column, j] == records["label"][records["offloaded"]
                                                                    .astype(bool)]


def _mean(x):
  return float(np.mean(x)) if len(x) else float("nan")


def _nanmean(x):
  x = np.asarray(x, np.float64)
  return float(x[~np.isnan(x)].mean()) if (~np.isnan(x)).any() else float("nan")


def agreement_columns(pred, kl, ceiling_pred) -> dict:
  """Over the images the server answered (where no unit arrived the edge's prediction stands
  in `pred` and its KL is NaN; counting it would mix the edge's agreement into the
  server's): agree_full, the share whose prediction equals the server's all-patch one, and
  kl_full, the mean KL(all-patch softmax || this softmax) in nats. no_arrival_rate: the
  share of images where no unit arrived."""
  none = np.zeros(len(pred), bool) if kl is None else np.isnan(np.asarray(kl, np.float64))
  return dict(agree_full=_mean(pred[~none] == ceiling_pred[~none]),
              no_arrival_rate=_mean(none.astype(float)),
              kl_full=float("nan") if kl is None else _nanmean(kl))


def summarize(records, methods, budgets, num_patches: int, bits_per_unit: float,
              n_boot: int = 1000, baseline: str = "topk", conditions=None) -> list:
  """Rows of COLUMNS, then erasure, pixel_bits, agree_full, no_arrival_rate and kl_full (and
  the on-item columns with boxes), one per (condition, rule, budget), condition-major.
  Accuracies and rates are fractions in [0, 1]; pct_of_ceiling in %. conditions: (loss rate,
  bits per pixel, bits per unit) of each uplink condition; None: one perfect 8-bit channel
  at bits_per_unit.

  comm_cost = mean units sent per offloaded image / N * offload rate (the share
  of all patches of all images that crosses the link). coverage is the mean share
  of coarse-grid cells holding a sent patch. acc_{low,high}_attn_entropy split the
  offloaded images at the median entropy of the edge's importance.
  """
  off = records["offloaded"].astype(bool)
  if not np.array_equal(records["off_index"], records["index"][off]):
    raise AssertionError("offloaded records are out of order with the per-image records")
  label_off = records["label"][off]
  edge_correct = records["edge_pred"] == records["label"]
  n, m = len(off), int(off.sum())
  ceiling_correct = records["ceiling_pred"] == label_off
  head = dict(ceiling_acc=_mean(ceiling_correct), edge_acc=float(edge_correct.mean()),
              offload_rate=m / n, n_images=n, n_offloaded=m)
  head["ceiling_acc_lo"], head["ceiling_acc_hi"] = stats.bootstrap_ci(ceiling_correct, n_boot)
  # Offloaded images in order of the edge's attention entropy; the first half is "low".
  low = np.zeros(m, bool)
  low[np.argsort(records["attn_entropy"][off], kind="stable")[: m // 2]] = True
  r, base = len(methods), methods.index(baseline) if baseline in methods else None
  rows = []
  for u, (rate, bits, unit_bits) in enumerate(conditions or [(0.0, 8, bits_per_unit)]):
    cis = _intervals(records["server_pred"][:, u * r:(u + 1) * r] == label_off[:, None, None],
                     edge_correct, off, base, n_boot)
    for i, method in enumerate(methods):
      for j, budget in enumerate(budgets):
        pred = records["server_pred"][:, u * r + i, j]
        ref = None if base is None else records["server_pred"][:, u * r + base, j] == label_off
        row = dict(head, method=method, budget=int(budget),
                   **_accuracies(pred == label_off, ref, edge_correct, off, low,
                                 {k: float(v[i, j]) for k, v in cis.items()}))
        units = _mean(records["units"][:, i, j])
        row.update(mean_units=units, comm_cost=units / num_patches * m / n if m else 0.0,
                   bits_per_request=units * unit_bits,
                   cap_bind_rate=_mean(records["demand"][:, i, j] > budget),
                   coverage=_mean(records["coverage"][:, i, j]),
                   pct_of_ceiling=(100.0 * row["offloaded_acc"] / head["ceiling_acc"]
                                   if head["ceiling_acc"] > 0 else float("nan")))
        extra = on_item_columns(records, i, j, num_patches) if "on_item" in records else {}
        kl = records["kl_full"][:, u * r + i, j] if "kl_full" in records else None
        extra.update(erasure=float(rate), pixel_bits=int(bits),
                     **agreement_columns(pred, kl, records["ceiling_pred"]))
        rows.append(dict({k: row[k] for k in COLUMNS}, **extra))
  return rows


def _intervals(correct, edge_correct, off, base, n_boot) -> dict:
  """Every (rule, budget) row's bootstrap columns of one uplink condition, computed together
  (the rows share their resamples, so one pass over them serves all): {column: f64[R, J]}.
  correct: bool[m, R, J]; base: the baseline's rule index (None: no paired columns)."""
  m, r, nb = correct.shape
  flat = correct.reshape(m, r * nb)
  collab = np.repeat(edge_correct[:, None], r * nb, axis=1)
  collab[off] = flat
  out = dict(zip(("offloaded_acc_lo", "offloaded_acc_hi"), stats.bootstrap_cis(flat, n_boot)))
  out.update(zip(("overall_acc_lo", "overall_acc_hi"), stats.bootstrap_cis(collab, n_boot)))
  if base is not None:
    ref = np.broadcast_to(correct[:, base:base + 1], correct.shape).reshape(m, r * nb)
    paired = stats.paired_bootstraps(flat, ref, n_boot)
    diff, lo, hi, _ = comparison_columns("topk")
    out.update({diff: paired["diff"], lo: paired["lo"], hi: paired["hi"]})
  return {k: v.reshape(r, nb) for k, v in out.items()}


def _accuracies(correct, ref_correct, edge_correct, off, low, cis) -> dict:
  """Offloaded and overall (edge + server) accuracy with the row's intervals `cis` (from
  `_intervals`), by attention entropy, and paired against the baseline's `ref_correct`
  (None: absent)."""
  collab = edge_correct.copy()
  collab[off] = correct
  out = dict(cis, offloaded_acc=_mean(correct), overall_acc=_mean(collab),
             acc_low_attn_entropy=_mean(correct[low]), acc_high_attn_entropy=_mean(correct[~low]))
  return dict(out, **_paired_p(correct, ref_correct, "topk"))


def comparison_columns(ref: str) -> tuple:
  return (f"diff_vs_{ref}", f"diff_vs_{ref}_lo", f"diff_vs_{ref}_hi", f"p_vs_{ref}")


def format_points(x) -> str:
  """A difference of accuracies in signed percentage points: '+3.5'."""
  return f"{100 * x:+.1f}"


def paired_text(row, ref) -> str:
  """'+3.5 [+0.8, +6.1], p=0.012': paired difference (points), 95% interval, McNemar p."""
  diff, lo, hi, p = (row[c] for c in comparison_columns(ref))
  if math.isnan(diff):
    return "n/a"
  return f"{format_points(diff)} [{format_points(lo)}, {format_points(hi)}], p={p:.2g}"


def _paired_p(correct, ref_correct, ref: str) -> dict:
  """The exact McNemar p against `ref` (the paired intervals come batched); nan when it is
  absent (with its interval columns) or nothing was offloaded."""
  diff, lo, hi, p = comparison_columns(ref)
  if ref_correct is None:
    return dict.fromkeys((diff, lo, hi, p), float("nan"))
  return {p: stats.mcnemar(correct, ref_correct)["p_value"] if len(correct) else float("nan")}


def add_comparisons(rows, records, methods, budgets, refs, n_boot: int = 1000,
                    conditions=None) -> list:
  """Adds diff_vs_<ref> (+ _lo/_hi, paired bootstrap 95%) and p_vs_<ref> (exact McNemar)
  for each rule `ref` of refs (labels in `methods`; topk's columns are always there) to
  every row of `summarize`, in place and after its columns, against `ref` under the row's
  own uplink condition (conditions as in `summarize`). -> the rows."""
  keys = [(float(c[0]), int(c[1])) for c in conditions or [(0.0, 8)]]
  for ref in (r for r in refs if r != "topk" and rows):
    base = methods.index(ref)
    cols = [(keys.index((row.get("erasure", 0.0), row.get("pixel_bits", 8))) * len(methods),
             methods.index(row["method"]), list(budgets).index(row["budget"])) for row in rows]
    a = np.stack([correct(records, u + i, j) for u, i, j in cols], axis=1)
    b = np.stack([correct(records, u + base, j) for u, _, j in cols], axis=1)
    paired = stats.paired_bootstraps(a, b, n_boot)  # all rows at once: shared resamples
    diff, lo, hi, p = comparison_columns(ref)
    for k, row in enumerate(rows):
      row.update({diff: float(paired["diff"][k]), lo: float(paired["lo"][k]),
                  hi: float(paired["hi"][k]),
                  p: stats.mcnemar(a[:, k], b[:, k])["p_value"] if len(a) else float("nan")})
  return rows
