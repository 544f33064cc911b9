"""Per-image sweep records -> one summary row per (rule, budget)."""
import numpy as np

COLUMNS = ("method", "budget", "offloaded_acc", "ceiling_acc", "pct_of_ceiling", "overall_acc",
           "edge_acc", "offload_rate", "mean_units", "comm_cost", "bits_per_request",
           "cap_bind_rate", "n_images", "n_offloaded")


def _mean(x):
  return float(np.mean(x)) if len(x) else float("nan")


def summarize(records, methods, budgets, num_patches: int, bits_per_unit: float) -> list:
  """Rows of COLUMNS. Accuracies and rates are fractions in [0, 1]; pct_of_ceiling in %.

  comm_cost = mean units sent per offloaded image / N * offload rate (the share
  of all patches of all images that crosses the link).
  """
  off = records["offloaded"].astype(bool)
  if not np.array_equal(records["off_index"], records["index"][off]):
    raise AssertionError("offloaded records are out of order with the per-image records")
  label_off = records["label"][off]
  edge_correct = records["edge_pred"] == records["label"]
  n, m = len(off), int(off.sum())
  ceiling_acc = _mean(records["ceiling_pred"] == label_off)
  rows = []
  for i, method in enumerate(methods):
    for j, budget in enumerate(budgets):
      server_correct = records["server_pred"][:, i, j] == label_off
      off_acc = _mean(server_correct)
      units = _mean(records["units"][:, i, j])
      rows.append(dict(
          method=method, budget=int(budget),
          offloaded_acc=off_acc, ceiling_acc=ceiling_acc,
          pct_of_ceiling=100.0 * off_acc / ceiling_acc if ceiling_acc > 0 else float("nan"),
          overall_acc=float((edge_correct[~off].sum() + server_correct.sum()) / n),
          edge_acc=float(edge_correct.mean()),
          offload_rate=m / n,
          mean_units=units,
          comm_cost=units / num_patches * m / n if m else 0.0,
          bits_per_request=units * bits_per_unit,
          cap_bind_rate=_mean(records["demand"][:, i, j] > budget),
          n_images=n, n_offloaded=m))
  return rows
