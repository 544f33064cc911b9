"""The scenes regime: the builder's scenes and boxes, the on-item columns, the scenes sweep."""
import dataclasses
import os

import numpy as np
import pytest

from sage_jax.data import input_pipeline
from sage_jax.data import scenes
from sage_jax import defaults
from sage_jax.report import metrics
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pixel_patches(box_px, size, patch):
  """Brute force: a patch holds the item's box when any of its pixels lies in the box."""
  y0, x0, y1, x1 = box_px
  inside = np.zeros((size, size), bool)
  inside[y0:y1, x0:x1] = True
  g = size // patch
  return inside.reshape(g, patch, g, patch).any((1, 3)).reshape(-1)


def _item(seed):
  """A 28x28 item with content on a random sub-rectangle (zeros around it)."""
  rs = np.random.RandomState(seed)
  item = np.zeros((28, 28), np.uint8)
  y0, x0 = rs.randint(0, 10, 2)
  y1, x1 = rs.randint(18, 29, 2)
  item[y0:y1, x0:x1] = rs.randint(1, 256, (y1 - y0, x1 - x0))
  return item


@pytest.mark.parametrize("seed", range(6))
def test_box_is_the_items_pixels_and_nothing_outside_it_depends_on_the_item(seed):
  pool = np.stack([_item(100 + i) for i in range(8)])
  item = _item(seed)
  canvas, layer, box = scenes.render(np.random.RandomState(seed), item, pool)
  rows, cols = np.nonzero(layer)
  assert box == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
  assert (canvas >= layer).all()
  # The same support with other intensities: the same draws, so the same scene outside the box.
  other = np.where(item > 0, 255 - item // 2, 0).astype(np.uint8)
  canvas2, _, box2 = scenes.render(np.random.RandomState(seed), other, pool)
  assert box2 == box
  outside = np.ones_like(canvas, bool)
  outside[box[0]:box[2], box[1]:box[3]] = False
  np.testing.assert_array_equal(canvas[outside], canvas2[outside])
  assert not np.array_equal(canvas, canvas2)
  # No blank patch in the background for attention to sink into.
  p = canvas.reshape(14, 4, 14, 4).transpose(0, 2, 1, 3).reshape(196, 16)
  assert (p.max(-1) > 0).all()


def test_box_patches_match_a_pixel_count():
  rs = np.random.RandomState(0)
  for _ in range(200):
    y0, x0 = rs.randint(0, 55, 2)
    y1, x1 = y0 + rs.randint(1, 57 - y0), x0 + rs.randint(1, 57 - x0)
    box = np.asarray([y0, x0, y1, x1], np.float32) / 56  # as TFDS stores it
    np.testing.assert_array_equal(input_pipeline.box_patches(box, 56, 4),
                                  _pixel_patches((y0, x0, y1, x1), 56, 4))


def test_split_is_deterministic_and_its_digest_is_checked():
  items = np.stack([_item(i) for i in range(30)])
  labels = np.arange(30) % 10
  a, b = scenes.make_split(items, labels, "test"), scenes.make_split(items, labels, "test")
  assert scenes.digest(*a) == scenes.digest(*b)
  assert scenes.digest(*a) != scenes.digest(*scenes.make_split(items, labels, "train"))
  assert scenes.digest(*a) != scenes.digest(*scenes.make_split(items, labels, "test", seed=1))
  boxes = a[2] * scenes.CANVAS
  np.testing.assert_allclose(boxes, np.round(boxes), atol=1e-4)  # on pixel borders
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / scenes.CANVAS ** 2
  assert ((area > 0.03) & (area < 0.45)).all()


def test_prepared_scenes_are_the_known_ones():
  """The real builder on the real Fashion-MNIST test items: its digest check passed, and the
  prepared records carry boxes that hold bright item pixels."""
  cfg = defaults.scenes_dataset()
  cfg.split = "test[:64]"
  assert input_pipeline.has_boxes(cfg) and input_pipeline.split_size(cfg) == 64
  batch = next(input_pipeline.eval_batches(cfg, 64, 0, 64))
  box = np.rint(batch["box"] * 56).astype(int)
  assert (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
  pixels = input_pipeline.to_uint8(batch["image"], cfg)[..., 0]
  assert all(pixels[i, y0:y1, x0:x1].max() > 100 for i, (y0, x0, y1, x1) in enumerate(box))


@pytest.mark.slow
def test_on_item_counts_equal_a_numpy_count_of_the_sent_patches():
  """pipeline.evaluate on constructed boxes: every rule's count of sent patches on the box, at
  the map budget, recounted from the selections it returns."""
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.rules, c.budgets, c.gate.eta = "topk,sage,random,diversity", "8", 0.0
  c.report.map_budget, c.report.map_examples, c.batch_size, c.server_batch_size = 8, 32, 16, 8
  plan = dataclasses.replace(plan_lib.make(c), boxes=True)
  rs = np.random.RandomState(0)
  images = rs.randn(32, 28, 28, 1).astype(np.float32)
  y0, x0 = rs.randint(0, 20, (2, 32))
  px = np.stack([y0, x0, y0 + rs.randint(1, 9, 32), x0 + rs.randint(1, 9, 32)], 1)
  batches = [dict(image=images[s:s + 16], label=np.zeros(16, np.int32),
                  index=np.arange(s, s + 16, dtype=np.int32), valid=np.ones(16, bool),
                  box=(px[s:s + 16] / 28).astype(np.float32)) for s in (0, 16)]
  pipe = pipeline.build(plan, pipeline.load_models(plan))
  records, _ = pipeline.evaluate(pipe, batches, threshold=-1.0)
  want_items = np.stack([_pixel_patches(b, 28, 4) for b in px])
  np.testing.assert_array_equal(records["item_patches"], want_items.sum(-1))
  for r in range(4):
    idx, mask = records["map_keep_idx"][:, r], records["map_keep_mask"][:, r]
    sent = np.zeros((32, 49), bool)
    for i in range(32):
      sent[i, idx[i][mask[i]]] = True
    np.testing.assert_array_equal(records["on_item"][:, r, 0], (sent & want_items).sum(-1))
  rows = metrics.summarize(records, plan.labels, [8], 49, plan.bits_per_unit, n_boot=10)
  hits = records["on_item"][:, 0, 0]
  assert rows[0]["sent_on_item"] == pytest.approx(np.mean(hits / records["units"][:, 0, 0]))
  assert rows[0]["item_sent"] == pytest.approx(np.mean(hits / want_items.sum(-1)))
  assert rows[0]["item_share"] == pytest.approx(want_items.mean())


def _config(name, arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def test_scenes_beyond_runs_the_frozen_rules_unchanged():
  fm, sc = _config("fmnist_beyond"), _config("scenes_beyond")
  assert sc.rules == fm.rules and sc.rule_params == fm.rule_params
  assert sc.report.beyond.frozen == fm.report.beyond.frozen == "mmr@0.5:cls_all"
  assert sc.report.compare_to == fm.report.compare_to and sc.importance == fm.importance
  assert [i[:2] for i in sc.report.beyond.ideas] == [i[:2] for i in fm.report.beyond.ideas]
  assert (sc.dataset.name, sc.dataset.split) == ("fmnist_scenes", "test[5000:]")
  assert sc.edge.checkpoint == _config("scenes_sweep").edge.checkpoint


@pytest.mark.slow
def test_scenes_sweep_runs_on_a_few_images(tmp_path):
  """The scenes config end to end with the shipped scenes models: on-item columns, report."""
  import csv
  import subprocess
  import sys
  out = subprocess.run(
      [sys.executable, "-m", "sage_jax.main", "--config=configs/scenes_sweep.py",
       f"--workdir={tmp_path}", "--config.num_images=40", "--config.rules=topk,random,sage",
       "--config.budgets=8,196", "--config.gate.eta=0", "--config.report.n_boot=20",
       "--compile_cache=none"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "results.csv")))
  assert {r["method"] for r in rows} == {"topk", "random", "sage"}
  assert rows[0]["n_offloaded"] == "40"
  full = [r for r in rows if r["budget"] == "196"]  # every patch sent: all of the item
  assert all(float(r["item_sent"]) == 1.0 for r in full)
  assert all(float(r["sent_on_item"]) == pytest.approx(float(r["item_share"])) for r in full)
  assert "## Evidence on the item" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_fine_tuning_starts_from_the_checkpoint_with_resized_position_embeddings(tmp_path):
  """train._init_from: every parameter as in the checkpoint; a position embedding that is a
  linear ramp over the 7x7 grid stays a ramp over the 14x14 grid (bilinear), CLS's unchanged."""
  import jax

  from sage_jax.models import checkpoints
  from sage_jax.models import train
  from sage_jax.models import vit
  small, big = vit.Model(10, "fm-edge", 28), vit.Model(10, "fm-edge", 56)
  src = jax.tree.map(np.asarray, small.init(jax.random.PRNGKey(1), np.zeros((1, 28, 28, 1)))["params"])
  ramp = np.repeat(np.linspace(-1, 1, 7)[:, None], 7, 1)  # rows -1..1, the same along a row
  src["pos_embed"] = np.concatenate(
      [np.full((1, 1, 48), 5.0), np.repeat(ramp.reshape(1, 49, 1), 48, 2)], 1).astype(np.float32)
  path = str(tmp_path / "small.msgpack")
  checkpoints.save(path, src, dict(variant="fm-edge"))
  init = big.init(jax.random.PRNGKey(0), np.zeros((1, 56, 56, 1)))["params"]
  got = train._init_from(init, path)
  np.testing.assert_array_equal(got["blocks_0"]["attn"]["qkv"]["kernel"],
                                src["blocks_0"]["attn"]["qkv"]["kernel"])
  pos = np.asarray(got["pos_embed"])
  assert pos.shape == (1, 197, 48) and (pos[0, 0] == 5.0).all()
  grid = pos[0, 1:, 0].reshape(14, 14)
  np.testing.assert_allclose(grid, grid[:, :1] * np.ones((1, 14)), atol=1e-6)  # flat along rows
  assert (np.diff(grid[:, 0]) >= -1e-6).all() and grid[0, 0] == -1 and grid[-1, 0] == 1
