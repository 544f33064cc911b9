"""JAX's persistent compilation cache (keyed on the traced program) through sage_jax's own
store: entries checksummed, crash-safe, atomic on any gfile folder, pruned of its own files
only; it never fails a run. The sweep's steps are also saved whole (`Program`), so a warm
run loads them without tracing (docs/choices.md, "The compilation cache").
"""
import contextlib
import functools
import hashlib
import inspect
import json
import os
import pickle
import re
import sys
import threading
import time
from typing import Callable

from absl import flags
from absl import logging
import jax
from jax._src import compilation_cache as jax_cache  # the store JAX's cache writes through
from jax._src import compilation_cache_interface
from jax._src import path as jax_path
from jax.experimental import serialize_executable
from jax.experimental.compilation_cache import compilation_cache
import numpy as np

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
    self.loaded, self.saved = 0, 0  # whole executables (`Program`)
    self._spans = []     # (end, seconds) of the outermost events so far
    self._programs = []  # _Program, in the order JAX began them
    self._open = {}      # thread -> its programs not compiled yet
    self._cache = {}     # thread -> [hit | miss, retrieval seconds] for its next compile
    self._last = {}      # thread -> the program it compiled last
    self._lock = threading.RLock()  # a label's shapes are read while it is held
    clock = timing.stopwatch()

    def on_duration(event, duration, **kwargs):
      if event == _RETRIEVAL:
        self._cache.setdefault(threading.get_ident(), ["off", None])[1] = duration
      if event not in STAGES and event not in (LOAD_EVENT, SAVE_EVENT):
        return
      with self._lock:
        end = clock()  # events ending inside this one's span are in its duration already
        inner = [sp for sp in self._spans if sp[0] >= end - duration]
        self._spans = [sp for sp in self._spans if sp[0] < end - duration] + [(end, duration)]
        own = duration - sum(d for _, d in inner)
        self.seconds += own
        name = str(kwargs.get("fun_name", "?"))
        if event == LOAD_EVENT:  # a whole executable: no trace, no lowering
          self.loaded += 1
          program = _Program(name, timing.current_label())
          program.add("compile_s", name, own)
          program.cache = "loaded"
          self._programs.append(program)
        elif event == SAVE_EVENT:  # the executable just compiled, saved
          self.saved += 1
          last = self._last.get(threading.get_ident())
          if last is not None:
            last.seconds["compile_s"] += own
            last.cache = "miss"
        else:
          self._record(STAGES[event], name, own)

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
      self._last[thread] = program
    del waiting[:-_OPEN]  # traced, never compiled (jax.eval_shape): not waited for forever

  def mark(self) -> int:
    """-> where the programs from now on begin (for `programs`)."""
    return len(self._programs)

  def programs(self, since: int = 0) -> list:
    """The programs JAX began since `mark` gave `since` -> timing.json's dicts: name (JAX's),
    label and shapes of the inputs (where `timing.labelled`), trace_s, lower_s, compile_s
    (all of them add up to the seconds counted since; compile_s holds the save of a
    `Program`'s executable), cache: hit | miss (read from or written to the persistent
    cache) | off (neither; only traced) | loaded (a `Program`'s whole executable, its name
    the program's; compile_s is the load), cache_retrieval_s on a hit (inside its
    compile_s)."""
    with self._lock:
      return [p.to_json() for p in self._programs[since:]]

  def summary(self) -> str:
    cache = (f"persistent cache {self.hits} hits, {self.misses} misses; executables "
             f"{self.loaded} loaded, {self.saved} saved"
             if self.hits or self.misses or self.loaded else "persistent cache off")
    return f"compilation {self.seconds:.1f} s ({cache})"


# --- Whole executables: a warm run loads a step without tracing or lowering it ---------
# JAX's key above is a hash of the lowered program, so a warm run still traces and lowers
# every step to find it (4.1 s of a 300-image run's 4.9 s of compiling, issue 38). A
# `Program` keys the executable on what the traced program is a function of instead: the
# run's `fingerprint` (the code that traces it, the plan and models, JAX's settings and
# versions, the devices, XLA's flags), the program's name and its arguments' types
# (docs/choices.md, "The compilation cache").
LOAD_EVENT = "/sage_jax/compile_cache/executable_load_duration"
SAVE_EVENT = "/sage_jax/compile_cache/executable_save_duration"
_EXECUTABLE = "sage_jax_executable"  # entry names: this, "-", a sha256 in hex (`_OWN`)
_CACHE_SETTINGS = re.compile(r".*(cache|persistent|log_compiles|explain).*")  # not the program's
# Environment variables that change what XLA compiles or how it computes (not TensorFlow's
# TPU_ML_PLATFORM, which its import sets in the middle of a run).
_ENV = ("XLA_", "JAX_", "LIBTPU_INIT_ARGS", "NVIDIA_TF32_OVERRIDE")
_DIGESTS = {}  # source path -> (mtime_ns, size, sha256): each file hashed once while unchanged
_JAX_FILE_CACHE = jax_cache.get_file_cache  # replaced by `enable` with sage_jax's store


