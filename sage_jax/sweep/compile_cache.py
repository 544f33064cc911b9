"""JAX's persistent compilation cache (keyed on the traced program) through sage_jax's own
store: entries checksummed, crash-safe, atomic on any gfile folder, pruned of its own files
only; it never fails a run (docs/choices.md, "The compilation cache").
"""
import contextlib
import hashlib
import os
import re
import threading
import time

from absl import flags
from absl import logging
import jax
from jax._src import compilation_cache as jax_cache  # the store JAX's cache writes through
from jax._src import compilation_cache_interface
from jax._src import path as jax_path
from jax.experimental.compilation_cache import compilation_cache

from sage_jax import files
from sage_jax import timing

DEFAULT = "~/.cache/sage_jax/jax_cache"
OFF = ("", "off", "none")
MAX_BYTES = 2 << 30           # least recently used entries beyond this are removed
MAX_AGE_SECONDS = 30 * 86400  # entries not used for this long are removed
TMP_AGE_SECONDS = 3600        # temporary files older than this are left from killed writes
LOAD_GRACE_SECONDS = 10       # a younger loading marker may be another process's load now
_MAGIC = b"sage_jax compile cache entry v1\n"
_SUFFIX = ".entry"
_LOADING_SUFFIX = ".loading"  # beside an entry while a process loads it
_PROBE = f".sage_jax_probe{_SUFFIX}"  # `enable` writes and removes it to test the folder
# The only names `prune` removes: what the store writes. An entry is JAX's cache key (the
# module's name, "-", a sha256 in hex) + ".entry"; beside it its loading marker; and
# `files.write`'s temporary file for either (".tmp" + 32 hex digits).
_OWN = re.compile(r"(?P<entry>(?:.+-[0-9a-f]{64}|\.sage_jax_probe)\.entry)"
                  r"(?P<loading>\.loading)?(?P<tmp>\.tmp[0-9a-f]{32})?")
_OLD_STEP = re.compile(r"(?:edge|ceiling|budget)-[0-9a-f]{32}")  # steps/ before 2026-12
_LOADING = {}                 # thread -> the marker of the entry its JAX is loading
_LISTENING = []               # [True] once `_loaded` listens to JAX's cache events

# One flag for every entry point (main, benchmark) that imports this module.
FLAG = flags.DEFINE_string("compile_cache", DEFAULT, "Folder of the persistent compilation "
                           "cache, local or any gfile path such as gs://... (a second run "
                           "loads its compiled steps from there); 'off' turns it off. The "
                           "benchmark's compile rows always bypass it.")


def enable(path: str):
  """Turns the cache on in `path` -> the folder used, or None (off, or not usable)."""
  if path.strip().lower() in OFF:
    return None
  path = files.expanduser(path)
  if not files.is_remote(path):
    path = os.path.abspath(path)
  try:
    jax_path.Path(path)  # JAX names side caches under the folder with etils.epath
    files.makedirs(path)
    probe = os.path.join(path, _PROBE)
    files.write(probe, b"")
    files.remove(probe)
  except Exception as e:  # pylint: disable=broad-except  (epath's KeyError, OSError, gfile's)
    logging.warning("compilation cache folder %s is not usable (%s; JAX takes a local folder "
                    "or gs://, s3://, az://); running without the cache", path,
                    getattr(e, "strerror", None) or repr(e))
    return None
  prune(path)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  if files.is_remote(path):  # XLA's own GPU side caches write local files only
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
  jax_cache.get_file_cache = lambda folder: (_Store(folder), folder)
  if not _LISTENING:
    jax.monitoring.register_event_listener(_loaded)
    _LISTENING.append(True)
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


class _Store(compilation_cache_interface.CacheInterface):
  """JAX's entries as `<key>.entry` files: a header, the sha256 of the value, the value."""

  def __init__(self, folder: str):
    self._path = folder  # (JAX logs it)

  def _file(self, key: str) -> str:
    return os.path.join(self._path, key + _SUFFIX)

  def get(self, key: str):
    _loaded()  # the entry this thread read before was compiled over instead (or a miss)
    path = self._file(key)
    try:
      data = files.read_bytes(path)
    except FileNotFoundError:
      return None
    value = data[len(_MAGIC) + 32:]
    if data[:len(_MAGIC)] != _MAGIC or data[len(_MAGIC):len(_MAGIC) + 32] != _digest(value):
      return _discard(path, "is damaged (its checksum does not match)")
    marker = path + _LOADING_SUFFIX
    with contextlib.suppress(Exception):  # none: never loaded, or loaded to the end
      if time.time() - files.mtime(marker) > LOAD_GRACE_SECONDS:
        return _discard(path, "was being loaded by a process that died")
    with contextlib.suppress(Exception):
      files.write(marker, b"")
      _LOADING[threading.get_ident()] = marker
    if not files.is_remote(path):
      with contextlib.suppress(OSError):
        os.utime(path)  # used now (for `prune`)
    return value

  def put(self, key: str, value: bytes):
    _loaded()
    try:  # replaces an entry that verified but failed to load
      files.write(self._file(key), _MAGIC + _digest(value) + value)
    except Exception as e:  # pylint: disable=broad-except  (a full disk never fails a run)
      logging.warning("could not write compilation cache entry %s (%s)", self._file(key), e)


