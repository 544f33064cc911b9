"""Progressive offloading, evaluated from a sweep's per-image records (no further server pass).

The edge sends the units of the schedule's first budget; while the server's confidence is
below a threshold it sends the units of the next budget that the server has not seen yet.
An image stops at the first budget whose confidence reaches the threshold, or at the last.
Arrays are indexed [step, image] over the schedule's budgets in ascending order.
"""
import numpy as np


def cumulative_units(masks) -> np.ndarray:
  """i32[S, I]: units sent up to each step = size of the union of the sets so far.

  masks: bool[S, I, N], a rule's set at each budget of the schedule. A rule whose sets are
  nested pays only its budget; one whose set changes with K pays for every new unit.
  """
  return np.logical_or.accumulate(np.asarray(masks, bool), axis=0).sum(-1).astype(np.int32)


def stop_step(confidence, threshold: float) -> np.ndarray:
  """i32[I]: the first step whose confidence reaches `threshold`, else the last step."""
  reached = np.asarray(confidence) >= threshold
  return np.where(reached.any(0), reached.argmax(0), reached.shape[0] - 1).astype(np.int32)


def evaluate(correct, confidence, units, threshold: float) -> dict:
  """Accuracy, mean units sent and mean round trips when stopping at `threshold`."""
  stop = stop_step(confidence, threshold)
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