def _folder():
  """The folder `enable` set, or None: cache off, `bypassed`, or several processes (their
  executables span hosts; JAX's own cache serves them)."""
  if not (jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir
          and jax_cache.get_file_cache is not _JAX_FILE_CACHE) or jax.process_count() > 1:
    return None
  return jax.config.jax_compilation_cache_dir


def _source_files() -> list:
  """The Python files a traced step may run: every file of the sage_jax package (loaded or
  not, so that the list does not grow as a process imports more of it), every loaded module
  from outside the installed packages and the standard library (a user's code), and the
  files defining the registered rules and scores (a config file's rule). Installed packages
  count by version (`fingerprint`)."""
  import sysconfig  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  import sage_jax  # pylint: disable=import-outside-toplevel
  # ... and not the modules tf.data's autograph writes to the temporary folder as it runs.
  installed = tuple(os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                    if k in ("stdlib", "platstdlib", "purelib", "platlib"))
  installed += (os.path.realpath(tempfile.gettempdir()) + os.sep,)
  out = set()
  for folder in sage_jax.__path__:
    for root, _, names in os.walk(folder):
      out.update(os.path.realpath(os.path.join(root, n)) for n in names if n.endswith(".py"))
  for module in list(sys.modules.values()):
    path = os.path.realpath(getattr(module, "__file__", None) or "")
    if path.endswith(".py") and not path.startswith(installed) and os.path.isfile(path):
      out.add(path)  # (a module made at run time may name a file that is not there)
  for fn in _registered():
    code = getattr(fn, "__code__", None)
    if code is not None and os.path.isfile(code.co_filename):
      out.add(os.path.realpath(code.co_filename))
  return sorted(out)


def _registered() -> list:
  """The registered rules (both forms), scores and uncertainties, unwrapped."""
  from sage_jax import importance, rules  # pylint: disable=import-outside-toplevel
  from sage_jax.sweep import offload  # pylint: disable=import-outside-toplevel
  fns = [f for r in rules.RULES.values() for f in (r.fn, r.slots) if f is not None]
  fns += list(importance.IMPORTANCES.values()) + list(offload.UNCERTAINTIES.values())
  return [inspect.unwrap(getattr(fn, "func", fn)) for fn in fns]


# The modules whose functions the steps trace (setup.cfg's hot_path contract): their values
# as they are now go into the fingerprint (`_live_state`).
_TRACED = ("sage_jax.rules", "sage_jax.rules.common", "sage_jax.rules.paper",
           "sage_jax.rules.field", "sage_jax.rules.relevance_diversity", "sage_jax.importance",
           "sage_jax.models.vit", "sage_jax.sweep.edge_step", "sage_jax.sweep.server_step",
           "sage_jax.sweep.uplink", "sage_jax.sweep.offload")


def _live_state() -> dict:
  """What the files do not say: the module-level values of the traced modules and of every
  module defining a registered rule, score or uncertainty, as they are in this process (a
  constant or a function changed in a live session or by a test's monkeypatch; a rule made
  by a factory, its closure; a rule defined in a notebook cell, its code)."""
  from sage_jax import importance, rules  # pylint: disable=import-outside-toplevel
  from sage_jax.sweep import offload  # pylint: disable=import-outside-toplevel
  spaces = {id(vars(sys.modules[name])): vars(sys.modules[name])
            for name in _TRACED if name in sys.modules}
  registered = dict(rules=rules.RULES, scores=importance.IMPORTANCES,
                    uncertainties=offload.UNCERTAINTIES)
  for fn in _registered():
    if hasattr(fn, "__globals__"):
      spaces.setdefault(id(fn.__globals__), fn.__globals__)
  # By content, not by name: a config file's module is named after where the file lies.
  described = (json.dumps(_describe({k: v for k, v in space.items() if not k.startswith("__")}),
                          sort_keys=True) for space in spaces.values())
  return dict(registered=_describe(registered), modules=sorted(described))


def _describe(value, depth: int = 0):
  """A JSON-able account of a value that a traced function may read: numbers and strings,
  arrays by content, containers item by item, functions by code, defaults and closure;
  modules, classes and other objects by type only (depth-limited: cycles)."""
  if depth > 6 or value is None or isinstance(value, (bool, int, float, str)):
    return value if depth <= 6 else "..."
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    a = np.asarray(value)
    return [str(a.dtype), a.shape, hashlib.sha256(a.tobytes()).hexdigest()]
  if isinstance(value, (tuple, list)):
    return [_describe(v, depth + 1) for v in value]
  if isinstance(value, dict):
    return {str(k): _describe(v, depth + 1) for k, v in value.items()}
  if isinstance(value, (set, frozenset)):
    return sorted(map(repr, value))
  if isinstance(value, functools.partial):
    return [_describe(value.func, depth + 1), _describe(value.args, depth + 1),
            _describe(value.keywords, depth + 1)]
  code = getattr(value, "__code__", None)
  if code is not None:
    cells = [c.cell_contents for c in (value.__closure__ or ()) if _filled(c)]
    return [value.__qualname__,  # not its module's name (`_live_state`)
            _code_digest(code),
            _describe(value.__defaults__, depth + 1), _describe(value.__kwdefaults__, depth + 1),
            _describe(cells, depth + 1)]
  return type(value).__qualname__


