"""timing.json knows where the time goes: its segments add up to the wall time, each
segment's parts to the segment, and the programs JAX compiled to the compile segment
(`timing.Timer`, `compile_cache.Stats`); the Timer's parts on a fake clock."""
import json
import os
import time

import jax
import numpy as np
import pytest

from sage_jax import defaults
from sage_jax import timing
from sage_jax.sweep import compile_cache
from sage_jax.sweep import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRACE, LOWER, COMPILE = compile_cache.STAGES
HIT = "/jax/compilation_cache/cache_hits"
RETRIEVAL = "/jax/compilation_cache/cache_retrieval_time_sec"


class Clock:
  """A perf_counter the test moves by hand."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class FakeStats:
  """compile_cache.Stats as the Timer reads it: seconds compiled so far."""
  seconds = 0.0

  def mark(self):
    return 0

  def programs(self, since):
    return [dict(since=since)]


@pytest.fixture
def clock(monkeypatch):
  c = Clock()
  monkeypatch.setattr(timing.time, "perf_counter", c)
  return c


def test_parts_add_up_to_their_segment_on_a_fake_clock(clock):
  stats = FakeStats()
  timer = timing.Timer(stats, before=(("imports", 97.0), ("startup", 99.5)))
  with timer("host"):
    clock.now += 1.0                      # host's own
    with timer("write", "report"):
      clock.now += 2.0                    # report's own, less 0.5 compiled
      stats.seconds += 0.5
      with timer("write", "figures/a.png"):
        clock.now += 4.0
      with timer("write", "figures/b.png"):
        clock.now += 8.0
    with timer("write"):                  # no part: "other"
      clock.now += 16.0
  assert timer.seconds == {"setup": 3.0, "host": 1.0, "write": 29.5, "compile": 0.5}
  assert timer.total() == 34.0
  assert timer.parts_json() == {
      "setup": {"imports": 2.5, "startup": 0.5},
      "write": {"report": 1.5, "figures": {"a.png": 4.0, "b.png": 8.0}, "other": 16.0}}
  assert timer.programs() == [dict(since=0)]


def test_a_part_with_sub_parts_keeps_its_own_seconds_as_other():
  assert timing._nested({"figures": 1.0, "figures/a.png": 2.0, "x/y/z": 3.0}) == {
      "figures": {"other": 1.0, "a.png": 2.0}, "x": {"y": {"z": 3.0}}}
  assert timing._nested({"figures/a.png": 2.0, "figures": 1.0}) == {
      "figures": {"a.png": 2.0, "other": 1.0}}


def test_shapes_are_compact():
  args = (np.zeros((256, 28, 28, 1), np.float32),
          dict(a=np.zeros((3, 4), bool), b=np.zeros((3, 4), bool), i=np.zeros(5, np.int32)), 7)
  assert timing.shapes(args) == "f32[256,28,28,1] bool[3,4]x2 i32[5] int"
  assert timing.shapes(jax.ShapeDtypeStruct((2,), jax.numpy.bfloat16)) == "bf16[2]"


def test_programs_take_their_events_once_with_label_and_cache(monkeypatch):
  """Events JAX would send: a program traced, lowered and compiled from the cache under a
  label; then one whose trace holds another's whole compilation (counted in that one)."""
  clock = Clock()
  monkeypatch.setattr(timing, "stopwatch", lambda: clock)
  stats = compile_cache.Stats()
  first, send = stats.mark(), jax.monitoring.record_event_duration_secs
  with timing.labelled("edge", np.zeros((2, 3), np.float32)):
    clock.now += 1.0
    send(TRACE, 0.25, fun_name="edge_step")
    clock.now += 1.0
    send(LOWER, 0.5, fun_name="jit(edge_step)")
    clock.now += 1.0
    jax.monitoring.record_event(HIT)
    send(RETRIEVAL, 0.125)
    send(COMPILE, 0.75, fun_name="jit(edge_step)")
  clock.now += 2.0
  send(COMPILE, 0.5, fun_name="jit(inner)")   # ends inside the next one's span
  clock.now += 0.25
  send(TRACE, 2.0, fun_name="outer")
  for seconds in (0.125, 0.25):  # jax.eval_shape(outer), then outer jitted: two programs
    clock.now += 1.0
    send(TRACE, seconds, fun_name="outer")
  clock.now += 1.0
  send(LOWER, 0.5, fun_name="jit(outer)")
  got = stats.programs(first)
  assert got == [
      dict(name="jit(edge_step)", label="edge", shapes="f32[2,3]", trace_s=0.25, lower_s=0.5,
           compile_s=0.75, cache="hit", cache_retrieval_s=0.125),
      dict(name="jit(inner)", trace_s=0.0, lower_s=0.0, compile_s=0.5, cache="off"),
      dict(name="outer", trace_s=1.5, lower_s=0.0, compile_s=0.0, cache="off"),
      dict(name="outer", trace_s=0.125, lower_s=0.0, compile_s=0.0, cache="off"),
      dict(name="jit(outer)", trace_s=0.25, lower_s=0.5, compile_s=0.0, cache="off")]
  assert stats.seconds == 4.375 == sum(p["trace_s"] + p["lower_s"] + p["compile_s"] for p in got)


