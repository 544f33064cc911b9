"""Bootstrap intervals and paired tests over per-image correctness flags `correct: bool[m]`;
our own percentile bootstrap (docs/choices.md, "Statistics").
"""
import numpy as np
import scipy.stats

# Bootstrap resamples are drawn in chunks of at most this many indices (memory bound).
_CHUNK = 1 << 22


def _boot_means(x, n_boot, rng):
  """f64[n_boot, c] means of n_boot resamples (with replacement) of the rows of x: f64[m, c]."""
  m = x.shape[0]
  rows = max(1, _CHUNK // m)
  out = [x[rng.integers(0, m, size=(min(rows, n_boot - lo), m))].mean(axis=1)
         for lo in range(0, n_boot, rows)]
  return np.concatenate(out)


def _check(n_boot, alpha):
  if n_boot < 1:
    raise ValueError(f"n_boot {n_boot} is not allowed; it must be >= 1")
  if not 0 < alpha < 1:
    raise ValueError(f"alpha {alpha} is not allowed; it must be in (0, 1)")


def bootstrap_ci(correct, n_boot=2000, seed=0, alpha=0.05):
  """Seeded percentile bootstrap (1-alpha) interval of mean(correct: bool[m]) over n_boot
  resamples of the images -> (lo, hi); m = 0 -> (nan, nan)."""
  _check(n_boot, alpha)
  x = np.asarray(correct, np.float64).reshape(-1, 1)
  if x.shape[0] == 0:
    return float("nan"), float("nan")
  means = _boot_means(x, n_boot, np.random.default_rng(seed))[:, 0]
  lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def paired_bootstrap(a, b, n_boot=2000, seed=0, alpha=0.05) -> dict:
  """mean(a) - mean(b) of two rules' bool[m] on the same images, with a paired bootstrap
  (1-alpha) interval (an image's two flags drawn together); m = 0 -> all nan."""
  _check(n_boot, alpha)
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"a and b must be 1-d of the same length; got shapes {a.shape} and {b.shape}")
  if a.shape[0] == 0:
    return dict(diff=float("nan"), lo=float("nan"), hi=float("nan"))
  d = a - b
  lo, hi = bootstrap_ci(d, n_boot, seed, alpha)
  return dict(diff=float(d.mean()), lo=lo, hi=hi)


def mcnemar(a, b) -> dict:
  """Exact two-sided McNemar test of two rules' bool[m] on the same images: a binomial test
  (p = 1/2) of n10 (a right, b wrong) out of the n01 + n10 discordant images; none: p = 1."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"a and b must be 1-d of the same length; got shapes {a.shape} and {b.shape}")
  n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
  n = n01 + n10
  p = 1.0 if n == 0 else float(scipy.stats.binomtest(n10, n, 0.5).pvalue)
  return dict(n01=n01, n10=n10, p_value=p)
