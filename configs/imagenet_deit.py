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


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.mode = "sweep"

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

  c.importance = "cls_attention"   # cls_attention | rollout
  c.gate = ml_collections.ConfigDict(dict(
      measure="min_entropy",  # min_entropy | entropy | margin | fraction
      eta=1.0,                # bits; the paper's gate (about 35.7% of images offloaded)
      fraction=1 / 3,         # for measure=fraction: offload this share, least confident first
  ))

  c.methods = "random,grid,topk,threshold,sum_threshold,diversity,sage"
  c.budgets = "16,32,48,64,96,196"
  c.rules = ml_collections.ConfigDict(dict(
      pool_ratio=2.0,            # sage: pool = top ceil(pool_ratio * K) patches
      threshold_delta=1 / 196,   # threshold: keep importance >= delta (uniform = 1/N)
      sum_threshold_delta=0.9,   # sum_threshold: keep while cumulative importance <= delta
  ))
  c.seed = 0                  # `random` rule key = fold_in(PRNGKey(seed), image index)
  c.bits_per_unit = -1        # -1: 8-bit pixels of a patch + ceil(log2 N) index bits

  c.num_images = -1           # > 0: only the first num_images validation images
  c.batch_size = 256          # edge batch (DeiT-Ti); sized for one GPU/TPU chip
  c.server_batch_size = 64    # offloaded images per server step (x 7 rules per B/16 call)
  c.chunk_size = 5000         # images per saved progress chunk (a killed run redoes at most one)
  return c
