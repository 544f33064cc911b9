"""Input pipeline: TFDS datasets as fixed-size numpy batches.

Every batch carries each image's index in the split, so anything random
downstream (the `random` rule) is keyed by the image, not the batch. The last
batch is padded to the full size and masked (`valid`), so jitted steps compile
once and no image is dropped or counted twice.
"""
import os

import numpy as np

FMNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _builder(cfg):
  import tensorflow_datasets as tfds
  from sage_jax import files
  data_dir = files.expanduser(cfg.data_dir)  # a gs:// data_dir goes to TFDS as it is
  builder = tfds.builder(cfg.name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  if cfg.name != "fashion_mnist":
    raise FileNotFoundError(
        f"TFDS dataset {cfg.name!r} is not prepared under data_dir={data_dir!r}; "
        "prepare it with TFDS (see README) or point --config.dataset.data_dir at it")
  manual = cfg.get("manual_dir") or FMNIST_DEBIAN_DIR
  missing = [f for f in _FMNIST_FILES if not os.path.exists(os.path.join(manual, f))]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST source files {missing} not found in {manual}; install them with "
        "`apt-get update && apt-get install -y dataset-fashion-mnist`")
  # Debian recompressed the .gz files, so TFDS's stored checksums differ while
  # the decoded data is the original: register the new checksums.
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual, register_checksums=True))
  return builder


def load_arrays(cfg, split: str):
  """Whole split in memory -> (uint8[N, H, W, C], int32[N]). For training."""
  import tensorflow_datasets as tfds
  ds = _builder(cfg).as_dataset(split=split, batch_size=-1, shuffle_files=False)
  arrays = tfds.as_numpy(ds)
  return arrays["image"], arrays["label"].astype(np.int32)


def normalize(images_u8: np.ndarray, cfg) -> np.ndarray:
  """uint8 images -> f32 (x/255 - mean) / std, per channel."""
  x = images_u8.astype(np.float32) / 255.0
  return (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)


def to_uint8(images: np.ndarray, cfg) -> np.ndarray:
  """normalize's inverse, rounded to 8 bits: f32[..., C] -> u8[..., C] (for figures)."""
  x = np.clip(images * np.asarray(cfg.std) + np.asarray(cfg.mean), 0.0, 1.0)
  return np.round(x * 255).astype(np.uint8)


def eval_batches(cfg, batch_size: int, start: int = 0, stop: int = -1):
  """Yields images [start, stop) of the split (stop=-1: to the end) as dicts
  image f32[B,H,W,C], label i32[B], index i32[B] (position in the split), valid bool[B].
  """
  import tensorflow as tf
  from sage_jax import preprocess
  # Per image, before batching (ImageNet sizes differ); may decode the image itself.
  decoders, prep = preprocess.for_config(cfg)
  ds = _builder(cfg).as_dataset(split=cfg.split, shuffle_files=False, decoders=decoders)
  if stop >= 0:
    ds = ds.take(stop)
  ds = ds.skip(start).enumerate(start)
  ds = ds.map(lambda i, ex: (tf.cast(i, tf.int32), prep(ex["image"]), tf.cast(ex["label"], tf.int32)),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  for index, image, label in ds.as_numpy_iterator():
    valid = np.ones(len(index), bool)
    pad = batch_size - len(index)
    if pad:
      index, image, label, valid = (
          np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
          for a in (index, image, label, valid))
    yield dict(image=image, label=label, index=index, valid=valid)


def num_examples(cfg, num_images: int = -1) -> int:
  """Images to evaluate: the first `num_images` of the split, or all for -1."""
  if num_images == 0 or num_images < -1:
    raise ValueError(f"num_images {num_images} is not allowed; give a positive count or -1 (all)")
  total = _builder(cfg).info.splits[cfg.split].num_examples
  if total == 0:
    raise ValueError(f"split {cfg.split!r} of dataset {cfg.name!r} is empty")
  return total if num_images == -1 else min(num_images, total)


def identity(cfg) -> dict:
  """What the dataset is, from its TFDS builder info: name, version, split and the split's
  size (part of a workdir's hash)."""
  info = _builder(cfg).info
  try:
    size = int(info.splits[cfg.split].num_examples)
  except KeyError:
    raise ValueError(f"split {cfg.split!r} is not a split of dataset {cfg.name!r}; allowed: "
                     f"{', '.join(info.splits)}") from None
  return {"name": info.name, "version": str(info.version), "split": cfg.split,
          "num_examples": size}
