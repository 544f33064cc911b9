"""A report or plot never fails once the sweep has finished: error bars from an
interval that does not contain its estimate, NaN cells, a single row, and the whole job with
n_boot=10 on 200 images."""
import os
import subprocess
import sys

import pytest

from sage_jax.report import figures

PNG = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def row(method, budget, acc, lo, hi, ceiling=0.9):
  return dict(method=method, budget=budget, offloaded_acc=acc, offloaded_acc_lo=lo,
              offloaded_acc_hi=hi, ceiling_acc=ceiling, ceiling_acc_lo=ceiling - 0.05,
              ceiling_acc_hi=ceiling + 0.05, bits_per_request=1000.0 * budget)


def draws(rows, tmp_path):
  """Every x axis of accuracy_plot writes a PNG for these rows."""
  for x in figures.X_AXES:
    path = tmp_path / f"{x}.png"
    figures.accuracy_plot(rows, str(path), x=x)
    assert path.read_bytes()[:8] == PNG, x


def test_interval_not_containing_its_estimate_draws(tmp_path):
  # A percentile interval from few resamples can sit wholly above or below the point
  # (matplotlib refused: "'yerr' must not contain negative values").
  rows = [row("topk", 4, 0.50, 0.55, 0.70), row("topk", 8, 0.60, 0.40, 0.58),
          row("sage", 4, 0.52, 0.45, 0.60), row("sage", 8, 0.70, 0.70, 0.70)]
  draws(rows, tmp_path)


def test_nan_cells_draw(tmp_path):
  rows = [row("topk", 4, NAN, NAN, NAN), row("topk", 8, 0.6, NAN, NAN),
          row("sage", 4, 0.5, 0.4, 0.6, ceiling=NAN), row("sage", 8, 0.7, 0.6, 0.8, ceiling=NAN)]
  for r in rows:
    r["ceiling_acc"] = NAN
  draws(rows, tmp_path)
  draws([row("topk", 4, NAN, NAN, NAN, ceiling=NAN)], tmp_path)  # nothing finite at all


def test_one_row_draws(tmp_path):
  draws([row("topk", 4, 1.0, 1.0, 1.0, ceiling=1.0)], tmp_path)  # e.g. one offloaded image


@pytest.mark.slow
def test_main_job_with_ten_bootstrap_resamples_finishes(tmp_path):
  """The issue's run: n_boot=10 on 200 images finished the sweep, then failed in the plots."""
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "sage_jax.main", "--config=configs/fmnist_sweep.py",
         f"--workdir={workdir}", "--config.num_images=200", "--config.report.n_boot=10",
         "--config.rules=topk,sage,random", "--config.budgets=4,8"]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  for name in ("report.md", "curves.png", "acc_vs_bits.png", "acc_vs_latency.png",
               "results.csv", "selection_map.png"):
    assert (workdir / name).exists(), name
  assert (workdir / "curves.png").read_bytes()[:8] == PNG