def _code_digest(code) -> str:
  """sha256 of a code object's bytecode, names and constants, nested code (a lambda, a
  comprehension) by its own digest: not by repr, which holds a memory address."""
  consts = [_code_digest(c) if inspect.iscode(c) else repr(c) for c in code.co_consts]
  return hashlib.sha256(code.co_code + repr((code.co_names, consts)).encode()).hexdigest()


def _filled(cell) -> bool:
  try:
    cell.cell_contents  # pylint: disable=pointless-statement
    return True
  except ValueError:  # empty
    return False


def _file_digest(path: str) -> str:
  st = os.stat(path)
  known = _DIGESTS.get(path)
  if known is None or known[:2] != (st.st_mtime_ns, st.st_size):
    with open(path, "rb") as f:
      known = _DIGESTS[path] = (st.st_mtime_ns, st.st_size, hashlib.sha256(f.read()).hexdigest())
  return known[2]


def fingerprint(*context) -> str:
  """sha256 of what a step's program depends on besides its arguments' types: `context`
  (its repr: the plan, the models), the source of every file `_source_files` names, the
  versions of Python and of the installed packages that trace or compile, JAX's settings
  (but the cache's own), the devices and XLA's environment variables."""
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  versions = {}
  for package in ("jax", "jaxlib", "flax", "numpy", "ml_dtypes", "ml_collections"):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      versions[package] = importlib.metadata.version(package)
  devices = jax.devices()
  parts = dict(
      context=[repr(c) for c in context], python=sys.version, versions=versions,
      code=sorted({_file_digest(path) for path in _source_files()}),  # not where they lie
      live=_live_state(),
      settings={k: repr(v) for k, v in sorted(jax.config.values.items())
                if not _CACHE_SETTINGS.fullmatch(k)},
      devices=[(d.id, d.platform, d.device_kind, d.process_index) for d in devices],
      platform_version=devices[0].client.platform_version, processes=jax.process_count(),
      env={k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV)})
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Program:
  """A jitted step called through its executables, one per argument types: compiled once
  (JAX's cache may still serve the compile) and saved whole in the cache folder, or loaded
  whole from there (no trace, no lowering). `lower` is the jitted function's."""

  def __init__(self, jitted, name: str, context: Callable[[], str], static_argnums=()):
    """context: -> the run's `fingerprint` (asked for once the cache is on)."""
    self.jitted, self.name, self.context, self.static = jitted, name, context, static_argnums
    self.lower = jitted.lower
    self._executables = {}  # (static args, input tree, input types) -> Compiled

  def __call__(self, *args):
    return self.executable(*args)(*(a for i, a in enumerate(args) if i not in self.static))

  def executable(self, *args):
    """The executable for arguments of these types (arrays, or jax.ShapeDtypeStruct with
    their shardings), made once."""
    leaves, tree = jax.tree.flatten([a for i, a in enumerate(args) if i not in self.static])
    static = tuple(args[i] for i in self.static)
    types = (static, tree, tuple((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves))
    executable = self._executables.get(types)
    if executable is None:
      executable = self._executables[types] = self._executable(args, types)
    return executable

  def _executable(self, args, types):
    folder = _folder()
    if folder is None:
      return self.jitted.lower(*args).compile()
    digest = hashlib.sha256(f"{self.context()}\n{self.name}\n{types!r}".encode()).hexdigest()
    key, store, clock = f"{_EXECUTABLE}-{digest}", _Store(folder), timing.stopwatch()
    data = store.get(key)
    if data is not None:
      try:
        executable = serialize_executable.deserialize_and_load(*pickle.loads(data))
      except Exception as e:  # pylint: disable=broad-except  (another jaxlib's, a bad pickle)
        _discard(os.path.join(folder, key + _SUFFIX), f"could not be loaded ({e!r})")
      else:
        _loaded()
        jax.monitoring.record_event_duration_secs(LOAD_EVENT, clock(), fun_name=self.name)
        return executable
    with bypassed():  # an executable JAX's cache loaded fails when saved and loaded again
      executable = self.jitted.lower(*args).compile()  # (XLA:CPU: "Function ... not found")
    clock = timing.stopwatch()
    try:
      data = pickle.dumps(serialize_executable.serialize(executable))
    except (ValueError, NotImplementedError, TypeError, pickle.PicklingError) as e:
      logging.warning("the executable of %s cannot be saved (%s); it compiles in every run",
                      self.name, e)
    else:
      store.put(key, data)
    jax.monitoring.record_event_duration_secs(SAVE_EVENT, clock(), fun_name=self.name)
    return executable
