"""Bootstrap intervals and paired tests over per-image correctness flags `correct: bool[m]`;
our own percentile bootstrap (docs/choices.md, "Statistics").
"""
import functools

import numpy as np

# Bootstrap resamples are drawn in chunks of at most this many indices (memory bound).
_CHUNK = 1 << 22
# Integers up to 2**24 are exact in float32, so a float32 matmul of integer counts with
# integer x is exact in any summation order while m * max|x| stays within it.
_F32_EXACT = 1 << 24
# Counts matrices of up to this many entries are kept as float32 (64 MB), larger ones as
# uint8 (converted a chunk at a time); beyond _COUNTS_MAX entries none is built.
_F32_ENTRIES = 1 << 24
_COUNTS_MAX = 1 << 26
# bootstrap_cis resamples this many columns per matmul (memory: m x _COLUMNS doubles).
_COLUMNS = 128


def _draws(m: int, n_boot: int, seed):
  """The resamples' row indices, int64[rows, m] per chunk: every call with the same (m,
  n_boot, seed) draws the same ones, so their counts can be shared."""
  rng = np.random.default_rng(seed)
  rows = max(1, _CHUNK // m)
  for lo in range(0, n_boot, rows):
    yield rng.integers(0, m, size=(min(rows, n_boot - lo), m))


@functools.lru_cache(maxsize=3)  # summarize alternates two m; each entry <= 64 MB
def _counts(m: int, n_boot: int, seed: int):
  """[n_boot, m] times each row is drawn in each resample (read-only), float32 or uint8 by
  size; None where a uint8 count would overflow (the gather path takes over)."""
  dtype = np.float32 if n_boot * m <= _F32_ENTRIES else np.uint8
  parts = []
  for idx in _draws(m, n_boot, seed):
    r = idx.shape[0]
    part = np.bincount((idx + m * np.arange(r)[:, None]).ravel(), minlength=r * m)
    if dtype == np.uint8 and part.max() > np.iinfo(np.uint8).max:
      return None
    parts.append(part.reshape(r, m).astype(dtype))
  counts = np.concatenate(parts)
  counts.flags.writeable = False
  return counts


def _exact_in_f32(x) -> bool:
  """Whether counts @ x is exact in float32 in any order: x integer-valued, no -0.0 (whose
  sign the gathered mean can keep) and every partial sum within 2**24 (a row of counts sums
  to m, so |partial sum| <= m * max|x|)."""
  big = float(np.abs(x).max(initial=0.0))
  return (x.shape[0] * big <= _F32_EXACT and bool(np.all(x == np.rint(x)))
          and not np.any(np.signbit(x) & (x == 0)))


def _gather_means(x, n_boot, seed):
  """f64[n_boot, c]: the plain path, each resample's rows gathered and averaged, a column
  at a time (a gather of all c at once would take c times the chunk's memory)."""
  return np.concatenate([np.concatenate([x[:, k:k + 1][idx].mean(axis=1)
                                         for k in range(x.shape[1])], axis=1)
                         for idx in _draws(x.shape[0], n_boot, seed)])


def _boot_means(x, n_boot, seed):
  """f64[n_boot, c] means of n_boot resamples (with replacement) of the rows of x: f64[m, c].
  For integer x the cached counts' matmul gives each exact sum, so sum / m is the same
  double as the gathered mean (its sum is exact too); other x take the gather path."""
  m = x.shape[0]
  fast = isinstance(seed, (int, np.integer)) and n_boot * m <= _COUNTS_MAX and _exact_in_f32(x)
  counts = _counts(m, n_boot, int(seed)) if fast else None
  if counts is None:
    return _gather_means(x, n_boot, seed)
  xs, rows = x.astype(np.float32), max(1, _CHUNK // m)
  sums = np.concatenate([counts[lo:lo + rows].astype(np.float32, copy=False) @ xs
                         for lo in range(0, n_boot, rows)])
  return (sums.astype(np.float64) + 0.0) / m  # + 0.0: a zero sum is +0.0, as gathered


def _check(n_boot, alpha):
  if n_boot < 1:
    raise ValueError(f"n_boot {n_boot} is not allowed; it must be >= 1")
  if not 0 < alpha < 1:
    raise ValueError(f"alpha {alpha} is not allowed; it must be in (0, 1)")


def bootstrap_cis(x, n_boot=2000, seed=0, alpha=0.05):
  """bootstrap_ci of every column of x: [m, c] at once (each column resampled as it would be
  alone, so one pass over the shared resamples serves all) -> (lo, hi): f64[c] each."""
  _check(n_boot, alpha)
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"x must be 2-d [m, c]; got shape {x.shape}")
  if x.shape[0] == 0 or x.shape[1] == 0:
    return np.full(x.shape[1], np.nan), np.full(x.shape[1], np.nan)
  q = [alpha / 2, 1 - alpha / 2]
  lo, hi = np.concatenate(  # _COLUMNS at a time: memory m x _COLUMNS doubles
      [np.quantile(_boot_means(x[:, k:k + _COLUMNS].astype(np.float64), n_boot, seed), q,
                   axis=0) for k in range(0, x.shape[1], _COLUMNS)], axis=1)
  return lo, hi


def bootstrap_ci(correct, n_boot=2000, seed=0, alpha=0.05):
  """Seeded percentile bootstrap (1-alpha) interval of mean(correct: bool[m]) over n_boot
  resamples of the images -> (lo, hi); m = 0 -> (nan, nan)."""
  lo, hi = bootstrap_cis(np.asarray(correct, np.float64).reshape(-1, 1), n_boot, seed, alpha)
  return float(lo[0]), float(hi[0])


def paired_bootstraps(a, b, n_boot=2000, seed=0, alpha=0.05) -> dict:
  """paired_bootstrap of each column pair of a, b: [m, c] at once -> dict of f64[c] diff,
  lo, hi (all nan for m = 0)."""
  _check(n_boot, alpha)
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"a and b must be 2-d of the same shape; got shapes {a.shape} and {b.shape}")
  parts = [_paired_columns(a[:, k:k + _COLUMNS], b[:, k:k + _COLUMNS], n_boot, seed, alpha)
           for k in range(0, a.shape[1], _COLUMNS)]
  return {key: np.concatenate([p[key] for p in parts] or [np.zeros(0)])
          for key in ("diff", "lo", "hi")}


