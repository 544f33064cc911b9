"""JAX's persistent compilation cache: compile once per machine, not once per run.

A sweep's fixed cost is mostly XLA compilation (about 35 s of every default run on 2 CPU
cores; much more for DeiT-B steps on an accelerator). With the cache on, a second run loads
the compiled steps from `~/.cache/sage_jax/jax_cache` instead. The cache never changes a
result (the same executable is loaded), and it never fails a run: a folder that cannot be
created or written is skipped with a warning, and JAX itself turns unreadable or corrupt
entries into warnings and compiles again.
"""
import contextlib
import os
import tempfile
import time

from absl import flags
from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache

DEFAULT = "~/.cache/sage_jax/jax_cache"
OFF = ("", "off", "none")

# One flag for every entry point (main, benchmark) that imports this module.
FLAG = flags.DEFINE_string("compile_cache", DEFAULT, "Folder of JAX's persistent compilation "
                           "cache (a second run loads its compiled steps from there); 'off' "
                           "turns it off. The benchmark's compile rows always bypass it.")


def enable(path: str):
  """Turns the cache on in `path` -> the folder used, or None (off, or not usable)."""
  if path.strip().lower() in OFF:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path):
      pass
  except OSError as e:
    logging.warning("compilation cache folder %s is not usable (%s); running without the "
                    "cache", path, e.strerror or e)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  compilation_cache.reset_cache()  # take the new folder even if something compiled before
  return path


@contextlib.contextmanager
def bypassed():
  """Compilations inside neither read nor write the cache (to time compilation itself)."""
  was = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", was)
    compilation_cache.reset_cache()


class Stats:
  """Compilation seconds (trace + lower + XLA compile) and persistent-cache hits/misses, from
  jax.monitoring events. Tracing a step traces every jitted function it calls, each with its
  own event inside the step's span: an event that ends inside a later one's span is
  counted in that one, not again. Listeners stay registered: make one per process."""

  def __init__(self):
    self.seconds, self.hits, self.misses = 0.0, 0, 0
    self._spans = []  # (end, seconds) of the outermost events so far
    events = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def on_duration(event, duration, **kwargs):
      del kwargs
      if event not in events:
        return
      end = time.perf_counter()
      inner = [sp for sp in self._spans if sp[0] >= end - duration]
      self._spans = [sp for sp in self._spans if sp[0] < end - duration] + [(end, duration)]
      self.seconds += duration - sum(d for _, d in inner)

    def on_event(event, **kwargs):
      del kwargs
      self.hits += event == "/jax/compilation_cache/cache_hits"
      self.misses += event == "/jax/compilation_cache/cache_misses"

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

  def summary(self) -> str:
    cache = (f"persistent cache {self.hits} hits, {self.misses} misses"
             if self.hits or self.misses else "persistent cache off")
    return f"compilation {self.seconds:.1f} s ({cache})"
