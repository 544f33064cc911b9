"""The rehearsal measure: the ImageNet sweep (`loop.run`) on a synthetic `imagenet2012`
validation split with random DeiT weights -> images_per_second, bytes_read_ratio and
pipeline_efficiency, counted as docs/imagenet.md says.
"""
import contextlib
import io
import json
import math
import os
import tarfile
import tempfile

import jax
import numpy as np

from sage_jax.data import input_pipeline
from sage_jax import files
from sage_jax.measure import harness
from sage_jax.models import checkpoints
from sage_jax.models import vit
from sage_jax.sweep import distributed
from sage_jax.sweep import loop
from sage_jax.sweep import pipeline
from sage_jax import timing

GENERATOR_VERSION = 1  # bump when the synthetic images change (a new cache folder)
# (height, width) of ImageNet's most common validation sizes, with their share here; the
# rest: long side 500, short side uniform in 200..500, 70% landscape.
SIZES = (((375, 500), 0.42), ((500, 375), 0.18), ((333, 500), 0.10), ((500, 333), 0.05))
VAL_IMAGES = 50_000  # TFDS's validation label list holds this many labels
# The main thread's own reads (metadata, imports, progress: a few hundred KB) are subtracted
# unless they exceed this share of the stored bytes evaluated: then it read records itself.
MAIN_THREAD_SHARE = 0.25
MEASURE_FIELDS = ("measures", "rehearsal")  # the rest of the config is the sweep's


# --- Synthetic imagenet2012 validation split ---------------------------------------------

def _size(rng):
  u, acc = rng.random(), 0.0
  for hw, share in SIZES:
    acc += share
    if u < acc:
      return hw
  short = int(rng.integers(200, 501))
  return (short, 500) if rng.random() < 0.7 else (500, short)


def synthetic_jpeg(index: int, seed: int = 0) -> bytes:
  """The index-th synthetic validation image as JPEG bytes, the same for the same seed."""
  from PIL import Image
  rng = np.random.default_rng([seed, index])
  h, w = _size(rng)
  amp, grain, quality = rng.uniform(0.7, 1.4), int(rng.integers(6, 15)), int(rng.integers(93, 97))
  # Octaves of smooth colour noise at half resolution, upsampled once, plus pixel grain.
  hh, ww = (h + 1) // 2, (w + 1) // 2
  acc = np.zeros((hh, ww, 3), np.float32)
  for cell, weight in ((32, 60), (12, 40), (4, 28), (1.5, 18)):
    small = rng.integers(0, 256, (math.ceil(hh / cell) + 1, math.ceil(ww / cell) + 1, 3),
                         dtype=np.uint8)
    up = np.asarray(Image.fromarray(small).resize((ww, hh), Image.BICUBIC), np.float32)
    acc += (up - 127.5) * (weight * amp / 74)
  acc += rng.integers(60, 190, 3)
  half = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
  full = np.asarray(half.resize((w, h), Image.BICUBIC), np.int16)
  full = full + rng.integers(-grain, grain + 1, (h, w, 3), dtype=np.int8)
  buf = io.BytesIO()
  Image.fromarray(np.clip(full, 0, 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                quality=quality)
  return buf.getvalue()


def synthetic_imagenet(cache_dir: str, num_images: int = 5000, seed: int = 0,
                       num_shards: int = 0) -> tuple:
  """Builds the synthetic validation split once with TFDS's imagenet2012 builder -> (data_dir,
  stats); stats["built"] is False when a call found it prepared."""
  import tensorflow_datasets as tfds
  if not 1 <= num_images <= VAL_IMAGES:
    raise ValueError(f"synthetic_images {num_images} is not allowed; allowed: 1..{VAL_IMAGES}")
  if num_shards < 0 or num_shards > num_images:
    raise ValueError(f"synthetic_shards {num_shards} is not allowed; allowed: 0 (TFDS "
                     f"chooses) or 1..{num_images}")
  tag = f"imagenet2012-synthetic-v{GENERATOR_VERSION}-n{num_images}-seed{seed}"
  data_dir = os.path.join(files.expanduser(cache_dir), tag + (f"-shards{num_shards}"
                                                               if num_shards else ""))
  stats_path = os.path.join(data_dir, "synthetic.json")
  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  if builder.is_prepared() and files.exists(stats_path):
    stats = json.loads(files.read_bytes(stats_path))
    return data_dir, dict(stats, built=False)
  files.makedirs(data_dir)
  elapsed = timing.stopwatch()
  print(f"building the synthetic imagenet2012 validation split ({num_images} images) in "
        f"{data_dir}", flush=True)
  sizes = []
  with tempfile.TemporaryDirectory(dir=data_dir, prefix="manual-") as manual:
    with tarfile.open(os.path.join(manual, "ILSVRC2012_img_val.tar"), "w") as tar:
      for i in range(num_images):
        jpeg = synthetic_jpeg(i, seed)
        info = tarfile.TarInfo(f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        info.size = len(jpeg)
        tar.addfile(info, io.BytesIO(jpeg))
        sizes.append(len(jpeg))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual, num_shards=num_shards or None))
  split = builder.info.splits["validation"]
  stats = dict(images=num_images, seed=seed, generator_version=GENERATOR_VERSION,
               mean_jpeg_bytes=float(np.mean(sizes)), shards=len(split.filenames),
               build_s=round(elapsed(), 1))
  files.write(stats_path, (json.dumps(stats, indent=1) + "\n").encode())
  print(f"built {num_images} images (mean JPEG {stats['mean_jpeg_bytes'] / 1e3:.1f} KB, "
        f"{stats['shards']} shards) in {stats['build_s']:.0f} s", flush=True)
  return data_dir, dict(stats, built=True)


