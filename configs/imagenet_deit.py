"""The paper's setting: DeiT-Ti/16 edge, DeiT-B/16 server, ImageNet-1K validation.

  python -m sage_jax.models.convert --src=deit_tiny_patch16_224.safetensors \
      --dst=checkpoints/deit_tiny.msgpack --variant=Ti/16
  python -m sage_jax.models.convert --src=deit_base_patch16_224.safetensors \
      --dst=checkpoints/deit_base.msgpack --variant=B/16
  python -m sage_jax.main --config=configs/imagenet_deit.py --workdir=results/imagenet \
      --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets

ImageNet must already be prepared for TFDS (imagenet2012) under data_dir.
"""
from sage_jax import defaults


def get_config(arg=None):
  """The paper's data, models, budgets and gate (`defaults.imagenet_deit`)."""
  del arg
  return defaults.imagenet_deit()
