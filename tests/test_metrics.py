import numpy as np
import pytest

from sage_jax import metrics


def _records():
  # 5 images; 2 offloaded (indices 1, 3). One rule, two budgets.
  return dict(
      index=np.arange(5), label=np.array([0, 1, 2, 3, 4]),
      edge_pred=np.array([0, 0, 2, 0, 1]), score=np.zeros(5),
      offloaded=np.array([False, True, False, True, False]),
      off_index=np.array([1, 3]), ceiling_pred=np.array([1, 3]),
      server_pred=np.array([[[1, 1]], [[0, 3]]]),    # [m=2, R=1, nB=2]
      units=np.array([[[2, 4]], [[1, 4]]]),
      demand=np.array([[[5, 4]], [[1, 4]]]))


def test_summarize_known_answers():
  rows = metrics.summarize(_records(), ["r"], [2, 4], num_patches=4, bits_per_unit=10)
  a, b = rows
  assert set(a) == set(metrics.COLUMNS)
  assert (a["n_images"], a["n_offloaded"], a["offload_rate"]) == (5, 2, 0.4)
  assert a["edge_acc"] == pytest.approx(2 / 5)        # images 0 and 2
  assert a["ceiling_acc"] == 1.0
  assert a["offloaded_acc"] == 0.5 and b["offloaded_acc"] == 1.0
  assert a["pct_of_ceiling"] == pytest.approx(50.0)
  # edge right on non-offloaded images 0, 2 (+ server right on 1 or on 1 and 3)
  assert a["overall_acc"] == pytest.approx(3 / 5) and b["overall_acc"] == pytest.approx(4 / 5)
  assert a["mean_units"] == 1.5 and a["bits_per_request"] == 15.0
  assert a["comm_cost"] == pytest.approx(1.5 / 4 * 0.4)
  assert a["cap_bind_rate"] == 0.5 and b["cap_bind_rate"] == 0.0


def test_summarize_rejects_misaligned_records():
  r = _records()
  r["off_index"] = np.array([3, 1])
  with pytest.raises(AssertionError, match="out of order"):
    metrics.summarize(r, ["r"], [2, 4], 4, 10)