def _digest(value: bytes) -> bytes:
  return hashlib.sha256(value).digest()


def _discard(path: str, why: str) -> None:
  """One warning; the entry goes, so JAX compiles the step again and `put` replaces it."""
  logging.warning("compilation cache entry %s %s; removing it, compiling again and "
                  "replacing it", path, why)
  for p in (path, path + _LOADING_SUFFIX):
    with contextlib.suppress(Exception):
      files.remove(p)


def _loaded(event="/jax/compilation_cache/cache_hits", **kwargs):
  """JAX loaded (its cache-hit event) or moved on from the entry this thread read: its marker
  goes; one left behind names an entry whose load killed the process."""
  del kwargs
  if event == "/jax/compilation_cache/cache_hits":
    marker = _LOADING.pop(threading.get_ident(), None)
    if marker:
      with contextlib.suppress(Exception):
        files.remove(marker)


def prune(folder: str, now=None) -> list:
  """Removes the store's old, least recently used and stale temporary files -> the names
  removed (a file another process removed first is skipped). Only names the store writes
  (`_OWN`) are touched: the folder may hold a user's own files, and those stay whatever
  their age or name. Names rather than a marker file claiming the folder: nothing to write
  before the first entry, the same on gs://, and caches made before keep being pruned
  (docs/choices.md, "The compilation cache")."""
  now = time.time() if now is None else now
  removed, entries, gone = [], [], set()
  for name in files.listdir(folder):
    path, own = os.path.join(folder, name), _OWN.fullmatch(name)
    try:
      if name == "steps" and not files.is_remote(folder) and os.path.isdir(path):
        removed += _old_steps(path)
      elif own is None:
        continue
      elif own["tmp"] and now - files.mtime(path) > TMP_AGE_SECONDS:  # a killed write's
        files.remove(path)
        removed.append(name)
      elif own["loading"] and not own["tmp"] and now - files.mtime(path) > LOAD_GRACE_SECONDS:
        _discard(os.path.join(folder, own["entry"]), "was being loaded by a process that died")
        removed += [name, own["entry"]]
        gone.add(own["entry"])
      elif not own["tmp"] and not own["loading"]:
        entries.append((files.mtime(path), name, files.size(path)))
    except OSError:
      continue
  total = 0
  for used, name, size in sorted(e for e in entries if e[1] not in gone)[::-1]:  # newest first
    total += size
    if now - used > MAX_AGE_SECONDS or total > MAX_BYTES:
      with contextlib.suppress(Exception):
        files.remove(os.path.join(folder, name))
        removed.append(name)
  if removed:
    logging.info("compilation cache: removed %d old files from %s", len(removed), folder)
  return removed


def _old_steps(folder: str) -> list:
  """The traced steps an earlier version kept in the cache's steps/ (docs/choices.md) ->
  their names removed; the folder too once nothing else is in it."""
  removed = []
  for name in sorted(os.listdir(folder)):
    if _OLD_STEP.fullmatch(name) and os.path.isfile(os.path.join(folder, name)):
      os.remove(os.path.join(folder, name))
      removed.append(f"steps/{name}")
  if not os.listdir(folder):
    os.rmdir(folder)
    removed.append("steps")
  return removed


# The duration events of compiling one program, in the order JAX sends them, and the names
# of its seconds in `Stats.programs`.
STAGES = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
          "/jax/core/compile/backend_compile_duration": "compile_s"}
_ORDER = tuple(STAGES.values())
_HIT, _MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"
_RETRIEVAL = "/jax/compilation_cache/cache_retrieval_time_sec"
_OPEN = 64  # programs a thread may have traced or lowered and not compiled yet


