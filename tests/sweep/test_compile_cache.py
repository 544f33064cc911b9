"""The persistent compilation cache never changes a result: a user's rule edited between two
runs, another config with the same shapes, a changed JAX setting and damaged entries all
give the files of a run without the cache; an unusable folder never fails a run."""
import hashlib
import io
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid

from etils.epath import gpath, register
import jax
import numpy as np
import pytest

from sage_jax import defaults
from sage_jax import files
from sage_jax.sweep import compile_cache
from sage_jax.sweep import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ("results.csv", "results.json", "per_image.npz", "report.md")
# A rule registered from a config file, as the README shows; ORDER is what the user edits.
USER_CONFIG = textwrap.dedent("""\
    import jax
    import jax.numpy as jnp
    from sage_jax import defaults
    from sage_jax import rules

    ORDER = {order}  # +1: after the `skip` most attended; -1: from the least attended

    def skip_top(importance, embeddings, key, budget, skip=1):
      del embeddings, key
      order = jax.lax.top_k(ORDER * importance, importance.shape[0])[1]
      return rules.Selection(order[skip:skip + budget].astype(jnp.int32),
                                 jnp.ones(budget, bool), jnp.int32(budget))

    rules.RULES["skip_top"] = rules.Rule(skip_top, primary="skip")

    def get_config(arg=None):
      del arg
      return defaults.sweep_config()
    """)