# --- Random weights and the forwards alone -----------------------------------------------

def random_checkpoint(cache_dir: str, variant: str, seed: int = 0, num_classes: int = 1000,
                      image_size: int = 224) -> str:
  """A checkpoint of `variant` with random weights, written once -> its path."""
  slug = variant.replace("/", "_")
  path = os.path.join(files.expanduser(cache_dir),
                      f"random_{slug}_c{num_classes}_s{image_size}_seed{seed}.msgpack")
  if files.exists(path):
    return path
  print(f"writing a random {variant} checkpoint to {path}", flush=True)
  params = harness.random_params(vit.Model(num_classes, variant, image_size), 3, seed)
  checkpoints.save(path, params, dict(variant=variant, num_classes=num_classes,
                                      image_size=image_size,
                                      source=dict(format="random", seed=seed)))
  return path


def forward_seconds(models, plan, counts: dict, repeats: int = 2, seed: int = 0) -> dict:
  """The sweep's forwards alone, each times the calls the sweep made of it (the gate's edge
  pass included) -> {"edge" | "ceiling" | K: {rows, calls, seconds...}, "total_s": ...}."""
  pipe = pipeline.build(plan, models)
  b, s = pipe.plan.batch_size, pipe.plan.server_batch_size
  calls = {"edge": counts["edge_batches"] + counts.get("gate_batches", 0)}
  calls.update((k if k == "ceiling" else int(k), n) for k, n in counts["server_calls"].items())
  names = [k for k, n in calls.items() if n]
  timed = lambda fn: timing.best_of(fn, repeats, warmup=1)[0]
  per_call = harness.forward_seconds(pipe, models.server, names, timed,
                                     harness.synthetic_images(max(b, s), plan.dataset, seed))
  out = {}
  for k, n in calls.items():
    t = per_call[k][0] if n else 0.0
    out[str(k)] = dict(rows=b if k == "edge" else s, calls=int(n), seconds_per_call=t,
                       seconds=t * n)
  out["total_s"] = sum(v["seconds"] for v in out.values())
  return out


# --- Bytes read --------------------------------------------------------------------------

def _rchar(path: str):
  """The bytes read so far ("rchar") from a /proc io file, or None without one."""
  try:
    with open(path) as f:
      return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
  except (OSError, StopIteration):
    return None


@contextlib.contextmanager
def _io_window(box: dict):
  """The read counters of the process and of this thread at the window's ends -> `box`."""
  counters = lambda: dict(process=_rchar("/proc/self/io"), thread=_rchar("/proc/thread-self/io"))
  box["io_start"] = counters()
  try:
    yield
  finally:
    box["io_end"] = counters()


