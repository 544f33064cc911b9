"""Whole executables (`compile_cache.Program`): the sweep compiles every step before it
starts (`pipeline.compile_ahead`), a warm run loads them without tracing, and the key
changes with whatever the traced program depends on."""
import dataclasses
import hashlib
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.data import input_pipeline
from sage_jax import defaults
from sage_jax import rules
from sage_jax.sweep import compile_cache
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plan(**overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(num_images=24, batch_size=16, server_batch_size=8, **overrides)
  plan = plan_lib.make(c)
  return dataclasses.replace(plan, boxes=input_pipeline.has_boxes(plan.dataset))


@pytest.mark.slow  # the sweep's steps on the shipped models
def test_the_sweep_compiles_nothing_after_compile_ahead(monkeypatch):
  """Every step `evaluate` calls, with every argument type it passes (the last, partial
  server batch and the regroup buffer after a pop included), was compiled ahead."""
  plan = dataclasses.replace(_plan(rules="topk,sage,threshold@0.5", budgets="4,8"),
                             num_images=20)
  pipe = pipeline.build(plan, pipeline.load_models(plan))
  pipeline.compile_ahead(pipe)

  def refuse(self, args, types):
    raise AssertionError(f"{self.name} compiled during the sweep for {types}")

  monkeypatch.setattr(compile_cache.Program, "_executable", refuse)
  batches = input_pipeline.eval_batches(plan.dataset, plan.batch_size, 0, plan.num_images)
  records, counts = pipeline.evaluate(pipe, batches, threshold=-np.inf)  # all offloaded
  assert len(records["off_index"]) == plan.num_images
  assert counts["server_batches"] == 3  # 20 rows, 8 at a time: the last holds 4


def _fresh(jitted, name, context):
  return compile_cache.Program(jitted, name, lambda: context, static_argnums=(1,))


def test_a_program_keys_its_executables_on_its_argument_types(tmp_path, caplog):
  """One executable per argument types; a new Program (a new run) loads them whole, and a
  damaged or unloadable one is compiled again and replaced."""
  was = jax.config.jax_compilation_cache_dir
  loads = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **kw: loads.append(kw.get("fun_name"))
      if event == compile_cache.LOAD_EVENT else None)
  try:
    folder = compile_cache.enable(str(tmp_path / "cache"))
    f = jax.jit(lambda x, k: x[:k] * 2.0 + 1.0, static_argnums=1)
    first = _fresh(f, "f", "run")
    np.testing.assert_array_equal(first(np.arange(4.0, dtype=np.float32), 2), [1, 3])
    np.testing.assert_array_equal(first(np.arange(3.0, dtype=np.float32), 2), [1, 3])
    np.testing.assert_array_equal(first(np.arange(4.0, dtype=np.float32), 3), [1, 3, 5])
    entries = sorted(p for p in os.listdir(folder) if p.startswith("sage_jax_executable-"))
    assert len(entries) == 3 and not loads  # shape 4 or 3, static 2 or 3: three programs
    again = _fresh(f, "f", "run")
    np.testing.assert_array_equal(again(np.arange(4.0, dtype=np.float32), 3), [1, 3, 5])
    assert loads == ["f"]
    other = _fresh(f, "f", "another run")  # another fingerprint: compiled, not loaded
    np.testing.assert_array_equal(other(np.arange(4.0, dtype=np.float32), 3), [1, 3, 5])
    assert loads == ["f"] and len([p for p in os.listdir(folder)
                                   if p.startswith("sage_jax_executable-")]) == 4
    for name in entries:  # a checksum that holds over bytes that are no executable
      value = b"not a pickled executable"
      (tmp_path / "cache" / name).write_bytes(
          compile_cache._MAGIC + hashlib.sha256(value).digest() + value)
    np.testing.assert_array_equal(_fresh(f, "f", "run")(np.arange(4.0, dtype=np.float32), 3),
                                  [1, 3, 5])
    assert "could not be loaded" in caplog.text and loads == ["f"]
    np.testing.assert_array_equal(_fresh(f, "f", "run")(np.arange(4.0, dtype=np.float32), 3),
                                  [1, 3, 5])
    assert loads == ["f", "f"]  # replaced by the compile after the failed load
  finally:
    if was:
      compile_cache.enable(was)  # the session's cache (tests/conftest.py)