def _run(tmp_path, cache, rules, order=1):
  """One sweep in its own process (as a user runs it) -> (log, {file: bytes})."""
  config = tmp_path / f"user_{uuid.uuid4().hex}.py"
  config.write_text(USER_CONFIG.format(order=order))
  workdir = tmp_path / f"w_{uuid.uuid4().hex}"
  proc = subprocess.run(
      [sys.executable, "-m", "sage_jax.main", f"--config={config}", f"--workdir={workdir}",
       "--config.num_images=60", f"--config.rules={rules}", "--config.budgets=4",
       "--config.report.n_boot=10", f"--compile_cache={cache}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr, {f: (workdir / f).read_bytes() for f in FILES}


def _preds(out):
  with np.load(io.BytesIO(out["per_image.npz"])) as z:
    return z["server_pred"]


@pytest.mark.slow
def test_an_edited_user_rule_is_compiled_again(tmp_path):
  cache = tmp_path / "cache"
  rules = "topk,sage,skip_top@1"
  _, before = _run(tmp_path, cache, rules, order=1)
  log, edited = _run(tmp_path, cache, rules, order=-1)  # same config, the rule edited
  _, off = _run(tmp_path, "off", rules, order=-1)
  assert edited == off, log[-2000:]
  assert (_preds(before)[:, 2] != _preds(edited)[:, 2]).any()  # the edit changes answers


@pytest.mark.slow
def test_two_configs_and_damaged_entries_in_one_folder(tmp_path):
  cache = tmp_path / "cache"
  _run(tmp_path, cache, "topk,sage,skip_top@1")
  # Same shapes (3 rules, one budget), other rules, another score, another parameter.
  other = "topk:cls_all,diversity,skip_top@3"
  log, warm = _run(tmp_path, cache, other)
  _, off = _run(tmp_path, "off", other)
  assert warm == off, log[-2000:]
  entries = [p for p in cache.iterdir() if p.name.endswith(".entry")]
  assert entries
  for p in entries:  # one changed byte at several places of every entry
    data = bytearray(p.read_bytes())
    for at in (5, 40, len(data) // 3, len(data) // 2, len(data) - 3):
      data[at] ^= 0x10
    p.write_bytes(bytes(data))
  log, damaged = _run(tmp_path, cache, other)
  assert damaged == off
  hits, misses, loaded, saved = _counts(log)
  # Every read warned: JAX's entries (then compiled) and the steps' whole executables
  # (then compiled and saved again).
  assert hits == loaded == 0 and log.count("is damaged") == misses + saved, log[-3000:]
  assert misses > 0 and saved > 0
  log, clean = _run(tmp_path, cache, other)  # the entries were replaced
  assert clean == off
  assert "is damaged" not in log and _counts(log)[1::2] == (0, 0), log[-3000:]
  assert _counts(log)[2] == saved  # every step loaded whole


def _counts(log: str) -> tuple:
  """-> (hits, misses, executables loaded, saved) from the run's log (`Stats.summary`)."""
  return tuple(map(int, re.search(r"persistent cache (\d+) hits, (\d+) misses; executables "
                                  r"(\d+) loaded, (\d+) saved", log).groups()))


def _config(**overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(num_images=60, budgets="4", **overrides)
  c.report.n_boot = 10
  return c


@pytest.mark.slow
def test_a_changed_jax_setting_is_compiled_again(tmp_path):
  """The session's cache (tests/conftest.py) holds the steps traced with the default
  jax_threefry_partitionable; flipped, the cached run must equal the uncached one."""
  c = _config(rules="random,topk")
  loop.run(c, str(tmp_path / "default"), progress=False)
  was = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", not was)
  try:
    loop.run(c, str(tmp_path / "cached"), progress=False)
    with compile_cache.bypassed():
      loop.run(c, str(tmp_path / "off"), progress=False)
  finally:
    jax.config.update("jax_threefry_partitionable", was)
  read = lambda name, f: (tmp_path / name / f).read_bytes()
  for f in FILES:
    assert read("cached", f) == read("off", f), f
  with np.load(tmp_path / "default" / "per_image.npz") as a, np.load(
      tmp_path / "cached" / "per_image.npz") as b:
    assert (a["server_pred"][:, 0] != b["server_pred"][:, 0]).any()  # random's keys changed


def test_a_gfile_folder_holds_the_cache(monkeypatch):
  """ram:// stands in for gs://: entries are written there, not to a local ./ram:/...
  JAX names its cache folder with etils.epath, which knows gs:// but not ram://; the test
  registers ram:// the way epath registers gs://."""
  monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)
  was = jax.config.jax_compilation_cache_dir
  xla_caches = jax.config.jax_persistent_cache_enable_xla_caches
  folder = f"ram://cache-{uuid.uuid4().hex}"
  hits = []
  jax.monitoring.register_event_listener(
      lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
  try:
    assert compile_cache.enable(folder) == folder
    f = lambda x: x * 3.0 + 1.0
    np.testing.assert_array_equal(jax.jit(f)(np.arange(3.0)), [1, 4, 7])
    assert any(n.endswith(".entry") for n in files.listdir(folder))
    assert not os.path.exists("ram:")
    jax.clear_caches()
    np.testing.assert_array_equal(jax.jit(f)(np.arange(3.0)), [1, 4, 7])
    assert hits
  finally:
    jax.config.update("jax_persistent_cache_enable_xla_caches", xla_caches)
    if was:
      compile_cache.enable(was)  # the session's cache (tests/conftest.py)


def _key(name: str) -> str:
  """A cache key as JAX names one: the module's name, '-', a sha256 in hex."""
  return f"jit_{name}-{hashlib.sha256(name.encode()).hexdigest()}"


def test_prune_removes_old_unused_and_leftover_files(tmp_path, monkeypatch):
  monkeypatch.setattr(compile_cache, "MAX_BYTES", 250)
  now, day = 1_000_000_000.0, 86400
  live, killed = f".tmp{uuid.uuid4().hex}", f".tmp{uuid.uuid4().hex}"
  made = {  # name: (bytes, days since last use)
      _key("new") + ".entry": (100, 0), _key("mid") + ".entry": (100, 1),
      _key("older") + ".entry": (100, 2), _key("stale") + ".entry": (10, 31),
      _key("x") + ".entry" + live: (5, 0.5 / 24), _key("y") + ".entry" + killed: (5, 2 / 24),
      "other.txt": (1000, 100)}
  for name, (size, age) in made.items():
    (tmp_path / name).write_bytes(b"x" * size)
    os.utime(tmp_path / name, (now - age * day, now - age * day))
  (tmp_path / "steps").mkdir()  # traced steps of the version before 2026-12
  (tmp_path / "steps" / f"budget-{'ab' * 16}").write_bytes(b"old traced step")
  removed = compile_cache.prune(str(tmp_path), now=now)
  # 100 + 100 fit in 250 bytes, the third most recent does not; 31 days is too old; a
  # temporary file of 2 hours is left from a killed write, one of 30 minutes may be live.
  assert sorted(removed) == sorted([_key("older") + ".entry", _key("stale") + ".entry",
                                    f"steps/budget-{'ab' * 16}", "steps",
                                    _key("y") + ".entry" + killed])
  assert sorted(os.listdir(tmp_path)) == sorted([_key("mid") + ".entry", _key("new") + ".entry",
                                                 "other.txt", _key("x") + ".entry" + live])


def test_a_folder_jax_cannot_name_is_refused_not_made_local():
  assert compile_cache.enable("hdfs://host/cache") is None
  assert not os.path.exists("hdfs:")


@pytest.mark.slow
def test_unusable_cache_folders_never_fail_a_run(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")  # a file where the cache folder's parent should be
  log, _ = _run(tmp_path, blocker / "cache", "topk,sage,skip_top@1")
  assert f"compilation cache folder {blocker / 'cache'} is not usable" in log
  assert "compilation cache: off" in log



# Compiles one function with the cache in argv[1]; with argv[2] == "die", the process dies
# as soon as an entry is read, as a crash in XLA's deserialization would kill it.
LOADER = textwrap.dedent("""\
    import os, sys
    import jax, numpy as np
    from sage_jax.sweep import compile_cache
    compile_cache.enable(sys.argv[1])
    if sys.argv[2] == "die":
      read = compile_cache._Store.get
      def get(self, key):
        value = read(self, key)
        if value is not None:
          os._exit(3)
        return value
      compile_cache._Store.get = get
    print(jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(3.0)).tolist())
    """)


@pytest.mark.slow
def test_an_entry_that_killed_its_loader_is_compiled_again(tmp_path):
  cache = tmp_path / "cache"
  run = lambda how: subprocess.run([sys.executable, "-c", LOADER, str(cache), how], cwd=ROOT,
                                   capture_output=True, text=True, timeout=300)
  assert run("ok").stdout.strip() == "[1.0, 4.0, 7.0]"
  (entry,) = [p for p in cache.iterdir() if p.name.startswith("jit_") and
              p.name.endswith(".entry")]
  assert run("die").returncode == 3
  marker = entry.with_name(entry.name + ".loading")
  assert marker.exists()
  old = marker.stat().st_mtime - compile_cache.LOAD_GRACE_SECONDS - 1  # the next run, later
  os.utime(marker, (old, old))
  proc = run("ok")
  assert proc.returncode == 0 and proc.stdout.strip() == "[1.0, 4.0, 7.0]", proc.stderr[-2000:]
  assert proc.stderr.count("was being loaded by a process that died") == 1, proc.stderr[-2000:]
  assert entry.exists() and not marker.exists()  # compiled again and replaced
  proc = run("ok")  # a clean hit: no warning, and its load leaves no marker
  assert proc.stdout.strip() == "[1.0, 4.0, 7.0]" and "died" not in proc.stderr
  assert not marker.exists()


# Files a user keeps in a folder also given as --compile_cache (issue 34): none of them is
# the cache's, however old, whatever its name looks like.
USER_FILES = ("steps/sub/data.txt", "draft.tmp.txt", "thesis.loading", "thesis", "notes.txt",
              "notes.entry", "notes.entry.loading", f"notes.entry.tmp{'0' * 32}",
              f"{'1' * 64}.entry", f"steps/budget-{'ab' * 16}.txt")


def test_pruning_removes_only_what_the_cache_wrote(tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  long_ago = time.time() - 400 * 86400
  for name in USER_FILES:
    (cache / name).parent.mkdir(parents=True, exist_ok=True)
    (cache / name).write_bytes(f"the user's {name}".encode() * 100)
    os.utime(cache / name, (long_ago, long_ago))
  # The cache's own files: stale ones (an entry past 30 days, one beyond the size limit, a
  # temporary file of 2 hours, a marker of a load that died and its entry, an old traced
  # step) and ones to keep.
  ages = {_key("kept") + ".entry": 0, _key("too_many") + ".entry": 120,
          _key("stale") + ".entry": 31 * 86400, _key("dead") + ".entry": 60,
          _key("dead") + ".entry.loading": 60,
          _key("killed") + f".entry.tmp{uuid.uuid4().hex}": 7200,
          _key("killed") + f".entry.loading.tmp{uuid.uuid4().hex}": 7200,
          f"steps/edge-{'cd' * 16}": 86400}
  now = time.time()
  for name, age in ages.items():
    (cache / name).write_bytes(b"x" * 100)
    os.utime(cache / name, (now - age, now - age))
  monkeypatch.setattr(compile_cache, "MAX_BYTES", 150)  # the most recent entry fits
  removed = compile_cache.prune(str(cache), now=now)
  assert sorted(removed) == sorted(n for n in ages if n != _key("kept") + ".entry"), removed
  monkeypatch.undo()
  for name in USER_FILES:
    assert (cache / name).read_bytes() == f"the user's {name}".encode() * 100, name
  # A run with the cache in that folder prunes it again and adds its entry beside them.
  before = set(os.listdir(cache))
  proc = subprocess.run([sys.executable, "-c", LOADER, str(cache), "ok"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.stdout.strip() == "[1.0, 4.0, 7.0]", proc.stderr[-2000:]
  for name in USER_FILES:
    assert (cache / name).read_bytes() == f"the user's {name}".encode() * 100, name
  assert [n for n in set(os.listdir(cache)) - before if n.endswith(".entry")]
  assert (cache / (_key("kept") + ".entry")).exists()
