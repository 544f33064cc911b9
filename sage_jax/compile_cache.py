"""Compile once per machine, not once per run.

A sweep's fixed cost is mostly compilation: tracing its steps (11 rules vmapped in each of
8 budget steps), lowering them and XLA's compile. With the cache on (`enable`), JAX's
persistent cache in `~/.cache/sage_jax/jax_cache` saves XLA's compile of everything, and
`saved` goes further for the sweep's big steps: their traced and lowered form (`jax.export`)
is written to `steps/` under the same folder, and a later run with the same code, plan,
models, devices and argument shapes reads it instead of tracing the rules again. Neither
changes a result (the same program is compiled; the main job's files are byte-identical cold,
warm and off), and neither ever fails a run: a folder that cannot be created or written is
skipped with a warning, and unreadable or corrupt entries give a warning and are traced or
compiled again.
"""
import contextlib
import functools
import glob
import hashlib
import importlib.metadata
import os
import tempfile
import time

from absl import flags
from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache

from sage_jax import files

DEFAULT = "~/.cache/sage_jax/jax_cache"
OFF = ("", "off", "none")

_DIR = None                    # the folder `enable` turned on, or None
COUNTS = dict(loaded=0, saved=0)  # traced steps `saved` read from / wrote to the cache

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
  global _DIR
  _DIR = path
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


@functools.lru_cache(maxsize=None)
def _code_digest() -> str:
  """What a traced step depends on besides its context: sage_jax's source, JAX and Flax."""
  h = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "*.py"))):
    with open(path, "rb") as f:
      h.update(f.read())
  for package in ("jax", "jaxlib", "flax"):
    h.update(importlib.metadata.version(package).encode())
  return h.hexdigest()


def _signature(args) -> tuple:
  """Tree structure, shapes, dtypes and shardings of the arguments (what the step was
  traced for); hashable, so a call looks its step up without hashing anything to a file."""
  leaves, tree = jax.tree.flatten(args)
  return tree, tuple((getattr(x, "shape", ()), getattr(x, "dtype", type(x)),
                      getattr(x, "sharding", None)) for x in leaves)


def saved(fn, name: str, context: str, static_argnums=()):
  """Jitted `fn` -> the same function, traced once per machine (see the module docstring).
  `context` names everything else the step depends on (the plan's settings, the models,
  the devices). With the cache off, or inside `bypassed`, it is `fn` itself."""
  memo = {}  # (static args, signature) -> the step, so the file's key is hashed once

  def call(*args):
    if _DIR is None or not jax.config.jax_enable_compilation_cache:
      return fn(*args)
    static = tuple(args[i] for i in static_argnums)
    dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    sig = (static, _signature(dynamic))
    if sig not in memo:
      key = hashlib.sha256(repr((name, context, _code_digest(), sig)).encode()).hexdigest()
      memo[sig] = _read_or_export(fn, args, os.path.join(_DIR, "steps", f"{name}-{key[:32]}"))
    return memo[sig](*dynamic)

  call.lower = fn.lower  # ahead-of-time use (the benchmark times compilation itself)
  return call


def _read_or_export(fn, args, path):
  """The step as a jitted call of its exported (traced and lowered) form, read from `path`
  or exported there; XLA's compile of it goes through JAX's persistent cache as usual."""
  if os.path.exists(path):
    try:
      with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
      COUNTS["loaded"] += 1
      return jax.jit(exported.call)
    except Exception as e:  # pylint: disable=broad-except  (any damage: trace again)
      logging.warning("Error reading persistent compilation cache entry %s (%s); tracing "
                      "again", path, e)
  exported = jax.export.export(fn)(*args)
  try:
    files.makedirs(os.path.dirname(path))
    files.write(path, exported.serialize())  # whole or absent, also with several processes
    COUNTS["saved"] += 1
  except OSError as e:
    logging.warning("could not save traced step %s (%s); running without saving it", path, e)
  return jax.jit(exported.call)


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
    if COUNTS["loaded"] or COUNTS["saved"]:
      cache += f"; traced steps {COUNTS['loaded']} read, {COUNTS['saved']} saved"
    return f"compilation {self.seconds:.1f} s ({cache})"
