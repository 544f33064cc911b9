"""scenes.resize: the emulated fused multiply-add and the Haswell dgemm accumulation it stands for,
against exact rational arithmetic (fractions.Fraction, rounded once to the nearest double)."""
from fractions import Fraction
import math

import numpy as np
import pytest

from sage_jax.data import scenes


def _exact_fma(a: float, b: float, c: float) -> float:
  return float(Fraction(a) * Fraction(b) + Fraction(c))  # int / int: correctly rounded


def _random_triples(rs, n):
  """Finite doubles of both signs, exponents in [-60, 60], zeros now and then."""
  def draw():
    x = rs.uniform(1, 2, n) * np.exp2(rs.randint(-60, 61, n)) * rs.choice([-1, 1], n)
    return np.where(rs.rand(n) < 0.02, 0.0, x)
  return draw(), draw(), draw()


def _adversarial_triples(rs, n):
  """Short integer mantissas placed so that a * b and c overlap by a few bits, often on or near a
  tie of two doubles; c == -RN(a * b) (+- an ulp), where all but the product's
  rounding error cancels; and double rounding traps: a * b = -+(1 - 2**-54) rounds to -+1, c - +1
  is a tie that only the product's rounding error breaks (rounding to nearest twice gets it
  wrong, as FMA emulation without rounding to odd does)."""
  def m():
    return rs.randint(1, 2 ** 30, n) * rs.choice([-1.0, 1.0], n)
  a, b = np.ldexp(m(), -rs.randint(0, 30, n)), np.ldexp(m(), -rs.randint(0, 30, n))
  c = np.ldexp(m(), rs.randint(-55, 55, n)) * np.ldexp(1.0, np.frexp(a * b)[1] - 30)
  kind = rs.randint(0, 5, n)
  c = np.where(kind == 1, -(a * b), c)
  c = np.where(kind == 2, np.nextafter(-(a * b), np.inf), c)
  c = np.where(kind == 3, np.ldexp(1.0, np.frexp(a * b)[1] - 54) * rs.choice([-1, 1], n), c)
  trap = kind == 4
  sign, scale = rs.choice([-1.0, 1.0], n), rs.randint(-40, 40, n)
  a = np.where(trap, np.ldexp(sign * (1 + 2.0 ** -27), scale), a)
  b = np.where(trap, rs.choice([-1.0, 1.0], n) * (1 - 2.0 ** -27), b)
  even = 2.0 ** 53 + 2 * rs.randint(0, 2 ** 30, n)  # c = 2**scale * this: (c -+ 1) is a tie
  c = np.where(trap, np.ldexp(even, scale) * sign, c)
  return a, b, c


@pytest.mark.parametrize("triples", [_random_triples, _adversarial_triples])
def test_fma_is_correctly_rounded(triples):
  rs = np.random.RandomState(0)
  a, b, c = triples(rs, 4000)
  got = scenes._fma(a, b, c)
  want = np.array([_exact_fma(*t) for t in zip(a.tolist(), b.tolist(), c.tolist())])
  assert np.array_equal(got, want), np.flatnonzero(got != want)[:10]
  assert (a * b + c != want).sum() > 100  # the triples tell a fused multiply-add apart


def _weights(src: int, dst: int):
  """f64[dst][src] as the weight matrix was built (and the known digests made) with numpy."""
  m = [[0.0] * src for _ in range(dst)]
  for i in range(dst):
    pos = min(max((i + 0.5) * src / dst - 0.5, 0.0), src - 1.0)
    lo = math.floor(pos)
    hi = min(lo + 1, src - 1)
    m[i][lo] += 1 - (pos - lo)
    m[i][hi] += pos - lo
  return m


def _haswell_matmul(l, r, fma=_exact_fma, tail=True):
  """l @ r summed as OpenBLAS's dgemm_kernel_4x8_haswell.S does: per element one accumulator from
  0.0, acc = fma(l[i][k], r[k][j], acc) for k ascending; but in the last row when the rows are odd
  (the N = 1 tail, KERNEL4x1), columns in whole blocks of 4, the first 8 * (K // 8) terms go
  round-robin into 4 accumulators, summed (acc0 + acc1) + (acc2 + acc3). Zero terms leave an
  accumulator as it is, so they are skipped."""
  n, k_dim, m = len(l), len(r), len(r[0])
  out = [[0.0] * m for _ in range(n)]
  for i in range(n):
    for j in range(m):
      four = tail and n % 2 == 1 and i == n - 1 and j < m // 4 * 4
      acc = [0.0] * 4
      for k in range(k_dim):
        if l[i][k] != 0 and r[k][j] != 0:
          slot = k % 4 if four and k < k_dim // 8 * 8 else 0
          acc[slot] = fma(l[i][k], r[k][j], acc[slot])
      out[i][j] = (acc[0] + acc[1]) + (acc[2] + acc[3])
  return out


def _reference_resize(image: np.ndarray, size: int, **kernel) -> np.ndarray:
  h, w = image.shape
  rows = _haswell_matmul(_weights(h, size), image.astype(float).tolist(), **kernel)
  out = _haswell_matmul(rows, [list(col) for col in zip(*_weights(w, size))], **kernel)
  return np.clip(np.round(np.array(out)), 0, 255).astype(np.uint8)


# (image side, output side, seed) of images of random levels: the items' sizes 20..36 (odd ones take
# the kernel's tail), the background's 8 -> 56, and seeds found to round differently in the tail.
CASES = ([(28, size, seed) for size in range(20, 37) for seed in range(3)]
         + [(8, 56, 0), (8, 56, 1), (28, 29, 84), (28, 33, 25), (28, 35, 7)])


def test_resize_sums_as_the_haswell_kernel():
  unfused = untailed = 0
  for side, size, seed in CASES:
    image = np.random.RandomState(seed).randint(0, 256, (side, side)).astype(np.uint8)
    want = _reference_resize(image, size)
    np.testing.assert_array_equal(scenes.resize(image, size), want, err_msg=f"{side}->{size}")
    plain = _reference_resize(image, size, fma=lambda a, b, c: a * b + c)
    unfused += not np.array_equal(plain, want)
    untailed += not np.array_equal(_reference_resize(image, size, tail=False), want)
  assert unfused and untailed  # the cases tell both the fma and the tail apart