def _paired_columns(a, b, n_boot, seed, alpha) -> dict:
  """paired_bootstraps of at most _COLUMNS columns (memory)."""
  d = a.astype(np.float64) - b.astype(np.float64)
  if d.shape[0] == 0:
    return dict.fromkeys(("diff", "lo", "hi"), np.full(d.shape[1], np.nan))
  lo, hi = bootstrap_cis(d, n_boot, seed, alpha)
  # Each mean over its own contiguous 1-d copy: summed as paired_bootstrap's alone.
  return dict(diff=np.array([col.mean() for col in np.ascontiguousarray(d.T)]), lo=lo, hi=hi)


def paired_bootstrap(a, b, n_boot=2000, seed=0, alpha=0.05) -> dict:
  """mean(a) - mean(b) of two rules' bool[m] on the same images, with a paired bootstrap
  (1-alpha) interval (an image's two flags drawn together); m = 0 -> all nan."""
  _check(n_boot, alpha)
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"a and b must be 1-d of the same length; got shapes {a.shape} and {b.shape}")
  r = paired_bootstraps(a[:, None], b[:, None], n_boot, seed, alpha)
  return {k: float(v[0]) for k, v in r.items()}


def mcnemar(a, b) -> dict:
  """Exact two-sided McNemar test of two rules' bool[m] on the same images: a binomial test
  (p = 1/2) of n10 (a right, b wrong) out of the n01 + n10 discordant images; none: p = 1."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"a and b must be 1-d of the same length; got shapes {a.shape} and {b.shape}")
  n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
  n = n01 + n10
  import scipy.stats  # pylint: disable=import-outside-toplevel  (0.5 s; `writer.prefetch`)
  p = 1.0 if n == 0 else float(scipy.stats.binomtest(n10, n, 0.5).pvalue)
  return dict(n01=n01, n10=n10, p_value=p)