USER_RULE = textwrap.dedent("""\
    import jax.numpy as jnp
    from sage_jax import rules

    SHIFT = {shift}

    def shifted(importance, embeddings, key, budget):
      del embeddings, key
      return rules.Selection((jnp.arange(budget) + SHIFT).astype(jnp.int32),
                             jnp.ones(budget, bool), jnp.int32(budget))
    """)


def test_the_fingerprint_follows_the_code_the_settings_and_the_plan(tmp_path, monkeypatch):
  """A rule's file edited (a constant outside the function, as a config file's rule), a
  JAX setting flipped, another plan: each gives another fingerprint; nothing changed gives
  the same one."""
  path = tmp_path / "user_rule.py"
  path.write_text(USER_RULE.format(shift=0))
  namespace = {}
  exec(compile(path.read_text(), str(path), "exec"), namespace)  # as config_flags loads one
  monkeypatch.setitem(rules.RULES, "shifted", rules.Rule(namespace["shifted"]))
  base = compile_cache.fingerprint("plan")
  assert compile_cache.fingerprint("plan") == base
  assert compile_cache.fingerprint("another plan") != base
  path.write_text(USER_RULE.format(shift=1))
  os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
  edited = compile_cache.fingerprint("plan")
  assert edited != base
  was = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", not was)
  try:
    assert compile_cache.fingerprint("plan") not in (base, edited)
  finally:
    jax.config.update("jax_threefry_partitionable", was)
  assert compile_cache.fingerprint("plan") == edited
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_dump_to=/dev/null")
  assert compile_cache.fingerprint("plan") != edited


def test_the_fingerprint_follows_what_a_live_session_changes(monkeypatch):
  """What no file says: a traced module's constant changed in the process, a rule made by
  a factory (its closure), a rule defined where there is no file (a notebook cell)."""
  from sage_jax.rules import common  # pylint: disable=import-outside-toplevel
  base = compile_cache.fingerprint("plan")
  monkeypatch.setattr(common, "SAME_DIRECTION_TOL", common.SAME_DIRECTION_TOL * 2)
  assert compile_cache.fingerprint("plan") != base
  monkeypatch.undo()
  assert compile_cache.fingerprint("plan") == base

  def factory(shift):
    def shifted(importance, embeddings, key, budget):
      del importance, embeddings, key
      return rules.Selection(jnp.arange(budget, dtype=jnp.int32) + shift,
                             jnp.ones(budget, bool), jnp.int32(budget))
    return shifted

  seen = set()
  for shift in (0, 1):
    monkeypatch.setitem(rules.RULES, "shifted", rules.Rule(factory(shift)))
    seen.add(compile_cache.fingerprint("plan"))
  for shift in (0, 1):  # a cell run again with another constant
    namespace = {"rules": rules, "jnp": jnp}
    exec(USER_RULE.replace("import jax.numpy as jnp\nfrom sage_jax import rules\n", "")
         .format(shift=shift), namespace)
    monkeypatch.setitem(rules.RULES, "shifted", rules.Rule(namespace["shifted"]))
    seen.add(compile_cache.fingerprint("plan"))
  assert len(seen | {base}) == 5, (base, seen)


def test_runs_that_differ_only_on_the_host_share_their_steps():
  """The images, the gate's threshold, the bootstrap: the same steps; a budget: others."""
  base = _plan(rules="topk,sage", budgets="4,8")
  host = dataclasses.replace(base, num_images=500, gate=dataclasses.replace(base.gate, eta=0.1),
                             report=dataclasses.replace(base.report, n_boot=7))
  other = _plan(rules="topk,sage", budgets="4,16")
  key = lambda plan: compile_cache.fingerprint(pipeline._traced_part(plan))
  assert key(host) == key(base) != key(other)
