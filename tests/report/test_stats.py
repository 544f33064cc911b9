"""Tests for sage_jax.stats: known answers, brute force on small cases, normal approximation."""
import itertools
import math

import numpy as np
import pytest

from sage_jax.report import stats


def flags(m, p, seed):
  return np.random.default_rng(seed).random(m) < p


# ----------------------------------------------------------------------------
# McNemar
# ----------------------------------------------------------------------------
def pair(n01, n10, n00=0, n11=0):
  """Flags with the given counts of (a, b) = (0,1), (1,0), (0,0), (1,1)."""
  a = [0] * n01 + [1] * n10 + [0] * n00 + [1] * n11
  b = [1] * n01 + [0] * n10 + [0] * n00 + [1] * n11
  return np.array(a, bool), np.array(b, bool)


def brute_mcnemar_p(n01, n10):
  """Sum of the probabilities of all 2^n sign patterns at most as likely as the observed."""
  n = n01 + n10
  if n == 0:
    return 1.0
  obs = min(n01, n10)
  tail = sum(1 for signs in itertools.product((0, 1), repeat=n)
             if min(sum(signs), n - sum(signs)) <= obs)
  return tail / 2 ** n


def test_mcnemar_known_answers():
  r = stats.mcnemar(*pair(0, 10, n00=3, n11=5))
  assert (r["n01"], r["n10"]) == (0, 10)
  assert r["p_value"] == pytest.approx(2 * 0.5 ** 10, rel=1e-12)
  assert stats.mcnemar(*pair(10, 0))["p_value"] == pytest.approx(2 * 0.5 ** 10, rel=1e-12)
  assert stats.mcnemar(*pair(7, 7, n00=2))["p_value"] == 1.0
  assert stats.mcnemar(*pair(0, 0, n00=4, n11=4))["p_value"] == 1.0
  assert stats.mcnemar(np.zeros(0, bool), np.zeros(0, bool))["p_value"] == 1.0
  # n = 1: either outcome is as likely as the other
  assert stats.mcnemar(*pair(1, 0))["p_value"] == 1.0


def test_mcnemar_brute_force_small():
  for n01 in range(0, 9):
    for n10 in range(0, 9):
      want = brute_mcnemar_p(n01, n10)
      assert stats.mcnemar(*pair(n01, n10, n11=2))["p_value"] == pytest.approx(want, rel=1e-10)


def test_mcnemar_closed_form_large():
  """Against the exact integer sum with math.comb; large n needs log space (2^n overflows)."""
  for n01, n10 in ((400, 450), (1000, 1130), (2500, 2500), (3, 997)):
    n, k = n01 + n10, min(n01, n10)
    want = min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2 ** n)
    got = stats.mcnemar(*pair(n01, n10))["p_value"]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (n01, n10)


# ----------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------
def test_bootstrap_constant_and_empty():
  assert stats.bootstrap_ci(np.ones(50, bool)) == (1.0, 1.0)
  assert stats.bootstrap_ci(np.zeros(50, bool)) == (0.0, 0.0)
  lo, hi = stats.bootstrap_ci(np.zeros(0, bool))
  assert math.isnan(lo) and math.isnan(hi)
  r = stats.paired_bootstrap(np.zeros(0, bool), np.zeros(0, bool))
  assert all(math.isnan(v) for v in r.values())


def test_bootstrap_contains_mean_shrinks_and_is_deterministic():
  widths = []
  for m in (100, 400, 1600):
    x = flags(m, 0.7, m)
    lo, hi = stats.bootstrap_ci(x, seed=1)
    assert lo <= x.mean() <= hi
    assert stats.bootstrap_ci(x, seed=1) == (lo, hi)
    widths.append(hi - lo)
  # the width falls like 1/sqrt(m): each 4x in m halves it
  assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.2)
  assert widths[1] / widths[2] == pytest.approx(2.0, rel=0.2)