def stored_split_bytes(dataset_cfg) -> tuple:
  """-> (bytes of the split's TFRecord shard files, images in the split, shard count)."""
  import tensorflow_datasets as tfds
  builder = tfds.builder(dataset_cfg.name, data_dir=files.expanduser(dataset_cfg.data_dir))
  split = builder.info.splits[dataset_cfg.split]
  paths = [os.fspath(p) for p in split.filepaths]
  return sum(files.size(p) for p in paths), int(split.num_examples), len(paths)


def bytes_read(box: dict, dataset_cfg, images: int) -> dict:
  """The read counters of the sweep's window -> bytes_read_ratio (docs/imagenet.md) & parts."""
  start, end = box.get("io_start") or {}, box.get("io_end") or {}
  stored, split_images, shards = stored_split_bytes(dataset_cfg)
  out = dict(stored_split_bytes=stored, split_images=split_images, shards=shards,
             stored_bytes_evaluated=stored * images / split_images)
  if None in (start.get("process"), end.get("process"), start.get("thread"), end.get("thread")):
    return dict(out, bytes_read_ratio=None, note="no /proc/self/io on this system")
  process = end["process"] - start["process"]
  main_thread = end["thread"] - start["thread"]
  out.update(read_by_process=process, read_by_main_thread=main_thread)
  if main_thread > MAIN_THREAD_SHARE * out["stored_bytes_evaluated"]:
    # The main thread read records itself (a tf.data pipeline without a background
    # stage): its reads are the dataset's, so nothing is subtracted.
    read, out["note"] = process, "the main thread read dataset records; nothing subtracted"
  else:
    read = process - main_thread
  return dict(out, dataset_bytes_read=read, bytes_read_ratio=read / out["stored_bytes_evaluated"])


def combine_reads(parts: list) -> dict:
  """Each process's bytes_read -> the ratio over all (None if a process could not count)."""
  read = [p.get("dataset_bytes_read") for p in parts]
  stored = sum(p["stored_bytes_evaluated"] for p in parts)
  ratio = None if None in read or not stored else sum(read) / stored
  return dict(processes=parts, dataset_bytes_read=None if None in read else sum(read),
              stored_bytes_evaluated=stored, bytes_read_ratio=ratio)


def all_processes(own: dict) -> dict:
  """bytes_read of this process -> itself, or with several, combined (this one's: "own")."""
  if jax.process_count() == 1:
    return own
  from jax.experimental import multihost_utils
  mine = np.asarray([np.nan if own.get("dataset_bytes_read") is None
                     else own["dataset_bytes_read"], own["stored_bytes_evaluated"]], np.float64)
  rows = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2)
  parts = [dict(dataset_bytes_read=None if np.isnan(r) else float(r),
                stored_bytes_evaluated=float(s)) for r, s in rows]
  return dict(combine_reads(parts), own=own)


# --- The rehearsal -----------------------------------------------------------------------

def _clear(workdir: str, overwrite: bool) -> None:
  """Refuses (or with overwrite clears) a workdir holding an earlier run's progress."""
  progress = os.path.join(workdir, "progress")
  done = files.listdir(progress)
  if not done and not files.exists(os.path.join(workdir, "config.json")):
    return
  if not overwrite:
    raise ValueError(
        f"workdir {workdir} already holds an earlier run ({len(done)} progress chunks); a "
        "rehearsal times a sweep from scratch: give a new WORKDIR, or --overwrite to delete "
        "its progress/, config.json and timing.json first")
  for name in done:
    files.remove(os.path.join(progress, name))
  for name in ("config.json", "timing.json"):
    if files.exists(os.path.join(workdir, name)):
      files.remove(os.path.join(workdir, name))


