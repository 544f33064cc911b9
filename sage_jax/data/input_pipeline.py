"""Input pipeline: TFDS datasets as fixed-size numpy batches, each image carrying its index
in the split (so randomness is keyed by the image, not the batch); the last batch is padded
and masked, and each record is read once (docs/choices.md, "Data").
"""
import concurrent.futures
import os

import ml_collections
import numpy as np


# Prepared builders by (name, data_dir, manual_dir): a run opens its dataset once (each
# tfds.builder call reads the dataset's metadata again, about 0.1 s).
_PREPARED = {}
# The file format of the datasets sage_jax prepares itself (Fashion-MNIST, the scenes):
# ArrayRecord is read through TFDS's data sources in numpy, without importing TensorFlow
# (about 2 s of every run here). ArrayRecord files are written and read on local disks only,
# so a gs:// data_dir, and a folder prepared before as TFRecord, are read with tf.data.
OWN_FORMAT = "array_record"


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
  if cfg.name in ("fashion_mnist", "fmnist_scenes") and not files.is_remote(data_dir):
    builder = tfds.builder(cfg.name, data_dir=data_dir, file_format=OWN_FORMAT)
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


def _source(cfg, split):
  """A TFDS data source over `split` (random access, numpy, no TensorFlow) where the dataset
  is prepared as ArrayRecord and decodes to the model's input in numpy; else None (tf.data)."""
  import tensorflow_datasets as tfds
  builder = _builder(cfg)
  if (builder.info.file_format != tfds.core.file_adapters.FileFormat.ARRAY_RECORD
      or cfg.get("preprocess", "scale") != "scale"):
    return None
  return builder.as_data_source(split=split)


def _rows(source, lo: int, hi: int) -> dict:
  """Examples [lo, hi) of a data source -> arrays stacked per feature."""
  examples = source.__getitems__(list(range(lo, hi)))
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def load_arrays(cfg, split: str):
  """Whole split in memory -> (uint8[N, H, W, C], int32[N]). For training."""
  import tensorflow_datasets as tfds
  source = _source(cfg, split)
  if source is not None:
    arrays = _rows(source, 0, len(source))
  else:
    arrays = tfds.as_numpy(_builder(cfg).as_dataset(split=split, batch_size=-1,
                                                    shuffle_files=False))
  return arrays["image"], arrays["label"].astype(np.int32)


def normalize(images_u8: np.ndarray, cfg) -> np.ndarray:
  """uint8 images -> f32 (x/255 - mean) / std, per channel."""
  x = images_u8.astype(np.float32) / 255.0
  return (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)


def to_uint8(images: np.ndarray, cfg) -> np.ndarray:
  """normalize's inverse, rounded to 8 bits: f32[..., C] -> u8[..., C] (for figures)."""
  x = np.clip(images * np.asarray(cfg.std) + np.asarray(cfg.mean), 0.0, 1.0)
  return np.round(x * 255).astype(np.uint8)


def split_range(cfg, spec: str, field: str = "dataset.split"):
  """A split or one slice of it (e.g. "train[50000:]") -> (split name, start, stop) in
  absolute image indices, from the builder info alone; `field` names it in the error."""
  import tensorflow_datasets as tfds
  splits = _builder(cfg).info.splits
  try:
    absolute = tfds.core.ReadInstruction.from_spec(spec).to_absolute(splits)
  except (KeyError, ValueError) as e:
    raise ValueError(f"{field} {spec!r} is not allowed for dataset {cfg.name!r} "
                     f"({' '.join(str(e).split())})") from None
  if len(absolute) != 1:
    raise ValueError(f"{field} {spec!r} is not allowed; give one split or one slice of it, e.g. "
                     "test or test[5000:]")
  a = absolute[0]
  return a.splitname, a.from_ or 0, splits[a.splitname].num_examples if a.to is None else a.to