def _base(name: str) -> str:
  """JAX names a program 'f' when it traces it, 'jit(f)' when it lowers and compiles it."""
  m = re.fullmatch(r"\w+\((.*)\)", name)
  return m[1] if m else name


class _Program:
  """One program's seconds of each stage, its name, and its label and input shapes where
  the caller gave them (`timing.labelled`)."""
  __slots__ = ("name", "base", "label", "shapes", "seconds", "last", "cache", "retrieval_s")

  def __init__(self, name: str, label):
    self.name, self.base = name, _base(name)
    self.label, self.shapes = (label.label, label.shapes()) if label else (None, None)
    self.seconds = dict.fromkeys(_ORDER, 0.0)
    self.last, self.cache, self.retrieval_s = -1, "off", None

  def add(self, stage: str, name: str, seconds: float):
    self.seconds[stage] += seconds
    self.last = _ORDER.index(stage)
    self.name = name if stage != "trace_s" else self.name  # lowered: JAX's module name

  def to_json(self) -> dict:
    out = dict(name=self.name)
    if self.label is not None:
      out["label"] = self.label
    if self.shapes:
      out["shapes"] = self.shapes
    out.update(self.seconds, cache=self.cache)
    if self.retrieval_s is not None:
      out["cache_retrieval_s"] = self.retrieval_s
    return out


class Stats:
  """Compilation seconds and persistent-cache hits/misses from jax.monitoring events, nested
  events counted once, in all and per program (`programs`). Listeners stay registered: make
  one per process."""

  def __init__(self):
    self.seconds, self.hits, self.misses = 0.0, 0, 0
    self._spans = []     # (end, seconds) of the outermost events so far
    self._programs = []  # _Program, in the order JAX began them
    self._open = {}      # thread -> its programs not compiled yet
    self._cache = {}     # thread -> [hit | miss, retrieval seconds] for its next compile
    self._lock = threading.RLock()  # a label's shapes are read while it is held
    clock = timing.stopwatch()

    def on_duration(event, duration, **kwargs):
      if event == _RETRIEVAL:
        self._cache.setdefault(threading.get_ident(), ["off", None])[1] = duration
      if event not in STAGES:
        return
      with self._lock:
        end = clock()  # events ending inside this one's span are in its duration already
        inner = [sp for sp in self._spans if sp[0] >= end - duration]
        self._spans = [sp for sp in self._spans if sp[0] < end - duration] + [(end, duration)]
        own = duration - sum(d for _, d in inner)
        self.seconds += own
        self._record(STAGES[event], str(kwargs.get("fun_name", "?")), own)

    def on_event(event, **kwargs):
      del kwargs
      if event in (_HIT, _MISS):
        self.hits += event == _HIT
        self.misses += event == _MISS
        self._cache.setdefault(threading.get_ident(), ["off", None])[0] = (
            "hit" if event == _HIT else "miss")

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

  def _record(self, stage: str, name: str, seconds: float):
    """An event's own seconds to its program: this thread's latest one of that name not past
    this stage yet (JAX traces, lowers, then compiles it), else a new one."""
    thread = threading.get_ident()
    waiting = self._open.setdefault(thread, [])
    program = next((p for p in reversed(waiting) if p.base == _base(name)
                    and p.last < _ORDER.index(stage)), None)
    if program is None:
      program = _Program(name, timing.current_label())
      self._programs.append(program)
      waiting.append(program)
    program.add(stage, name, seconds)
    if stage == "compile_s":
      program.cache, program.retrieval_s = self._cache.pop(thread, ("off", None))
      waiting.remove(program)
    del waiting[:-_OPEN]  # traced, never compiled (jax.eval_shape): not waited for forever

  def mark(self) -> int:
    """-> where the programs from now on begin (for `programs`)."""
    return len(self._programs)

  def programs(self, since: int = 0) -> list:
    """The programs JAX began since `mark` gave `since` -> timing.json's dicts: name (JAX's),
    label and shapes of the inputs (where `timing.labelled`), trace_s, lower_s, compile_s
    (all of them add up to the seconds counted since), cache: hit | miss (read from or
    written to the persistent cache) | off (neither; only traced), cache_retrieval_s on a
    hit (inside its compile_s)."""
    with self._lock:
      return [p.to_json() for p in self._programs[since:]]

  def summary(self) -> str:
    cache = (f"persistent cache {self.hits} hits, {self.misses} misses"
             if self.hits or self.misses else "persistent cache off")
    return f"compilation {self.seconds:.1f} s ({cache})"
