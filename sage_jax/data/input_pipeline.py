"""Input pipeline: TFDS datasets as fixed-size numpy batches, each image carrying its index
in the split (so randomness is keyed by the image, not the batch); the last batch is padded
and masked, and each record is read once (docs/choices.md, "Data").
"""
import os

import ml_collections
import numpy as np


# Prepared builders by (name, data_dir, manual_dir): a run opens its dataset once (each
# tfds.builder call reads the dataset's metadata again, about 0.1 s).
_PREPARED = {}


def _builder(cfg):
  from sage_jax import files
  key = (cfg.name, cfg.data_dir, cfg.get("manual_dir"))
  builder = _PREPARED.get(key)
  if builder is None or not files.exists(os.fspath(builder.data_dir)):  # gone: open again
    _PREPARED[key] = builder = _open_builder(cfg)
  return builder


def _open_builder(cfg):
  import tensorflow_datasets as tfds
  from sage_jax.data import fmnist, scenes
  from sage_jax import files
  data_dir = files.expanduser(cfg.data_dir)  # a gs:// data_dir goes to TFDS as it is
  if cfg.name == "fmnist_scenes":
    scenes.register()
  builder = tfds.builder(cfg.name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  manual_dir = cfg.get("manual_dir") or fmnist.DEBIAN_DIR
  if cfg.name == "fashion_mnist":
    return fmnist.prepare(builder, manual_dir)
  if cfg.name == "fmnist_scenes":  # built from Fashion-MNIST in the same data_dir
    items = ml_collections.ConfigDict(dict(
        name="fashion_mnist", data_dir=os.fspath(builder.data_dir_root), manual_dir=manual_dir))
    return scenes.prepare(builder, lambda split: load_arrays(items, split))
  raise FileNotFoundError(
      f"TFDS dataset {cfg.name!r} is not prepared under data_dir={data_dir!r}; "
      "prepare it with TFDS (see README) or point --config.dataset.data_dir at it")


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


def _read_instruction(cfg, start: int, stop: int):
  """Images [start, stop) of cfg.split (itself a split or one slice of it, e.g. "test[5000:]"),
  as a TFDS read instruction: only the shards holding them are read."""
  import tensorflow_datasets as tfds
  absolute = tfds.core.ReadInstruction.from_spec(cfg.split).to_absolute(_builder(cfg).info.splits)
  if len(absolute) != 1:
    raise ValueError(f"dataset.split {cfg.split!r} is not allowed; give one split or one "
                     "slice of it, e.g. test or test[5000:]")
  base = absolute[0].from_ or 0
  return tfds.core.ReadInstruction(absolute[0].splitname, from_=base + start, to=base + stop,
                                   unit="abs")


def _pad(rows: dict, size: int) -> dict:
  n = len(rows["index"])
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) if n < size else v
         for k, v in rows.items()}
  out["valid"] = np.arange(size) < n
  return out


def eval_batches(cfg, batch_size: int, start: int, stop: int, chunk_size: int = 0):
  """Images [start, stop) of the split, read once, as batches of image f32[B,H,W,C], label,
  index (in the split), valid and, where the dataset has them, box f32[B, 4] (relative
  ymin, xmin, ymax, xmax); the last batch of each chunk of chunk_size is padded."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from sage_jax.data import preprocess
  # Per image, before batching (ImageNet sizes differ); may decode the image itself.
  decoders, prep = preprocess.for_config(cfg)
  ds = _builder(cfg).as_dataset(split=_read_instruction(cfg, start, stop), shuffle_files=False,
                                decoders=decoders,
                                read_config=tfds.ReadConfig(interleave_cycle_length=1))
  def record(i, ex):  # the item's box too, where the dataset has one (the scenes)
    out = dict(index=tf.cast(i, tf.int32), image=prep(ex["image"]),
               label=tf.cast(ex["label"], tf.int32))
    return dict(out, box=ex["box"]) if "box" in ex else out

  ds = ds.enumerate(start).map(record, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  rows = None  # read, not yielded yet
  for batch in ds.as_numpy_iterator():
    rows = batch if rows is None else {k: np.concatenate([rows[k], v]) for k, v in batch.items()}
    while rows is not None:
      first = int(rows["index"][0])
      end = stop if not chunk_size else min(stop, (first // chunk_size + 1) * chunk_size)
      take = min(batch_size, end - first)
      if take > len(rows["index"]):
        break  # the chunk goes on in the next batch read
      yield _pad({k: v[:take] for k, v in rows.items()}, batch_size)
      rows = {k: v[take:] for k, v in rows.items()} if take < len(rows["index"]) else None
  if rows is not None:
    yield _pad(rows, batch_size)


def split_size(cfg) -> int:
  """Images in cfg.split (a split or one slice), from the builder info alone; an unknown,
  empty or inverted slice (TFDS counts test[5000:4000] as -1000) is refused."""
  info = _builder(cfg).info
  sizes = ", ".join(f"{k} ({v.num_examples} images)" for k, v in info.splits.items())
  try:
    size = int(info.splits[cfg.split].num_examples)
  except (KeyError, ValueError) as e:
    raise ValueError(f"dataset.split {cfg.split!r} is not allowed for dataset {cfg.name!r} "
                     f"({' '.join(str(e).split())}); its splits: {sizes}") from None
  if size <= 0:
    raise ValueError(f"split {cfg.split!r} of dataset {cfg.name!r} is empty: it holds 0 images "
                     f"(a slice needs start < stop, e.g. test[4000:5000]); its splits: {sizes}")
  return size


def num_examples(cfg, num_images: int = -1) -> int:
  """Images to evaluate: the first `num_images` of the split, or all for -1. A split holding
  fewer images than asked is refused, not quietly cut short."""
  if num_images == 0 or num_images < -1:
    raise ValueError(f"num_images {num_images} is not allowed; give a positive count or -1 (all)")
  total = split_size(cfg)
  if num_images > total:
    raise ValueError(f"num_images {num_images} is not allowed: split {cfg.split!r} of dataset "
                     f"{cfg.name!r} holds {total} images; give at most {total}, or -1 (all)")
  return total if num_images == -1 else num_images


def has_boxes(cfg) -> bool:
  """Whether the dataset's examples carry their item's box (the scenes do)."""
  return "box" in _builder(cfg).info.features


def identity(cfg) -> dict:
  """The dataset's name, version, split and size (part of a workdir's hash)."""
  info = _builder(cfg).info
  return {"name": info.name, "version": str(info.version), "split": cfg.split,
          "num_examples": split_size(cfg)}


def box_patches(boxes, image_size: int, patch: int) -> np.ndarray:
  """f32[..., 4] relative boxes (ymin, xmin, ymax, xmax; ends exclusive) -> bool[..., N]: the
  patches each overlaps."""
  g = image_size // patch
  px = np.rint(np.asarray(boxes, np.float64) * image_size).astype(int)  # boxes lie on pixels
  edges = np.arange(g) * patch
  rows = (edges + patch > px[..., 0:1]) & (edges < px[..., 2:3])
  cols = (edges + patch > px[..., 1:2]) & (edges < px[..., 3:4])
  return (rows[..., :, None] & cols[..., None, :]).reshape(px.shape[:-1] + (g * g,))
