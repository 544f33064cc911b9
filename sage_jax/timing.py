"""Where a sweep's time goes: exclusive segments of the host's wall clock.

`with timer("input_wait"): ...` adds the time inside to that segment and takes it out of
the enclosing one, so the segments add up to the time spent inside any of them. XLA
compilation happens inside whatever call first dispatches a step; the compile seconds
reported by JAX (`compile_cache.Stats`) are moved from that segment to "compile".
"""
import collections
import contextlib
import time


class Timer:

  def __init__(self, stats=None):
    self.stats = stats            # compile_cache.Stats, or None (no compile segment)
    self.seconds = collections.defaultdict(float)
    self.counts = collections.Counter()
    self._stack = []              # [seconds, compile seconds] spent in children

  def _compiled(self) -> float:
    return self.stats.seconds if self.stats is not None else 0.0

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

  def summary(self) -> str:
    total = sum(self.seconds.values())
    return ", ".join(f"{k} {v:.1f} s ({100 * v / max(total, 1e-9):.0f}%)"
                     for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1]))


NULL = Timer()  # for callers that do not time
