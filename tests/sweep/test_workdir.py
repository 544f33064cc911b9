"""Workdirs on any gfile filesystem (ram:// stands in for gs://), and what the workdir's hash
covers: checkpoint contents, the dataset, the results version."""
import json
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from sage_jax import defaults
from sage_jax import files
from sage_jax.models import checkpoints
from sage_jax.sweep import loop
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib
from sage_jax.sweep import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ("results.csv", "results.json", "per_image.npz", "report.md", "curves.png",
         "selection_map.png")


def _config(edge, server, **overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint, c.server.checkpoint = edge, server
  c.update(dict(num_images=120, chunk_size=40, batch_size=40, rules="topk,sage",
                budgets="4,16"))
  c.report.n_boot = 50
  c.update(overrides)
  return c


def _local_ckpts():
  return (os.path.join(ROOT, "checkpoints/fmnist_edge.msgpack"),
          os.path.join(ROOT, "checkpoints/fmnist_server.msgpack"))


def _read(workdir):
  return {f: files.read_bytes(os.path.join(workdir, f)) for f in FILES}


@pytest.mark.slow
def test_ram_workdir_interrupted_resumes_like_a_local_run(tmp_path, monkeypatch):
  """A sweep into ram:// (checkpoints read from ram:// too) stopped by an exception after
  two of three chunks resumes in the same process and writes the local run's bytes."""
  edge, server = _local_ckpts()
  local = str(tmp_path / "local")
  loop.run(_config(edge, server), local, progress=False)
  want = _read(local)

  # ram:// is one filesystem per process: a folder of its own, so that no earlier test (or
  # run of this one) in the same process left anything there.
  ram = f"ram://sage_jax_test_{uuid.uuid4().hex}"
  ram_edge, ram_server = f"{ram}/ckpt/fmnist_edge.msgpack", f"{ram}/ckpt/fmnist_server.msgpack"
  files.makedirs(f"{ram}/ckpt")
  for src, dst in ((edge, ram_edge), (server, ram_server)):
    files.write(dst, files.read_bytes(src))
  work = f"{ram}/work"
  real = pipeline.evaluate
  calls = []

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError("interrupted")
    return real(*args, **kwargs)

  monkeypatch.setattr(pipeline, "evaluate", failing)
  with pytest.raises(RuntimeError, match="interrupted"):
    loop.run(_config(ram_edge, ram_server), work, progress=False)
  assert files.listdir(os.path.join(work, "progress")) == [
      "images_00000000_00000040.npz", "images_00000040_00000080.npz"]
  assert not files.exists(os.path.join(work, "results.csv"))

  calls.clear()
  monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
  loop.run(_config(ram_edge, ram_server), work, progress=False)
  assert len(calls) == 1  # only the missing chunk was evaluated
  assert _read(work) == want
  loop.run(_config(ram_edge, ram_server), work, progress=False)  # rewrites every result
  assert _read(work) == want


def test_local_paths_do_not_import_tensorflow(tmp_path):
  code = f"""
import sys
from sage_jax import files
from sage_jax.models import checkpoints
from sage_jax.report import figures
from sage_jax.report import writer
from sage_jax.sweep import loop
from sage_jax.sweep import pipeline
from sage_jax.sweep import workdir
d = {str(tmp_path)!r}
files.makedirs(d + "/a")
files.write(d + "/a/x.bin", b"1")
assert files.read_bytes(d + "/a/x.bin") == b"1" and files.listdir(d + "/a") == ["x.bin"]
workdir.save_chunk(d, 0, 1, {{"x": [1]}})
assert workdir.load_chunk(d, 0, 1)["x"].tolist() == [1]
assert "tensorflow" not in sys.modules, "tensorflow imported"
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]


def test_remote_data_dir_is_not_expanded():
  assert files.expanduser("gs://bucket/~x/tfds") == "gs://bucket/~x/tfds"
  assert files.expanduser("~/tfds") == os.path.expanduser("~/tfds")


def _other_weights(src, dst):
  params, meta = checkpoints.load(src)
  params = {k: v for k, v in params.items()}
  params["head"] = {k: np.asarray(v) + 0.01 for k, v in params["head"].items()}
  checkpoints.save(dst, params, meta)


def test_swapped_checkpoint_is_refused_or_goes_to_subdir(tmp_path):
  edge, server = _local_ckpts()
  mine = str(tmp_path / "edge.msgpack")
  shutil.copy(edge, mine)
  work = str(tmp_path / "work")

  def open_(new_subdir=False):
    plan = plan_lib.make(_config(mine, server))
    return workdir_lib.open_workdir(work, plan.config_json, new_subdir,
                                    workdir_lib.run_inputs(plan))

  assert open_() == work
  saved = json.loads(files.read_bytes(os.path.join(work, "config.json")))
  assert saved["inputs"]["checkpoints"]["edge"]["sha256"] == workdir_lib.file_sha256(edge)
  assert saved["inputs"]["dataset"] == {"name": "fashion_mnist", "version": "3.0.1",
                                        "split": "test", "num_examples": 10000}
  assert saved["inputs"]["results_version"] == workdir_lib.RESULTS_VERSION
  assert open_() == work  # same weights: resumed

  _other_weights(edge, mine)  # other weights under the same path
  with pytest.raises(ValueError) as e:
    open_()
  msg = str(e.value)
  assert f"checkpoint {mine} has other contents than when workdir {work} was made" in msg
  assert saved["hash"][:12] in msg and "--new_subdir" in msg
  assert "another config" not in msg
  sub = open_(new_subdir=True)
  assert sub != work and os.path.dirname(sub) == work  # never resumed in place
  shutil.copy(edge, mine)  # the original weights again: the workdir is theirs
  assert open_() == work


def test_results_version_and_old_workdirs_are_refused(tmp_path, monkeypatch):
  edge, server = _local_ckpts()
  plan = plan_lib.make(_config(edge, server))
  work = str(tmp_path / "work")
  workdir_lib.open_workdir(work, plan.config_json, False, workdir_lib.run_inputs(plan))
  monkeypatch.setattr(workdir_lib, "RESULTS_VERSION", workdir_lib.RESULTS_VERSION + 1)
  v = workdir_lib.RESULTS_VERSION - 1  # the version the workdir was made by
  with pytest.raises(ValueError, match=rf"was made by results version {v} of sage_jax, this run "
                                       rf"makes version {v + 1}"):
    workdir_lib.open_workdir(work, plan.config_json, False, workdir_lib.run_inputs(plan))
  # A workdir from before the hash covered the inputs (config only).
  old = str(tmp_path / "old")
  text, digest = workdir_lib.config_hash(plan.config_json)
  files.makedirs(old)
  files.write(os.path.join(old, "config.json"),
              json.dumps({"hash": digest, "config": json.loads(text)}).encode())
  with pytest.raises(ValueError, match="was made by results version none"):
    workdir_lib.open_workdir(old, plan.config_json, False, workdir_lib.run_inputs(plan))


@pytest.mark.slow
def test_swapped_checkpoint_error_line_and_exit_code(tmp_path):
  """By the command line: one `error:` line, exit code 2."""
  edge, server = _local_ckpts()
  mine = str(tmp_path / "edge.msgpack")
  shutil.copy(edge, mine)
  plan = plan_lib.make(_config(mine, server))
  work = str(tmp_path / "work")
  workdir_lib.open_workdir(work, plan.config_json, False, workdir_lib.run_inputs(plan))
  _other_weights(edge, mine)
  args = [f"--config.{k}={v}" for k, v in (("num_images", 120), ("chunk_size", 40),
                                           ("batch_size", 40), ("rules", "topk,sage"),
                                           ("budgets", "4,16"), ("report.n_boot", 50),
                                           ("edge.checkpoint", mine),
                                           ("server.checkpoint", server))]
  proc = subprocess.run([sys.executable, "-m", "sage_jax.main", "--config=configs/fmnist_sweep.py",
                         f"--workdir={work}", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert last.startswith(f"error: checkpoint {mine} has other contents than when workdir"), last
  print(last)


def test_batch_sizes_are_part_of_the_config_a_workdir_holds(tmp_path):
  """Issue 34: XLA's CPU matmuls tile by batch, so the written floats (score, attn_entropy,
  server_conf, kl_full) move by ~1e-6 with the batch sizes: a workdir's results belong to
  its batch sizes, and the README says what can change."""
  edge, server = _local_ckpts()
  mine, other = (plan_lib.make(_config(edge, server, server_batch_size=s)).config_json
                 for s in (256, 16))
  assert workdir_lib.config_hash(mine)[1] != workdir_lib.config_hash(other)[1]
  work = str(tmp_path / "w")
  workdir_lib.open_workdir(work, mine)
  with pytest.raises(ValueError, match=f"workdir {work} holds results of another config"):
    workdir_lib.open_workdir(work, other)
  # A workdir made while batch sizes were left out of the config is named as such.
  record = json.loads(files.read_bytes(os.path.join(work, "config.json")))
  for key in ("batch_size", "server_batch_size"):
    del record["config"][key]
  record["hash"] = "old"
  files.write(os.path.join(work, "config.json"), json.dumps(record).encode())
  with pytest.raises(ValueError, match="was made before batch sizes were part of a config"):
    workdir_lib.open_workdir(work, mine)
  readme = open(os.path.join(ROOT, "README.md")).read()
  assert "speed only, results do not change" not in readme
  assert "the written floats can move by about 1e-6" in " ".join(readme.split())