def test_a_label_costs_nothing_until_something_compiles():
  calls = []

  class Spy:
    shape, dtype = (1,), np.float32

    def __getattribute__(self, name):
      calls.append(name)
      return object.__getattribute__(self, name)

  with timing.labelled("edge", Spy()):
    assert timing.current_label().label == "edge"
  assert timing.current_label() is None and not calls


# --- the main job on a few images -----------------------------------------------------------

def _config():
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(num_images=40, rules="topk", budgets="4", batch_size=20, server_batch_size=16,
           chunk_size=20)
  c.report.n_boot = 10
  return c


def _two_runs(tmp):
  """The same sweep twice on one fresh persistent cache: compiled, then read back."""
  stats, was = compile_cache.Stats(), jax.config.jax_compilation_cache_dir
  try:
    assert compile_cache.enable(str(tmp / "cache"))
    out = []
    for run in ("first", "second"):
      started = (("imports", time.perf_counter() - 1.0),)  # main's, one second long
      done = loop.run(_config(), str(tmp / run), progress=False, compile_stats=stats,
                      started=started)
      with open(tmp / run / "timing.json") as f:
        out.append((done.timing, json.load(f)))
  finally:
    if was:
      compile_cache.enable(was)  # the session's cache (tests/conftest.py)
  return out


def _leaves(parts):
  return sum(_leaves(v) if isinstance(v, dict) else v for v in parts.values())


def test_segments_parts_and_programs_add_up_and_a_second_run_hits_the_cache(tmp_path):
  """One test (one worker runs the two small jobs): timing.json's sums, then the cache."""
  two_runs = _two_runs(tmp_path)
  for returned, t in two_runs:
    assert returned == t
    seg, parts = t["segments_s"], t["segment_parts_s"]
    assert set(seg) == {"setup", "compile", "host", "write", "input_wait", "device_wait"}
    assert sum(seg.values()) == pytest.approx(t["wall_s"], abs=1e-6)
    assert set(parts) == {"setup", "write"}
    for name, p in parts.items():
      assert _leaves(p) == pytest.approx(seg[name], abs=1e-6), name
    assert parts["setup"]["imports"] >= 1.0
    assert {"plan", "dataset_open", "workdir", "model_load", "steps_build"} <= set(parts["setup"])
    assert {"chunk_save", "summarize", "comparisons", "results_files", "report_sections",
            "figures"} <= set(parts["write"])
    assert {"curves.png", "selection_map.png"} <= set(parts["write"]["figures"])
    programs = t["programs"]
    assert sum(p["trace_s"] + p["lower_s"] + p["compile_s"] for p in programs) == pytest.approx(
        seg["compile"], abs=1e-6)
    for p in programs:
      assert p["name"] and p["cache"] in ("hit", "miss", "off", "loaded"), p
  names = lambda t: {p["name"] for p in t["programs"]}
  assert {"jit(edge_step)", "jit(ceiling_step)"} <= names(two_runs[0][1])
  _second_run_hits(*two_runs)


# The steps the sweep runs through `compile_cache.Program` (`pipeline.build`).
STEPS = {"edge", "ceiling", "select", "budget", "regroup empty", "regroup append", "regroup pop"}


def _second_run_hits(first_run, second_run):
  """The second run loads every step whole (no trace, no lowering); any other program it
  compiles is read from JAX's cache (the rest it holds in memory: the runs share a process)."""
  (first, _), (second, _) = first_run, second_run
  compiled = lambda t: {p["name"]: p["cache"] for p in t["programs"] if p["compile_s"] > 0}
  assert set(compiled(first).values()) == {"miss"}
  assert "loaded" in set(compiled(second).values()) <= {"hit", "loaded"}  # the rest: in memory
  loaded = [p for p in second["programs"] if p["cache"] == "loaded"]
  assert {p["name"] for p in loaded} == STEPS
  assert all(p["trace_s"] == p["lower_s"] == 0 < p["compile_s"] for p in loaded)
  assert all(p["cache_retrieval_s"] > 0 for p in second["programs"] if p["cache"] == "hit")
  hit = {name for name, cache in compiled(second).items() if cache == "hit"}
  assert hit <= compiled(first).keys()
