"""mode=train writes into --workdir only; the shipped checkpoints stay as they are."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from configs import fmnist_train
from sage_jax import checkpoints, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("checkpoints/fmnist_edge.msgpack", "checkpoints/fmnist_server.msgpack")


def _digests():
  return {p: hashlib.sha256(open(os.path.join(ROOT, p), "rb").read()).hexdigest() for p in SHIPPED}


def test_three_steps_write_into_the_workdir_only(tmp_path):
  before = _digests()
  workdir = tmp_path / "train"
  proc = subprocess.run(
      [sys.executable, "-m", "sage_jax.main", "--config=configs/fmnist_train.py:edge",
       f"--workdir={workdir}", "--config.train.max_steps=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _digests() == before  # byte for byte
  assert sorted(os.listdir(workdir)) == ["fmnist_edge.json", "fmnist_edge.msgpack"]
  params, meta = checkpoints.load(str(workdir / "fmnist_edge.msgpack"))
  log = json.loads((workdir / "fmnist_edge.json").read_text())
  assert meta["steps"] == log["steps"] == 3 and meta["variant"] == "fm-edge"
  assert [h["epoch"] for h in log["history"]] == [1] and log["history"][0]["steps"] == 3
  assert 0.0 <= log["test_acc"] <= 1.0 and log["test_acc"] == meta["test_acc"]
  assert log["total_steps"] == 3 * (60000 // 128)


@pytest.mark.parametrize("field,value,message", [
    ("max_steps", 0, "train.max_steps 0 is not allowed; give a positive number of steps or -1"),
    ("output", "../checkpoints/fmnist_edge.msgpack", "train.output '../checkpoints/fmnist_edge"),
])
def test_bad_train_fields(tmp_path, field, value, message):
  config = fmnist_train.get_config("edge")
  config.train[field] = value
  with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
    train.train_and_save(config, str(tmp_path))
  assert os.listdir(tmp_path) == []
