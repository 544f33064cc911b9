"""The one clock: where a sweep's time goes (`Timer`), the best of N calls (`best_of`) and
the seconds since a start (`stopwatch`).

`with timer("input_wait"): ...` adds the time inside to that segment and takes it out of
the enclosing one, so the segments add up to the wall time; the compile seconds JAX reports
(`compile_cache.Stats`) move from the segment that compiled to "compile".
"""
import collections
import contextlib
import math
import time

import jax


class Timer:

  def __init__(self, compile_stats=None):
    self.compile_stats = compile_stats  # compile_cache.Stats, or None (no compile segment)
    self.seconds = collections.defaultdict(float)
    self._stack = []              # [seconds, compile seconds] spent in children

  def _compiled(self) -> float:
    return self.compile_stats.seconds if self.compile_stats is not None else 0.0

  @contextlib.contextmanager
  def __call__(self, name: str):
    t0, c0 = time.perf_counter(), self._compiled()
    self._stack.append([0.0, 0.0])
    try:
      yield
    finally:
      children, children_compile = self._stack.pop()
      wall, compiled = time.perf_counter() - t0, self._compiled() - c0
      own_compile = compiled - children_compile
      self.seconds[name] += wall - children - own_compile
      self.seconds["compile"] += own_compile
      if self._stack:
        self._stack[-1][0] += wall
        self._stack[-1][1] += compiled

  def total(self) -> float:
    return sum(self.seconds.values())

  def summary(self) -> str:
    total = self.total()
    return ", ".join(f"{k} {v:.1f} s ({100 * v / max(total, 1e-9):.0f}%)"
                     for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1]))


NULL = Timer()  # for callers that do not time


def best_of(fn, repeats: int = 1, warmup: int = 0, min_seconds: float = 0.0,
            max_calls: int = 200, sync=lambda: None) -> tuple:
  """-> (seconds, output) of the fastest of >= `repeats` calls of fn() after `warmup`, cheap
  ones repeated for `min_seconds` (at most `max_calls`): shared cores preempt short calls.
  `sync` drains a queue jax does not wait for (torch's CUDA stream) around the clock."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
    sync()
  best, total, calls = (math.inf, None), 0.0, 0
  while calls < max(1, repeats) or (total < min_seconds and calls < max_calls):
    sync()
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    sync()
    seconds = time.perf_counter() - t0
    best, total, calls = min(best, (seconds, out), key=lambda x: x[0]), total + seconds, calls + 1
  return best


def stopwatch():
  """-> a function giving the seconds since this call (for progress lines)."""
  t0 = time.perf_counter()
  return lambda: time.perf_counter() - t0
