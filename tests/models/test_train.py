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


@pytest.mark.slow
def test_a_recipe_candidate_never_reads_the_test_split(tmp_path, monkeypatch):
  """test_split "" (configs/scenes_recipes.py's candidates): validation only, no test reading."""
  from sage_jax.data import input_pipeline
  read = []
  load = input_pipeline.load_arrays
  monkeypatch.setattr(input_pipeline, "load_arrays",
                      lambda cfg, split: read.append(split) or load(cfg, split))
  config = fmnist_train.get_config("edge")
  config.train.update(max_steps=1, eval_images=200, test_split="")
  meta = train.train_and_save(config, str(tmp_path))
  assert read == ["train[:50000]", "train[50000:]"]
  log = json.loads((tmp_path / "fmnist_edge.json").read_text())
  assert log["test_acc"] is None and log["test_images"] == 0 and meta["test_acc"] is None
  assert 0.0 <= log["val_acc"] <= 1.0


def test_recipe_candidates_differ_from_the_shipped_recipe_only_where_named():
  from configs import scenes_recipes
  shipped = fmnist_train.get_config("scenes_server").train
  assert (shipped.init_from, shipped.lr, shipped.warmup_steps) == (
      "checkpoints/fmnist_server.msgpack", 1e-3, 200)  # the candidate ft_1e-3 below
  for name, fields in scenes_recipes.CANDIDATES.items():
    t = scenes_recipes.get_config(name).train
    assert t.test_split == "" and t.epochs == scenes_recipes.EPOCHS
    assert t.output == f"scenes_server_{name}.msgpack"
    differ = {k for k in shipped if t[k] != shipped[k]}
    assert differ <= set(fields) | {"epochs", "test_split", "output"}, (name, differ)
  assert dict(scenes_recipes.CANDIDATES["ft_1e-3"]) == dict(
      init_from=shipped.init_from, lr=shipped.lr, warmup_steps=shipped.warmup_steps)
  with pytest.raises(ValueError, match="unknown candidate 'ft'; allowed"):
    scenes_recipes.get_config("ft")