def _prepare(config, r) -> dict:
  """-> (the sweep config with its split and weights from the cache, the split's stats or
  None)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for name in MEASURE_FIELDS:
      del config[name]
    config.mode = "sweep"
  use_synthetic, synthetic = not config.dataset.data_dir, None
  if use_synthetic and config.dataset.name != "imagenet2012":
    raise ValueError(f"dataset.name {config.dataset.name!r}: the synthetic split is "
                     "imagenet2012; give --config.dataset.data_dir for another dataset")
  for turn in (0, 1):  # several processes: process 0 builds, the others then find the cache
    if (jax.process_index() == 0) == (turn == 0):
      if use_synthetic:
        config.dataset.data_dir, synthetic = synthetic_imagenet(
            r.cache_dir, r.synthetic_images, r.seed, r.synthetic_shards)
      for i, role in enumerate((config.edge, config.server)):
        if not role.checkpoint:
          role.checkpoint = random_checkpoint(r.cache_dir, role.variant, r.seed + i,
                                              config.dataset.num_classes,
                                              config.dataset.image_size)
    if turn == 0:
      distributed.barrier("sage_jax_rehearsal_cache")
  return config, synthetic


def rows(config, workdir, log):
  """The rehearsal -> one row (from process 0; the others print their bytes read)."""
  r = config.rehearsal
  sweep_config, synthetic = _prepare(config, r)
  _clear(workdir, r.overwrite)
  # Imported before the measured window: the main thread reads ~60 MB of TensorFlow's
  # module files when the input pipeline first imports it.
  import tensorflow  # noqa: F401
  from sage_jax.data import preprocess  # noqa: F401
  from sage_jax.sweep import compile_cache  # noqa: F401
  box = {}
  done = loop.run(sweep_config, workdir, progress=False,
                   compile_stats=compile_cache.Stats(),  # compilation apart
                   window=lambda: _io_window(box))
  plan = done.plan
  ranges = loop.chunk_ranges(input_pipeline.num_examples(plan.dataset, plan.num_images),
                             plan.chunk_size)
  own = sum(ranges[c][1] - ranges[c][0] for c in distributed.my_chunks(len(ranges)))
  reads = all_processes(bytes_read(box, sweep_config.dataset, own))
  if jax.process_index() != 0:  # process 0 holds the timing, so it reports
    mb = reads["own"].get("dataset_bytes_read")
    mb = "nan" if mb is None else f"{mb / 1e6:.1f}"
    print(f"process {jax.process_index()}: read {mb} MB for its {own} images; process 0 "
          "writes rehearsal.json", flush=True)
    return
  t, read = done.timing, reads.get("dataset_bytes_read")
  seg = t["segments_s"]
  steady_s = t["wall_s"] - seg.get("setup", 0.0) - seg.get("compile", 0.0)
  log("timing the forwards alone at the sweep's shapes ...")
  forwards = forward_seconds(done.models, plan, t, r.repeats, r.seed)
  c = sweep_config
  yield dict(
      table="rehearsal", images=t["images"], images_per_second=t["images"] / t["wall_s"],
      images_per_second_steady=t["images"] / steady_s if steady_s > 0 else None,
      bytes_read_ratio=reads["bytes_read_ratio"],
      pipeline_efficiency=forwards["total_s"] / steady_s if steady_s > 0 else None,
      steady_s=steady_s, wall_s=t["wall_s"], forwards_s=forwards["total_s"],
      dataset_mb_read=None if read is None else read / 1e6,
      stored_mb_evaluated=reads["stored_bytes_evaluated"] / 1e6,
      timing=t, bytes=reads, forwards=forwards, synthetic=synthetic,
      devices=[str(d) for d in jax.local_devices()],
      sweep=dict(num_images=c.num_images, budgets=c.budgets, rules=c.rules,
                 batch_size=c.batch_size, server_batch_size=c.server_batch_size,
                 chunk_size=c.chunk_size, gate=c.gate.to_dict(), edge=c.edge.to_dict(),
                 server=c.server.to_dict(), data_dir=c.dataset.data_dir,
                 compute_dtype=c.compute_dtype))


def notes(rows) -> list:
  """The last line printed: the three numbers."""
  fmt = lambda x, spec: "nan" if x is None else format(x, spec)
  return [f"rehearsal: images_per_second={fmt(r['images_per_second'], '.2f')} "
          f"bytes_read_ratio={fmt(r['bytes_read_ratio'], '.3f')} "
          f"pipeline_efficiency={fmt(r['pipeline_efficiency'], '.3f')}" for r in rows]