def _read_instruction(cfg, start: int, stop: int):
  """Images [start, stop) of cfg.split (itself a split or one slice of it, e.g. "test[5000:]"),
  as a TFDS read instruction: only the shards holding them are read."""
  import tensorflow_datasets as tfds
  name, base, _ = split_range(cfg, cfg.split)
  return tfds.core.ReadInstruction(name, from_=base + start, to=base + stop, unit="abs")


def _pad(rows: dict, size: int) -> dict:
  n = len(rows["index"])
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) if n < size else v
         for k, v in rows.items()}
  out["valid"] = np.arange(size) < n
  return out


def _batch_ranges(start: int, stop: int, batch_size: int, chunk_size: int):
  """[lo, hi) of each batch: batch_size images, cut at every multiple of chunk_size."""
  lo = start
  while lo < stop:
    end = stop if not chunk_size else min(stop, (lo // chunk_size + 1) * chunk_size)
    hi = min(lo + batch_size, end)
    yield lo, hi
    lo = hi


def eval_batches(cfg, batch_size: int, start: int, stop: int, chunk_size: int = 0):
  """Images [start, stop) of the split, read once, as batches of image f32[B,H,W,C], label,
  index (in the split), valid and, where the dataset has them, box f32[B, 4] (relative
  ymin, xmin, ymax, xmax); the last batch of each chunk of chunk_size is padded."""
  instruction = _read_instruction(cfg, start, stop)
  source = _source(cfg, instruction)
  batches = (_tf_batches(cfg, instruction, batch_size, start) if source is None
             else _source_batches(cfg, source, batch_size, start, stop))
  rows = None  # read, not yielded yet
  for lo, hi in _batch_ranges(start, stop, batch_size, chunk_size):
    while rows is None or len(rows["index"]) < hi - lo:
      batch = next(batches, None)
      if batch is None:
        break
      rows = batch if rows is None else {k: np.concatenate([rows[k], v]) for k, v in batch.items()}
    take = hi - lo
    yield _pad({k: v[:take] for k, v in rows.items()}, batch_size)
    rows = {k: v[take:] for k, v in rows.items()} if take < len(rows["index"]) else None


def _source_batches(cfg, source, batch_size: int, start: int, stop: int):
  """The data source's records in batches, decoded and scaled in numpy; the next batch is
  read on a thread while the caller works (PIL's decoding releases the GIL)."""
  def read(lo):
    ex = _rows(source, lo, min(lo + batch_size, stop - start))
    out = dict(index=np.arange(start + lo, start + lo + len(ex["label"]), dtype=np.int32),
               image=normalize(ex["image"], cfg), label=ex["label"].astype(np.int32))
    return dict(out, box=ex["box"].astype(np.float32)) if "box" in ex else out

  starts = list(range(0, stop - start, batch_size))
  with concurrent.futures.ThreadPoolExecutor(1) as reader:
    ahead = reader.submit(read, starts[0]) if starts else None
    for i in range(len(starts)):
      current = ahead
      ahead = reader.submit(read, starts[i + 1]) if i + 1 < len(starts) else None
      yield current.result()


def _tf_batches(cfg, instruction, batch_size: int, start: int):
  """The records through tf.data (TFRecord datasets, ImageNet's preprocessing)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from sage_jax.data import preprocess
  # Per image, before batching (ImageNet sizes differ); may decode the image itself.
  decoders, prep = preprocess.for_config(cfg)
  ds = _builder(cfg).as_dataset(split=instruction, shuffle_files=False,
                                decoders=decoders,
                                read_config=tfds.ReadConfig(interleave_cycle_length=1))
  def record(i, ex):  # the item's box too, where the dataset has one (the scenes)
    out = dict(index=tf.cast(i, tf.int32), image=prep(ex["image"]),
               label=tf.cast(ex["label"], tf.int32))
    return dict(out, box=ex["box"]) if "box" in ex else out

  ds = ds.enumerate(start).map(record, num_parallel_calls=tf.data.AUTOTUNE)
  yield from ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


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
