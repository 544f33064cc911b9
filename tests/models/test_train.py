"""mode=train writes into --workdir only; the shipped checkpoints stay as they are."""
import hashlib
import json
import os
import re

import pytest

from configs import fmnist_train
from sage_jax.models import checkpoints
from sage_jax.models import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = ("checkpoints/fmnist_edge.msgpack", "checkpoints/fmnist_server.msgpack")


def _digests():
  return {p: hashlib.sha256(open(os.path.join(ROOT, p), "rb").read()).hexdigest() for p in SHIPPED}


@pytest.mark.slow
def test_three_steps_write_into_the_workdir_only(tmp_path, monkeypatch):
  """What `python -m sage_jax.main --config=configs/fmnist_train.py:edge --workdir=W
  --config.train.max_steps=3` runs, in this process (the imports are already paid for)."""
  from sage_jax import main
  monkeypatch.chdir(ROOT)  # where the old code wrote checkpoints/fmnist_edge.msgpack
  before = _digests(), sorted(os.listdir(ROOT)), sorted(os.listdir(os.path.join(ROOT, "checkpoints")))
  workdir = tmp_path / "train"
  config = fmnist_train.get_config("edge")
  config.train.max_steps, config.train.eval_images = 3, 500
  main.run_job(config, str(workdir))
  # The shipped checkpoints byte for byte, and nothing new beside them or in the checkout.
  assert (_digests(), sorted(os.listdir(ROOT)),
          sorted(os.listdir(os.path.join(ROOT, "checkpoints")))) == before
  assert sorted(os.listdir(workdir)) == ["fmnist_edge.json", "fmnist_edge.msgpack"]
  _, meta = checkpoints.load(str(workdir / "fmnist_edge.msgpack"))
  log = json.loads((workdir / "fmnist_edge.json").read_text())
  assert meta["steps"] == log["steps"] == 3 and meta["variant"] == "fm-edge"
  assert [h["epoch"] for h in log["history"]] == [1] and log["history"][0]["steps"] == 3
  # Each epoch is scored on the held-out images only; the test split once, at the end.
  assert "test_acc" not in log["history"][0] and log["kept_epoch"] == meta["kept_epoch"] == 1
  assert log["val_acc"] == meta["val_acc"] == log["history"][0]["val_acc"]
  assert 0.0 <= log["test_acc"] <= 1.0 and log["test_acc"] == meta["test_acc"]
  assert log["test_images"] == meta["test_images"] == log["val_images"] == 500
  assert log["total_steps"] == 3 * (50000 // 128)  # trained on train[:50000]


@pytest.mark.parametrize("field,value,message", [
    ("max_steps", 0, "train.max_steps 0 is not allowed; give a positive number of steps or -1"),
    ("output", "../checkpoints/fmnist_edge.msgpack", "train.output '../checkpoints/fmnist_edge"),
    ("eval_images", -2, "train.eval_images -2 is not allowed"),
    ("val_split", "test[:5000]", "train.val_split 'test[:5000]' is not allowed: it reads the "
     "test split"),
    ("val_split", "train[49000:]", "train.val_split 'train[49000:]' is not allowed: it overlaps "
     "train.train_split 'train[:50000]' (images 49000-49999 of train)"),
    ("val_split", "train[50000:]+test", "train.val_split 'train[50000:]+test' is not allowed"),
])
def test_bad_train_fields(tmp_path, field, value, message):
  config = fmnist_train.get_config("edge")
  config.train[field] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    train.train_and_save(config, str(tmp_path))
  assert os.listdir(tmp_path) == []
