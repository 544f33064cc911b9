"""report.py: the paper's claims on constructed rows, strict outputs, and runs with too few
offloaded images to claim anything."""
import csv
import io
import json
import math
import os

import numpy as np
import pytest

from sage_jax import defaults, metrics, report, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(method, budget, acc, diff=0.0, p=1.0, pct=None):
  return dict(method=method, budget=budget, offloaded_acc=acc, diff_vs_topk=diff,
              diff_vs_topk_lo=diff - 0.01, diff_vs_topk_hi=diff + 0.01, p_vs_topk=p,
              pct_of_ceiling=100 * acc / 0.8 if pct is None else pct)


def test_claims_count_significant_wins_and_losses():
  rows = [_row("topk", 4, 0.5), _row("sage", 4, 0.6, 0.1, 1e-5),      # significant win
          _row("topk", 8, 0.6), _row("sage", 8, 0.5, -0.1, 1e-3),     # significant loss
          _row("topk", 16, 0.7), _row("sage", 16, 0.72, 0.02, 0.2)]   # not significant
  claims = report.paper_claims(rows, 49)
  assert claims[0].startswith("SAGE vs top-K on offloaded images: SAGE significantly better "
                              "at 1, worse at 1 of 3 budgets. K=4: 60.0% vs 50.0% (diff +10.0 pts")
  assert "McNemar p=1e-05" in claims[0]
  assert claims[1] == ("SAGE does not reach 93% of the ceiling at any budget here (best 90.0% "
                       "at K=16).")


def test_claims_93_percent_reached_and_grid_vs_random():
  rows = [_row("topk", 12, 0.6), _row("sage", 12, 0.70, pct=87.5),
          _row("topk", 24, 0.7), _row("sage", 24, 0.76, pct=95.0),
          _row("grid", 12, 0.50), _row("random", 12, 0.55),
          _row("grid", 24, 0.80), _row("random", 24, 0.75)]
  claims = report.paper_claims(rows, 49, moderate=(12, 24))
  assert claims[1] == ("SAGE reaches 93% of the server ceiling first at K=24 (95.0% of "
                       "ceiling, 24/49 = 49% of the patches; the paper: under half).")
  assert claims[2] == ("Content-blind grid at moderate budgets K=12..24: mean 65.0% vs random "
                       "65.0% and top-K 65.0%; grid beats random at 1 of 2 of these budgets.")


def test_no_claims_without_sage_or_topk():
  assert report.paper_claims([_row("random", 4, 0.5), _row("diversity", 4, 0.6)], 49) == []


def test_csv_keeps_small_p_values_and_json_is_strict():
  rows = [dict({c: 0.0 for c in metrics.COLUMNS}, method="sage", budget=4, n_images=1,
               n_offloaded=1, p_vs_topk=4.5e-30, diff_vs_topk=float("nan"))]
  got = list(csv.DictReader(io.StringIO(report.to_csv(rows).decode())))[0]
  assert float(got["p_vs_topk"]) == 4.5e-30 and got["diff_vs_topk"] == ""
  strict = json.loads(report.to_json(rows), parse_constant=lambda c: pytest.fail(c))
  assert strict[0]["diff_vs_topk"] is None and strict[0]["p_vs_topk"] == 4.5e-30


def _run(tmp_path, **overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(dict(rules="topk,sage", budgets="4,16", num_images=40), **overrides)
  workdir = str(tmp_path)
  rows = sweep.run(c, workdir, progress=False)
  text = open(os.path.join(workdir, "report.md")).read()
  data = json.loads(open(os.path.join(workdir, "results.json")).read(),
                    parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
  return rows, text, data


def test_nothing_offloaded_says_so_and_claims_nothing(tmp_path):
  rows, text, data = _run(tmp_path, gate=dict(eta=100.0))
  score = np.load(tmp_path / "per_image.npz")["score"]
  assert text == (
      "# sage_jax sweep report\n\nNo image was offloaded: the gate (min_entropy: offload when "
      "min-entropy > 100 bits) kept all 40 images on the edge (edge accuracy "
      f"{100 * rows[0]['edge_acc']:.1f}%; min-entropy from {score.min():.3g} to "
      f"{score.max():.3g} bits), so there is nothing to compare and no claim is checked. To "
      f"offload some, lower gate.eta below {score.max():.3g}, or offload a fixed share with "
      "gate.measure=fraction.\n")
  for r in data:
    assert r["n_offloaded"] == 0 and r["offload_rate"] == 0.0
    for k in ("offloaded_acc", "ceiling_acc", "pct_of_ceiling", "diff_vs_topk", "p_vs_topk",
              "offloaded_acc_lo", "coverage", "mean_units"):
      assert r[k] is None, k
  assert not (tmp_path / "selection_map.png").exists()


def test_one_offloaded_image_draws_no_conclusion(tmp_path):
  rows, text, data = _run(tmp_path, num_images=1)
  assert rows[0]["n_offloaded"] == 1
  assert ("- Only 1 image was offloaded, fewer than 20: the tables state the numbers, but no "
          "claim is checked") in text
  assert "SAGE vs top-K" not in text and "## All results" in text


def test_run_without_topk_writes_strict_json(tmp_path):
  _, _, data = _run(tmp_path, rules="sage,random", budgets="8")
  assert [r["method"] for r in data] == ["sage", "random"]
  for r in data:  # nothing to compare with: null, not NaN (which strict parsers reject)
    assert r["diff_vs_topk"] is None and r["p_vs_topk"] is None
    assert 0.0 <= r["offloaded_acc"] <= 1.0
