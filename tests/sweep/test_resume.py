"""A sweep killed at any point resumes with the same command and ends byte-identical."""
import io
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from sage_jax import files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["-m", "sage_jax.main", "--config=configs/fmnist_sweep.py", "--config.num_images=500",
        "--config.rules=random,topk,sage,bat",
        "--config.chunk_size=50", "--config.budgets=4,16", "--config.batch_size=50"]
FILES = ("results.csv", "results.json", "per_image.npz", "report.md", "curves.png",
         "selection_map.png")


# Background jobs of a non-interactive shell (CI, nohup ... &) inherit SIGINT ignored;
# give the sweep the handler it has in a terminal, where Ctrl-C interrupts it. Set in the
# child's own interpreter, not by preexec_fn: forking a process that runs JAX's threads and
# running Python code before exec may deadlock.
_MAIN_WITH_SIGINT = ("import runpy, signal, sys; "
                     "signal.signal(signal.SIGINT, signal.default_int_handler); "
                     "runpy.run_module('sage_jax.main', run_name='__main__', alter_sys=True)")
assert ARGS[:2] == ["-m", "sage_jax.main"]


def _start(workdir, *extra, env=None):
  return subprocess.Popen([sys.executable, "-c", _MAIN_WITH_SIGINT, *ARGS[2:],
                           f"--workdir={workdir}", *extra], cwd=ROOT,
                          env=dict(os.environ, **(env or {})),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _chunks(workdir):
  d = os.path.join(workdir, "progress")
  return sorted(f for f in os.listdir(d) if f.endswith(".npz")) if os.path.isdir(d) else []


def _kill_after(workdir, n_chunks, sig):
  """Runs the sweep until it has saved n_chunks more, where it sends itself `sig` (the sweep's
  test hook: a known point, no race with a polling test) -> its exit code."""
  proc = _start(workdir, env={"SAGE_JAX_TEST_STOP": f"{n_chunks}:{sig.name}"})
  return proc.wait(timeout=600)


def _read(workdir):
  return {f: open(os.path.join(workdir, f), "rb").read() for f in FILES}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ref"))
  proc = _start(workdir)
  assert proc.wait(timeout=600) == 0, proc.stderr.read()
  return workdir, _read(workdir)


@pytest.mark.slow
def test_killed_runs_resume_byte_identical(reference, tmp_path):
  workdir = str(tmp_path / "w")
  # 10 chunks of 50 images.
  # Killed after 2 chunks, then interrupted (Ctrl-C) after 3 more: 5 of 10 chunks saved.
  assert _kill_after(workdir, 2, signal.SIGKILL) == -signal.SIGKILL
  assert len(_chunks(workdir)) == 2
  assert _kill_after(workdir, 3, signal.SIGINT) != 0
  assert not os.path.exists(os.path.join(workdir, "results.csv"))
  assert len(_chunks(workdir)) == 5
  # A half-written chunk (as if killed mid-write without the atomic rename) is redone.
  with open(os.path.join(workdir, "progress", _chunks(workdir)[-1]), "r+b") as f:
    f.truncate(100)
  proc = _start(workdir)
  assert proc.wait(timeout=600) == 0, proc.stderr.read()
  got = _read(workdir)
  for f in FILES:
    assert got[f] == reference[1][f], f"{f} differs from the uninterrupted run"


@pytest.mark.slow
def test_same_command_twice_is_byte_identical(reference):
  workdir, first = reference
  proc = _start(workdir)  # every chunk is done: only the summary is rewritten
  assert proc.wait(timeout=600) == 0, proc.stderr.read()
  assert _read(workdir) == first


@pytest.mark.slow
def test_other_config_is_refused_or_goes_to_subdir(reference):
  workdir, first = reference
  proc = _start(workdir, "--config.seed=1")
  assert proc.wait(timeout=600) == 2
  assert "holds results of another config" in proc.stderr.read()
  assert _read(workdir) == first  # nothing lost or mixed
  proc = _start(workdir, "--config.seed=1", "--new_subdir")
  assert proc.wait(timeout=600) == 0, proc.stderr.read()
  subdirs = [d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d))
             and d != "progress"]
  assert len(subdirs) == 1 and os.path.exists(os.path.join(workdir, subdirs[0], "results.csv"))


def test_npz_bytes_are_deterministic(monkeypatch):
  a = {"y": np.ones((2, 3), np.float32), "x": np.arange(5)}
  data = files.npz_bytes(a)
  with zipfile.ZipFile(io.BytesIO(data)) as zf:  # fixed timestamps, names in sorted order
    assert [(i.filename, i.date_time, i.compress_type) for i in zf.infolist()] == [
        ("x.npy", (1980, 1, 1, 0, 0, 0), zipfile.ZIP_DEFLATED),
        ("y.npy", (1980, 1, 1, 0, 0, 0), zipfile.ZIP_DEFLATED)]
  # Another time on the clock, and the arrays given in another order: the same bytes.
  monkeypatch.setattr(time, "time", lambda: 2e9)
  monkeypatch.setattr(time, "localtime", lambda *_: time.gmtime(2e9))
  assert files.npz_bytes({"x": a["x"], "y": a["y"]}) == data
  with np.load(io.BytesIO(data)) as z:
    assert sorted(z.files) == ["x", "y"]
    np.testing.assert_array_equal(z["x"], a["x"])
    np.testing.assert_array_equal(z["y"], a["y"])
