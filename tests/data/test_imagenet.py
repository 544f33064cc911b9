"""The paper's ImageNet path on a fake imagenet2012 made here.

TFDS's own imagenet2012 builder prepares a validation tar of a few JPEGs of
assorted sizes (labels come from TFDS's validation label list, as for the real
data). On it: DeiT eval preprocessing against a PIL reference, the input
pipeline, and configs/imagenet_deit.py end to end through `loop.run` with a
random DeiT-Ti/16 timm .safetensors file converted by the documented command.
"""
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image
import pytest
import safetensors.numpy
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import imagenet_deit
from sage_jax.data import input_pipeline
from sage_jax.data import preprocess
from sage_jax import defaults
from sage_jax.models import checkpoints
from sage_jax.sweep import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = [(375, 500), (500, 333), (256, 256), (120, 160), (241, 300), (333, 333), (300, 451)]
# One 8-bit level in normalized units, per channel. PIL's fixed-point bicubic and
# TF's float one round differently on ~0.1-0.3% of values, by one level, rarely
# two (a rounding difference after the horizontal pass carried through the vertical).
LEVEL = 1 / 255 / np.asarray(preprocess.IMAGENET_STD, np.float32)


def _image(h, w, seed):
  """Smooth colours plus noise: uint8[h, w, 3]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  smooth = 127 + 100 * np.sin(xx[..., None] / 7.0 + np.arange(3)) * np.cos(yy[..., None] / 11.0)
  return np.clip(smooth + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def pil_deit_eval(img):
  """The DeiT/timm eval transform on a PIL image, in numpy: Resize(256, bicubic)
  (shorter side; longer = int(256 * long / short)), CenterCrop(224), Normalize."""
  h, w = img.shape[:2]
  new_h, new_w = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
  x = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BICUBIC), np.float32)
  top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
  x = x[top:top + 224, left:left + 224] / 255.0
  return (x - np.asarray(preprocess.IMAGENET_MEAN, np.float32)) / np.asarray(
      preprocess.IMAGENET_STD, np.float32)


def _assert_close_to_pil(got, want):
  diff = np.abs(got - want) / LEVEL
  assert got.shape == want.shape == (224, 224, 3)
  assert diff.max() <= 2.01 and (diff > 0.5).mean() <= 0.01, (diff.max(), (diff > 0.5).mean())


@pytest.mark.parametrize("hw", SIZES)
def test_deit_eval_matches_pil(hw):
  img = _image(*hw, seed=hw[0])
  _assert_close_to_pil(preprocess.deit_eval(tf.constant(img)).numpy(), pil_deit_eval(img))


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
  """-> (data_dir, [uint8 images], [labels]): imagenet2012 validation, prepared by TFDS."""
  root = tmp_path_factory.mktemp("imagenet")
  manual, data_dir = root / "manual", root / "tfds"
  manual.mkdir()
  images = []
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
    for i, (h, w) in enumerate(SIZES):
      jpeg = io.BytesIO()
      Image.fromarray(_image(h, w, seed=i)).save(jpeg, format="JPEG", quality=95)
      info = tarfile.TarInfo(f"ILSVRC2012_val_{i + 1:08d}.JPEG")
      info.size = len(jpeg.getvalue())
      tar.addfile(info, io.BytesIO(jpeg.getvalue()))
      images.append(np.asarray(Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB")))
  builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  synsets = open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read().split()
  val = open(tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")).read().split()
  labels = [synsets.index(s) for s in val[:len(SIZES)]]
  return str(data_dir), images, labels


def _config(data_dir, **overrides):
  c = imagenet_deit.get_config()
  c.dataset.data_dir = data_dir
  c.update(overrides)
  return c


def test_paper_config_values():
  c = imagenet_deit.get_config()
  assert (c.edge.variant, c.server.variant) == ("Ti/16", "B/16")
  assert [int(b) for b in c.budgets.split(",")] == [16, 32, 48, 64, 96, 196]
  assert c.gate.uncertainty == "min_entropy" and c.gate.eta == 1.0
  assert c.rules == defaults.sweep_config().rules  # every rule of the default sweep
  assert (c.dataset.name, c.dataset.split) == ("imagenet2012", "validation")
  ds = c.dataset
  assert (ds.num_classes, ds.image_size, ds.preprocess) == (1000, 224, "deit_eval")
  assert c.rule_params.threshold.delta is None and c.bits_per_unit == -1  # None: 1/N


def test_eval_batches_preprocess_like_pil(fake_imagenet):
  data_dir, images, labels = fake_imagenet
  cfg = _config(data_dir).dataset
  batches = list(input_pipeline.eval_batches(cfg, batch_size=4, start=0, stop=len(SIZES)))
  assert len(batches) == 2 and batches[0]["image"].shape == (4, 224, 224, 3)
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.tolist() == [True] * len(SIZES) + [False] * (8 - len(SIZES))
  assert np.concatenate([b["index"] for b in batches])[valid].tolist() == list(range(len(SIZES)))
  got_labels = np.concatenate([b["label"] for b in batches])[valid]
  got = np.concatenate([b["image"] for b in batches])[valid]
  # TFDS stores examples in key-hash order, not file order: match by file name.
  ds = tfds.builder("imagenet2012", data_dir=data_dir).as_dataset(split="validation",
                                                                  shuffle_files=False)
  names = [ex["file_name"].decode() for ex in tfds.as_numpy(ds)]
  for pos, name in enumerate(names):
    k = int(name[-13:-5]) - 1  # ILSVRC2012_val_0000000K.JPEG
    assert got_labels[pos] == labels[k], name
    _assert_close_to_pil(got[pos], pil_deit_eval(images[k]))


def random_timm_deit(path, width=192, depth=12, heads=3, patch=16, classes=1000, size=224):
  """A random timm VisionTransformer state dict (DeiT-Ti/16 shapes), .safetensors.
  The head's scale puts min-entropies near 3 bits, above the paper's 1-bit gate."""
  rng = np.random.default_rng(0)
  n = lambda *s, std=0.02: (std * rng.standard_normal(s)).astype(np.float32)
  sd = {"cls_token": n(1, 1, width), "pos_embed": n(1, 1 + (size // patch) ** 2, width),
        "patch_embed.proj.weight": n(width, 3, patch, patch), "patch_embed.proj.bias": n(width),
        "norm.weight": 1 + n(width), "norm.bias": n(width),
        "head.weight": n(classes, width, std=0.15), "head.bias": n(classes)}
  for i in range(depth):
    b = f"blocks.{i}."
    sd.update({b + "norm1.weight": 1 + n(width), b + "norm1.bias": n(width),
               b + "attn.qkv.weight": n(3 * width, width), b + "attn.qkv.bias": n(3 * width),
               b + "attn.proj.weight": n(width, width), b + "attn.proj.bias": n(width),
               b + "norm2.weight": 1 + n(width), b + "norm2.bias": n(width),
               b + "mlp.fc1.weight": n(4 * width, width), b + "mlp.fc1.bias": n(4 * width),
               b + "mlp.fc2.weight": n(width, 4 * width), b + "mlp.fc2.bias": n(width)})
  safetensors.numpy.save_file(sd, str(path))


@pytest.mark.slow
def test_paper_config_end_to_end(fake_imagenet, tmp_path):
  """The documented commands: convert a timm .safetensors, then sweep the paper config
  (server overridden to Ti/16 to stay fast on CPU; budgets cut to two)."""
  data_dir, _, _ = fake_imagenet
  random_timm_deit(tmp_path / "deit_tiny.safetensors")
  ckpt = str(tmp_path / "deit_tiny.msgpack")
  out = subprocess.run([sys.executable, "-m", "sage_jax.models.convert",
                        f"--src={tmp_path / 'deit_tiny.safetensors'}", f"--dst={ckpt}",
                        "--variant=Ti/16"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  meta = checkpoints.load(ckpt)[1]
  assert (meta["variant"], meta["num_classes"], meta["image_size"]) == ("Ti/16", 1000, 224)
  assert meta["source"]["format"] == "timm"
  c = _config(data_dir, budgets="16,196", batch_size=4, server_batch_size=4)
  c.edge.checkpoint = c.server.checkpoint = ckpt
  c.server.variant = "Ti/16"
  rows = loop.run(c, str(tmp_path / "work"), progress=False).rows
  assert [(r["method"], r["budget"]) for r in rows] == [
      (m, b) for m in c.rules.split(",") for b in (16, 196)]
  for r in rows:
    assert r["n_images"] == len(SIZES) and r["n_offloaded"] >= 1
    assert 0.0 <= r["offloaded_acc"] <= 1.0 and 0.0 <= r["overall_acc"] <= 1.0
  for name in ("results.csv", "results.json", "curves.png"):
    assert os.path.exists(os.path.join(tmp_path / "work", name)), name