def test_bootstrap_matches_normal_approximation():
  m = 5000
  x = flags(m, 0.8, 0)
  p = x.mean()
  half = 1.96 * math.sqrt(p * (1 - p) / m)
  lo, hi = stats.bootstrap_ci(x, n_boot=4000, seed=3)
  assert lo == pytest.approx(p - half, abs=0.15 * half)
  assert hi == pytest.approx(p + half, abs=0.15 * half)
  lo90, hi90 = stats.bootstrap_ci(x, n_boot=4000, seed=3, alpha=0.1)
  assert lo < lo90 < hi90 < hi


def test_paired_bootstrap():
  rng = np.random.default_rng(5)
  m = 2000
  a = rng.random(m) < 0.8
  # b = a with 3% of images flipped to wrong: a is better by ~0.024
  b = a & (rng.random(m) > 0.03)
  r = stats.paired_bootstrap(a, b, seed=0)
  assert r["diff"] == pytest.approx(a.mean() - b.mean())
  assert 0 < r["lo"] <= r["diff"] <= r["hi"]
  assert stats.paired_bootstrap(a, b, seed=0) == r
  # no difference at all
  r = stats.paired_bootstrap(a, a)
  assert (r["diff"], r["lo"], r["hi"]) == (0.0, 0.0, 0.0)
  # discordant both ways equally often: not significant, as McNemar says
  a, b = pair(40, 40, n00=100, n11=300)
  r = stats.paired_bootstrap(a, b)
  assert r["lo"] < 0 < r["hi"] and stats.mcnemar(a, b)["p_value"] > 0.5
  # a right on 45 images where b is wrong, b right on 20 where a is wrong: significant
  a, b = pair(20, 45, n00=100, n11=300)
  r, mc = stats.paired_bootstrap(a, b, n_boot=4000), stats.mcnemar(a, b)
  assert r["diff"] == pytest.approx(25 / 465)
  assert r["lo"] > 0 and mc["p_value"] < 0.01


def test_errors():
  with pytest.raises(ValueError, match="same length"):
    stats.mcnemar(np.ones(3, bool), np.ones(4, bool))
  with pytest.raises(ValueError, match="same length"):
    stats.paired_bootstrap(np.ones(3, bool), np.ones(4, bool))
  with pytest.raises(ValueError, match="alpha 1.5"):
    stats.bootstrap_ci(np.ones(3, bool), alpha=1.5)
  with pytest.raises(ValueError, match="n_boot 0"):
    stats.bootstrap_ci(np.ones(3, bool), n_boot=0)


