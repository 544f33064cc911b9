"""The one clock: where a sweep's time goes (`Timer`), the best of N calls (`best_of`), the
seconds since a start (`stopwatch`), and the labels of the programs JAX compiles (`labelled`).

`with timer("input_wait"): ...` adds the time inside to that segment and takes it out of
the enclosing one, so the segments add up to the wall time; the compile seconds JAX reports
(`compile_cache.Stats`) move from the segment that compiled to "compile". `with
timer("write", "figures/curves.png"): ...` also books it to that part of the segment ("/"
nests), so a segment's parts add up to it; its time in no named part is its part "other".

The main job's timing.json (`loop.run`): wall_s; segments_s (setup, compile, host, write,
input_wait, device_wait), adding up to wall_s; segment_parts_s, the named parts of setup
(imports: main.py's first line to its imports done and the sweep's modules imported;
startup: flags, the config, JAX's backend, the cache folder; plan, dataset_open, workdir,
model_load, steps_build) and of write (chunk_load, chunk_save, summarize, comparisons,
results_files, figures/<file>, report_sections: the rest of the report), each adding up to its
segment; programs: every program JAX traced, lowered or compiled in the run (name, label and
shapes where the caller gave them, trace_s, lower_s, compile_s adding up to the compile
segment, cache hit | miss | off | loaded (a step's whole executable); `compile_cache.Stats`).
Setup counts imports and startup (`Timer(before=...)`) since 2026-12; before, setup began
inside `loop.run` and left them out, so wall_s was shorter by them (about 2-3 s on 2 shared
cores).
"""
import collections
import contextlib
import math
import re
import threading
import time

import jax
import numpy as np

OTHER = "other"  # a segment's time in none of its named parts


class Timer:

  def __init__(self, compile_stats=None, before=()):
    """compile_stats: compile_cache.Stats, or None (no compile segment, no programs).
    before: ((part, time.perf_counter() at its start), ...), setup's parts before this
    timer, each running to the next one's start, the last to now (main's imports)."""
    self.compile_stats = compile_stats
    self.seconds = collections.defaultdict(float)
    self.parts = collections.defaultdict(lambda: collections.defaultdict(float))
    self._stack = []              # [seconds, compile seconds] spent in children
    self._first = compile_stats.mark() if compile_stats is not None else 0
    ends = [t for _, t in before[1:]] + [time.perf_counter()]
    for (part, start), end in zip(before, ends):
      self.add("setup", part, end - start)

  def _compiled(self) -> float:
    return self.compile_stats.seconds if self.compile_stats is not None else 0.0

  def add(self, segment: str, part: str, seconds: float):
    self.seconds[segment] += seconds
    self.parts[segment][part] += seconds

  @contextlib.contextmanager
  def __call__(self, name: str, part: str = OTHER):
    t0, c0 = time.perf_counter(), self._compiled()
    self._stack.append([0.0, 0.0])
    try:
      yield
    finally:
      children, children_compile = self._stack.pop()
      wall, compiled = time.perf_counter() - t0, self._compiled() - c0
      own_compile = compiled - children_compile
      self.add(name, part, wall - children - own_compile)
      self.seconds["compile"] += own_compile
      if self._stack:
        self._stack[-1][0] += wall
        self._stack[-1][1] += compiled

  def total(self) -> float:
    return sum(self.seconds.values())

  def parts_json(self) -> dict:
    """{segment: {part: seconds, or {sub-part: ...}}} for the segments with named parts."""
    return {segment: _nested(parts) for segment, parts in self.parts.items()
            if set(parts) - {OTHER}}

  def programs(self) -> list:
    """The programs JAX compiled since this timer began (compile_cache.Stats.programs)."""
    return self.compile_stats.programs(self._first) if self.compile_stats is not None else []

  def summary(self) -> str:
    total = self.total()
    return ", ".join(f"{k} {v:.1f} s ({100 * v / max(total, 1e-9):.0f}%)"
                     for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1]))


def _nested(flat: dict) -> dict:
  """{"figures/a.png": 1.0, "summarize": 2.0} -> {"figures": {"a.png": 1.0}, "summarize": 2.0};
  a part that also has sub-parts keeps its own seconds as their "other"."""
  out = {}
  for path, seconds in flat.items():
    *heads, leaf = path.split("/")
    node = out
    for head in heads:
      if not isinstance(node.setdefault(head, {}), dict):
        node[head] = {OTHER: node[head]}
      node = node[head]
    if isinstance(node.get(leaf), dict):
      node, leaf = node[leaf], OTHER
    node[leaf] = node.get(leaf, 0.0) + seconds
  return out


NULL = Timer()  # for callers that do not time


# --- labels of compiled programs --------------------------------------------------------

_LOCAL = threading.local()


class labelled:  # pylint: disable=invalid-name  (used like a function: `with labelled(...)`)
  """`with timing.labelled("edge", images): step(params, images)`: a program JAX compiles
  inside is listed (`compile_cache.Stats`) under this label with the shapes of `args` (the
  non-parameter inputs). The shapes are worked out only when something compiles inside, so
  a call per batch costs a list append and pop."""
  __slots__ = ("label", "args", "_shapes")

  def __init__(self, label: str, *args):
    self.label, self.args, self._shapes = label, args, None

  def __enter__(self):
    stack = getattr(_LOCAL, "labels", None)
    if stack is None:
      stack = _LOCAL.labels = []
    stack.append(self)
    return self

  def __exit__(self, *exc):
    _LOCAL.labels.pop()

  def shapes(self) -> str:
    if self._shapes is None:
      self._shapes = shapes(self.args)
    return self._shapes


def current_label():
  """This thread's innermost `labelled`, or None."""
  stack = getattr(_LOCAL, "labels", None)
  return stack[-1] if stack else None


def shapes(tree) -> str:
  """'f32[256,28,28,1] i32[256] bool[3,256,49]x2 int': each leaf's dtype and shape (a run of
  equal ones once, with its count; a leaf with no shape, such as a static int, by its type)."""
  out = []
  for leaf in jax.tree.leaves(tree):
    text = (f"{_dtype(leaf.dtype)}[{','.join(map(str, leaf.shape))}]"
            if hasattr(leaf, "shape") and hasattr(leaf, "dtype") else type(leaf).__name__)
    if out and out[-1][0] == text:
      out[-1][1] += 1
    else:
      out.append([text, 1])
  return " ".join(text + (f"x{n}" if n > 1 else "") for text, n in out)


_KINDS = {"float": "f", "int": "i", "uint": "u", "complex": "c", "bfloat": "bf"}


def _dtype(dtype) -> str:
  """float32 -> f32, int32 -> i32, bool -> bool, bfloat16 -> bf16 (JAX's short names)."""
  name = np.dtype(dtype).name
  m = re.fullmatch(r"([a-z]+)(\d+)", name)
  return _KINDS.get(m[1], m[1]) + m[2] if m else name


# --- timing calls -----------------------------------------------------------------------
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
