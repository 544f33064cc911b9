"""The paper's setting: DeiT-Ti/16 edge, DeiT-B/16 server, ImageNet-1K validation.

  python -m sage_jax.convert --src=deit_tiny_patch16_224.safetensors \
      --dst=checkpoints/deit_tiny.msgpack --variant=Ti/16
  python -m sage_jax.convert --src=deit_base_patch16_224.safetensors \
      --dst=checkpoints/deit_base.msgpack --variant=B/16
  python -m sage_jax.main --config=configs/imagenet_deit.py --workdir=results/imagenet \
      --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets

ImageNet must already be prepared for TFDS (imagenet2012) under data_dir.
"""
import ml_collections

from configs import fmnist_sweep


def get_config(arg=None):
  """The default sweep's knobs, with the paper's data, models, budgets and gate."""
  del arg
  c = fmnist_sweep.get_config()
  c.dataset = ml_collections.ConfigDict(dict(
      name="imagenet2012",
      split="validation",
      data_dir="~/tensorflow_datasets",  # or gs://BUCKET/tensorflow_datasets
      preprocess="deit_eval",  # shorter side -> resize_size (bicubic), center crop image_size
      resize_size=256,         # DeiT's crop_pct 0.875: 224 / 0.875
      image_size=224,
      channels=3,
      num_classes=1000,
      mean=(0.485, 0.456, 0.406),  # timm's IMAGENET_DEFAULT_MEAN/STD, as DeiT
      std=(0.229, 0.224, 0.225),
  ))
  # Converted with `python -m sage_jax.convert` (timm / HF / .npz weights).
  c.edge = ml_collections.ConfigDict(dict(variant="Ti/16", checkpoint="checkpoints/deit_tiny.msgpack"))
  c.server = ml_collections.ConfigDict(dict(variant="B/16", checkpoint="checkpoints/deit_base.msgpack"))
  c.gate.eta = 1.0                   # bits; the paper's gate (about 35.7% of images offloaded)
  c.budgets = "16,32,48,64,96,196"
  c.rules.threshold_delta = 1 / 196  # uniform importance over 14x14 patches
  c.coverage_grid = 7                # the paper's 7x7 coarse grid (2x2 patches a cell)
  c.report.map_budget = 48
  c.report.moderate = (48, 96)
  c.batch_size = 256                 # edge batch (DeiT-Ti); sized for one GPU/TPU chip
  c.server_batch_size = 64           # offloaded images per server step (x rules per B/16 call)
  return c