# ----------------------------------------------------------------------------
# the counts-matmul path against the plain gather (bit for bit)
# ----------------------------------------------------------------------------
def gathered_means(x, n_boot, seed, chunk=stats._CHUNK):
  """f64[n_boot]: each resample's mean, drawn in chunks of rows resamples and gathered."""
  x = np.asarray(x, np.float64)
  rng, m = np.random.default_rng(seed), len(x)
  rows = max(1, chunk // m)
  return np.concatenate([x[rng.integers(0, m, size=(min(rows, n_boot - lo), m))].mean(axis=1)
                         for lo in range(0, n_boot, rows)])


def gathered_ci(x, n_boot, seed=0, alpha=0.05):
  return tuple(float(v) for v in np.quantile(gathered_means(x, n_boot, seed),
                                             [alpha / 2, 1 - alpha / 2]))


def values(kind, m, seed):
  rng = np.random.default_rng(seed)
  if kind == "bool":
    return rng.random(m) < 0.7
  if kind == "diff":  # a paired difference of flags
    return (rng.random(m) < 0.7).astype(float) - (rng.random(m) < 0.6)
  return rng.integers(0, 50, m)  # unit counts


@pytest.fixture
def fresh_counts():
  """Tests that patch the chunk or storage sizes must not read counts cached without them."""
  stats._counts.cache_clear()
  yield
  stats._counts.cache_clear()


@pytest.mark.parametrize("kind", ["bool", "diff", "ints"])
@pytest.mark.parametrize("m,n_boot,chunk", [(1, 5, 1 << 22), (7, 30, 1 << 22), (300, 50, 1000),
                                            (333, 41, 1000), (1000, 5, 1000)])
def test_counts_means_equal_the_gathered_means(fresh_counts, monkeypatch, kind, m, n_boot, chunk):
  """chunk 1000 makes several chunks (chunk // m < n_boot), the last one short at m = 333."""
  monkeypatch.setattr(stats, "_CHUNK", chunk)
  x = values(kind, m, m)
  got = stats._boot_means(np.asarray(x, np.float64).reshape(-1, 1), n_boot, 3)[:, 0]
  assert np.array_equal(got, gathered_means(x, n_boot, 3, chunk))
  assert stats._counts.cache_info().currsize == 1  # the counts path, not the gather


def test_counts_means_at_full_chunks_and_in_uint8(fresh_counts, monkeypatch):
  """The real chunk with several chunks (4M // 20000 = 209 < 500); then the same counts kept
  as uint8 (converted a chunk at a time) where float32 would be too big."""
  x = values("diff", 20000, 1)
  want = gathered_means(x, 500, 0)
  assert np.array_equal(stats._boot_means(x.reshape(-1, 1), 500, 0)[:, 0], want)
  stats._counts.cache_clear()
  monkeypatch.setattr(stats, "_F32_ENTRIES", 1000)
  assert stats._counts(20000, 500, 0).dtype == np.uint8
  assert np.array_equal(stats._boot_means(x.reshape(-1, 1), 500, 0)[:, 0], want)


@pytest.mark.parametrize("x", [
    np.random.default_rng(0).random(200),                    # not integers
    np.full(200, 2.0 ** 22 + 1),                             # sums past 2**24: float32 rounds
    np.where(np.arange(200) % 2, 1.0, -0.0),                 # -0.0: the gathered mean keeps it
    np.r_[np.ones(199), np.nan]])
def test_other_x_take_the_gather_path(fresh_counts, x):
  got = stats._boot_means(x.reshape(-1, 1), 300, 0)[:, 0]
  assert np.array_equal(got, gathered_means(x, 300, 0), equal_nan=True)
  assert stats._counts.cache_info().currsize == 0


def test_the_counts_cache_keeps_m_n_boot_and_seeds_apart(fresh_counts):
  """Interleaved calls: each (m, n_boot, seed) gets its own resamples, as drawn alone."""
  xs = {m: values("bool", m, m) for m in (300, 301)}
  for m, n_boot, seed in [(300, 100, 0), (301, 100, 0), (300, 100, 0), (300, 100, 1),
                          (300, 120, 0), (301, 100, 1)]:
    assert stats.bootstrap_ci(xs[m], n_boot, seed) == gathered_ci(xs[m], n_boot, seed)
  assert stats._counts.cache_info().hits >= 1


def test_batched_intervals_equal_each_column_alone(monkeypatch):
  """bootstrap_cis / paired_bootstraps over 7 columns, 3 at a time, against the plain
  per-column gather; the non-integer column set takes the gather path."""
  monkeypatch.setattr(stats, "_COLUMNS", 3)
  rng = np.random.default_rng(4)
  a, b = rng.random((500, 7)) < 0.7, rng.random((500, 7)) < 0.6
  for x in (a, rng.integers(-3, 4, (500, 7)), rng.random((500, 7))):
    lo, hi = stats.bootstrap_cis(x, 200, 2, alpha=0.1)
    for k in range(7):
      assert (lo[k], hi[k]) == gathered_ci(x[:, k], 200, 2, alpha=0.1)
  r = stats.paired_bootstraps(a, b, 200)
  for k in range(7):
    d = a[:, k].astype(float) - b[:, k]
    assert (r["diff"][k], r["lo"][k], r["hi"][k]) == (d.mean(), *gathered_ci(d, 200))
    assert stats.paired_bootstrap(a[:, k], b[:, k], 200) == dict(
        diff=d.mean(), lo=r["lo"][k], hi=r["hi"][k])
