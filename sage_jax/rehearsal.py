"""A rehearsal of the ImageNet sweep at ImageNet shapes: synthetic data, random weights.

  bash launch/rehearsal.sh WORKDIR [--num_images=N] [--config.FIELD=VALUE ...]
  python -m sage_jax.rehearsal --workdir=WORKDIR [--num_images=N] [--config.FIELD=VALUE ...]

1. Data: a synthetic `imagenet2012` validation split, built once through TFDS's own
   imagenet2012 builder (a generated ILSVRC2012_img_val.tar as its manual download) and
   cached under --cache_dir (a `data_dir` of its own, so a real imagenet2012 in
   ~/tensorflow_datasets is never shadowed). --synthetic_images JPEGs (default 5,000),
   seeded per image: ImageNet's sizes (500x375, 375x500, 500x333, 333x500, else long side
   500 and short side 200..500), textured content (octaves of smooth colour noise plus
   pixel grain, so they compress like photos) at JPEG quality 93..96, about 105 KB a
   file on average (ImageNet: ~110 KB); TFDS shards them by size as it shards the real
   split (4 shards of ~130 MB for 5,000 images, or --synthetic_shards).
2. Models: DeiT-Ti/16 and DeiT-B/16 (the config's variants) with random weights in
   sage_jax's checkpoint format (`checkpoints.save`), cached under --cache_dir. The
   head is drawn at a scale that spreads the edge's confidence; random weights would
   offload every image at the paper's 1-bit gate, so the default config offloads the
   paper's 35.7% instead (`gate.measure=fraction`, `gate.fraction=0.357`).
3. The sweep: the paper config (`configs/imagenet_deit.py`, i.e. `defaults.imagenet_deit`)
   through `sweep.run` in this process, CPU-sized by default (budgets 16,64, rules
   topk,sage,threshold, 1,000 images), then any --config overrides. A rehearsal times a
   sweep from scratch: a WORKDIR holding progress of an earlier run is refused (or
   cleared with --overwrite).
4. Measures, written to WORKDIR/rehearsal.json and printed (the last line holds the three
   numbers):
   * images_per_second: timing.json's `images` / `wall_s` (the sweep's whole wall time,
     set-up and compilation included; `images_per_second_steady` leaves those out).
   * bytes_read_ratio: bytes read from the dataset's files / stored size of the records
     evaluated. Read bytes are `rchar` of /proc/self/io (every read(2)/pread(2) of the
     process, all threads, exited ones included) from the start of `sweep.evaluate` (the
     models are loaded, the checkpoints hashed) to its end (before results, plots and
     the report), minus the reads of the main Python thread over the same window
     (/proc/thread-self/io: TFDS metadata and label files, lazily imported modules,
     progress chunks, /proc itself; TensorFlow, whose module files are ~60 MB, is
     imported before the window). tf.data reads the TFRecord shards on its own threads,
     so what is left is the dataset's files (plus any small read by other threads of TF
     or XLA). Should the main thread read more than a quarter of the stored bytes, it
     read records itself and nothing is subtracted (rehearsal.json says so). Stored
     size: the split's TFRecord shard files (their sizes on disk, TFDS's
     `SplitInfo.filepaths`) x images evaluated / images in the split. For a local
     data_dir only: bytes of a gs:// data_dir arrive over sockets, which rchar may not
     count.
   * pipeline_efficiency: the sweep's edge and server forwards timed alone at the same
     shapes (jitted `apply` of the sweep's own models on random inputs, batches split
     over the local devices as the sweep splits them, best of --repeats after one
     untimed call): edge forward of `batch_size` images x `edge_batches` (+ `gate_batches`,
     the fraction gate's pass over every image to set its threshold), server forward
     (`logits_only=True`) of `server_batch_size` rows at each K x `server_calls[K]` and
     all patches x `server_calls["ceiling"]`; divided by the sweep's wall time without
     set-up and compilation: `wall_s - segments_s["setup"] - segments_s["compile"]`.
   The counts, batch sizes and wall time come from WORKDIR/timing.json, which the sweep
   writes.
5. Several processes (`--distributed`, as for sage_jax.main; each its own WORKDIR on one
   machine): each counts its own reads for its own block of chunks, and process 0's
   bytes_read_ratio is every process's reads over every record's stored size (the parts
   under "bytes"); its pipeline_efficiency times process 0's own share of the work.
"""
import contextlib
import io
import json
import math
import os
import sys
import tarfile
import tempfile
import time
import traceback

from absl import app, flags
import jax
import numpy as np

from sage_jax import checkpoints, compile_cache, data, defaults, distributed, files, sweep, vit

GENERATOR_VERSION = 1  # bump when the synthetic images change (a new cache folder)
DEFAULT_CACHE = "~/.cache/sage_jax/rehearsal"
# (height, width) of ImageNet's most common validation sizes, with their share here; the
# rest: long side 500, short side uniform in 200..500, 70% landscape.
SIZES = (((375, 500), 0.42), ((500, 375), 0.18), ((333, 500), 0.10), ((500, 333), 0.05))
VAL_IMAGES = 50_000  # TFDS's validation label list holds this many labels
INPUT_ERRORS = (ValueError, FileNotFoundError, PermissionError)
# The main thread's own reads (metadata, imports, progress: a few hundred KB) are subtracted
# unless they exceed this share of the stored bytes evaluated: then it read records itself.
MAIN_THREAD_SHARE = 0.25


def rehearsal_config():
  """The paper config with the rehearsal's CPU-sized defaults. An empty data_dir means the
  synthetic split, an empty checkpoint random weights (both made under --cache_dir)."""
  c = defaults.imagenet_deit()
  c.dataset.data_dir = ""
  c.edge.checkpoint = c.server.checkpoint = ""
  c.budgets = "16,64"
  c.rules = "topk,sage,threshold"
  c.num_images = 1000
  c.gate.measure = "fraction"  # random weights: offload the paper's share, not everything
  c.gate.fraction = 0.357
  c.report.map_budget = 16
  c.report.moderate = (16, 64)
  return c


# ---------------------------------------------------------------------------------------
# Synthetic imagenet2012 validation split

def _size(rng):
  u, acc = rng.random(), 0.0
  for hw, share in SIZES:
    acc += share
    if u < acc:
      return hw
  short = int(rng.integers(200, 501))
  return (short, 500) if rng.random() < 0.7 else (500, short)


def synthetic_jpeg(index: int, seed: int = 0) -> bytes:
  """The index-th synthetic validation image as JPEG bytes; the same (index, seed) always
  gives the same bytes."""
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
  """Builds (once) the synthetic imagenet2012 validation split with TFDS's imagenet2012
  builder. -> (data_dir, stats dict). A second call with the same arguments finds the
  prepared dataset and builds nothing (stats["built"] is False)."""
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
  t0 = time.time()
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
               build_s=round(time.time() - t0, 1))
  files.write(stats_path, (json.dumps(stats, indent=1) + "\n").encode())
  print(f"built {num_images} images (mean JPEG {stats['mean_jpeg_bytes'] / 1e3:.1f} KB, "
        f"{stats['shards']} shards) in {stats['build_s']:.0f} s", flush=True)
  return data_dir, dict(stats, built=True)


# ---------------------------------------------------------------------------------------
# Random-weight checkpoints

def random_checkpoint(cache_dir: str, variant: str, seed: int = 0, num_classes: int = 1000,
                      image_size: int = 224) -> str:
  """A checkpoint of `variant` with random weights (written once, then reused) -> path.

  The head (zeros at init) is drawn with std 2/sqrt(width): logits of std about 2, so
  the edge's confidence differs from image to image."""
  slug = variant.replace("/", "_")
  path = os.path.join(files.expanduser(cache_dir),
                      f"random_{slug}_c{num_classes}_s{image_size}_seed{seed}.msgpack")
  if files.exists(path):
    return path
  print(f"writing a random {variant} checkpoint to {path}", flush=True)
  model = vit.Model(num_classes, variant, image_size)
  key, head_key = jax.random.split(jax.random.PRNGKey(seed))
  params = jax.jit(model.init)(key, np.zeros((1, image_size, image_size, 3), np.float32))
  params = jax.tree.map(np.asarray, params["params"])
  width = vit.decode_variant(variant)["width"]
  params["head"]["kernel"] = np.asarray(
      jax.random.normal(head_key, (width, num_classes)) * (2.0 / math.sqrt(width)), np.float32)
  checkpoints.save(path, params, dict(variant=variant, num_classes=num_classes,
                                      image_size=image_size,
                                      source=dict(format="random", seed=seed)))
  return path


# ---------------------------------------------------------------------------------------
# Measurements

def _rchar(path: str):
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("rchar:"):
          return int(line.split()[1])
  except OSError:
    return None
  return None


def _io_counters() -> dict:
  """rchar of the whole process and of the calling thread (None without /proc)."""
  return dict(process=_rchar("/proc/self/io"), thread=_rchar("/proc/thread-self/io"))


@contextlib.contextmanager
def _measure_evaluate(box: dict):
  """While active, sweep.evaluate records its plan and models and the read counters at
  its start and end into `box`."""
  real = sweep.evaluate

  def measured(plan, models, *args, **kwargs):
    box.update(plan=plan, models=models, io_start=_io_counters())
    try:
      return real(plan, models, *args, **kwargs)
    finally:
      box["io_end"] = _io_counters()

  sweep.evaluate = measured
  try:
    yield box
  finally:
    sweep.evaluate = real


def stored_split_bytes(dataset_cfg) -> tuple:
  """-> (bytes of the split's TFRecord shard files, images in the split, shard count)."""
  import tensorflow_datasets as tfds
  builder = tfds.builder(dataset_cfg.name, data_dir=files.expanduser(dataset_cfg.data_dir))
  split = builder.info.splits[dataset_cfg.split]
  paths = [os.fspath(p) for p in split.filepaths]
  return sum(files.size(p) for p in paths), int(split.num_examples), len(paths)


def bytes_read(box: dict, dataset_cfg, images: int) -> dict:
  """The read counters of the sweep's window (see the module docstring) -> ratio & parts."""
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
  """Each process's bytes_read -> the ratio over all: bytes read by every process / stored
  bytes of every record evaluated (None if a process could not count)."""
  read = [p.get("dataset_bytes_read") for p in parts]
  stored = sum(p["stored_bytes_evaluated"] for p in parts)
  ratio = None if None in read or not stored else sum(read) / stored
  return dict(processes=parts, dataset_bytes_read=None if None in read else sum(read),
              stored_bytes_evaluated=stored, bytes_read_ratio=ratio)


def all_processes(own: dict) -> dict:
  """bytes_read of this process -> itself (one process), or combined over all processes
  (on every process, with this one's under "own")."""
  if jax.process_count() == 1:
    return own
  from jax.experimental import multihost_utils
  mine = np.asarray([np.nan if own.get("dataset_bytes_read") is None
                     else own["dataset_bytes_read"], own["stored_bytes_evaluated"]], np.float64)
  rows = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2)
  parts = [dict(dataset_bytes_read=None if np.isnan(r) else float(r),
                stored_bytes_evaluated=float(s)) for r, s in rows]
  return dict(combine_reads(parts), own=own)


def forward_seconds(models, plan, timing: dict, repeats: int = 2, seed: int = 0) -> dict:
  """Times the sweep's forwards alone at its shapes (see the module docstring).

  -> {"edge" | "ceiling" | K: {rows, calls, seconds_per_call, seconds}, "total_s": ...}."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  edge, edge_params, server, server_params = models
  mesh = Mesh(np.asarray(jax.local_devices()), ("batch",))
  split, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
  edge_params = jax.device_put(edge_params, replicated)
  server_params = jax.device_put(server_params, replicated)
  ds, n = plan.dataset, plan.num_patches
  key = jax.random.PRNGKey(seed)

  def images(rows):
    x = jax.random.normal(key, (rows, ds.image_size, ds.image_size, ds.channels), np.float32)
    return jax.device_put(x, split)

  def best(fn, *args):
    jax.block_until_ready(fn(*args))  # compiles; untimed
    times = []
    for _ in range(max(1, repeats)):
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t)
    return min(times)

  def entry(rows, calls, fn, *args):
    per_call = best(fn, *args) if calls else 0.0
    return dict(rows=rows, calls=int(calls), seconds_per_call=per_call, seconds=per_call * calls)

  out = {}
  rows = int(timing["batch_size"])

  @jax.jit
  def edge_fn(p, x):  # what the sweep's edge step reads: logits, last attention, tokens
    logits, o = edge.apply({"params": p}, x)
    return logits, o["attn"], o["tokens"]

  edge_calls = timing["edge_batches"] + timing.get("gate_batches", 0)  # the gate's pass too
  out["edge"] = entry(rows, edge_calls, edge_fn, edge_params, images(rows))
  rows = int(timing["server_batch_size"])
  x = images(rows)
  ceiling_fn = jax.jit(lambda p, x: server.apply({"params": p}, x, logits_only=True)[0])
  subset_fn = jax.jit(lambda p, x, idx, mask: server.apply({"params": p}, x, idx, mask, True)[0])
  for name, calls in timing["server_calls"].items():
    if name == "ceiling":
      out[name] = entry(rows, calls, ceiling_fn, server_params, x)
      continue
    k = int(name)
    order = jax.random.uniform(jax.random.fold_in(key, k), (rows, n)).argsort(-1)
    idx = jax.device_put(order[:, :k].astype(np.int32), split)
    mask = jax.device_put(np.ones((rows, k), bool), split)
    out[name] = entry(rows, calls, subset_fn, server_params, x, idx, mask)
  out["total_s"] = sum(v["seconds"] for v in out.values())
  return out


def read_timing(workdir: str) -> dict:
  path = os.path.join(workdir, "timing.json")
  if not files.exists(path):
    raise FileNotFoundError(
        f"{path} not found: this sweep wrote no timing breakdown (wall_s, segments_s, "
        "edge_batches, server_calls, ...), which the rehearsal's measures need; run it "
        "with a sage_jax whose sweep writes WORKDIR/timing.json")
  timing = json.loads(files.read_bytes(path))
  missing = [k for k in ("wall_s", "segments_s", "edge_batches", "batch_size",
                         "server_batch_size", "server_calls", "images") if k not in timing]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}; the rehearsal needs them")
  return timing


# ---------------------------------------------------------------------------------------
# The rehearsal

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


def run(config, workdir: str, cache_dir: str = DEFAULT_CACHE, synthetic_images: int = 5000,
        synthetic_shards: int = 0, seed: int = 0, repeats: int = 2,
        overwrite: bool = False) -> dict:
  """The rehearsal (module docstring); returns what it writes to WORKDIR/rehearsal.json
  (processes other than 0, which write none, return their bytes read)."""
  config = config.copy_and_resolve_references()
  use_synthetic, synthetic = not config.dataset.data_dir, None
  if use_synthetic and config.dataset.name != "imagenet2012":
    raise ValueError(f"dataset.name {config.dataset.name!r}: the synthetic split is "
                     "imagenet2012; give --config.dataset.data_dir for another dataset")

  def prepare():  # builds the cached split and weights once, or finds them
    nonlocal synthetic
    if use_synthetic:
      config.dataset.data_dir, synthetic = synthetic_imagenet(cache_dir, synthetic_images, seed,
                                                              synthetic_shards)
    for i, role in enumerate((config.edge, config.server)):
      if not role.checkpoint:
        role.checkpoint = random_checkpoint(cache_dir, role.variant, seed + i,
                                            config.dataset.num_classes, config.dataset.image_size)

  # Several processes (--distributed): process 0 builds, the others then find the cache.
  if jax.process_index() == 0:
    prepare()
  distributed.barrier("sage_jax_rehearsal_cache")
  if jax.process_index() != 0:
    prepare()
  _clear(workdir, overwrite)

  # Imported before the measured window: the main thread reads ~60 MB of TensorFlow's
  # module files when the input pipeline first imports it.
  import tensorflow  # noqa: F401
  from sage_jax import preprocess  # noqa: F401
  box = {}
  with _measure_evaluate(box):
    sweep.run(config, workdir, progress=False, stats=compile_cache.Stats())  # compile apart
  if "plan" not in box:
    raise RuntimeError("sweep.run did not call sweep.evaluate: nothing was measured")
  plan = box["plan"]
  ranges = sweep.chunk_ranges(data.num_examples(plan.dataset, plan.num_images), plan.chunk_size)
  own = sum(ranges[c][1] - ranges[c][0] for c in distributed.my_chunks(len(ranges)))
  reads = all_processes(bytes_read(box, config.dataset, own))
  if jax.process_index() != 0:  # process 0 writes timing.json, so it reports
    mb = reads["own"].get("dataset_bytes_read")
    print(f"process {jax.process_index()}: read {_num(mb and mb / 1e6, '.1f')} MB for its "
          f"{own} images; process 0 writes rehearsal.json", flush=True)
    return reads
  timing = read_timing(workdir)
  images = int(timing["images"])
  seg = timing["segments_s"]
  steady_s = timing["wall_s"] - seg.get("setup", 0.0) - seg.get("compile", 0.0)
  print("timing the forwards alone at the sweep's shapes ...", flush=True)
  forwards = forward_seconds(box["models"], box["plan"], timing, repeats, seed)
  result = dict(
      images=images,
      images_per_second=images / timing["wall_s"],
      images_per_second_steady=images / steady_s if steady_s > 0 else None,
      bytes_read_ratio=reads["bytes_read_ratio"],
      pipeline_efficiency=forwards["total_s"] / steady_s if steady_s > 0 else None,
      steady_s=steady_s,
      timing=timing, bytes=reads, forwards=forwards, synthetic=synthetic,
      devices=[str(d) for d in jax.local_devices()],
      config=dict(num_images=config.num_images, budgets=config.budgets, rules=config.rules,
                  batch_size=config.batch_size, server_batch_size=config.server_batch_size,
                  chunk_size=config.chunk_size, gate=config.gate.to_dict(),
                  edge=config.edge.to_dict(), server=config.server.to_dict(),
                  data_dir=config.dataset.data_dir, compute_dtype=config.compute_dtype))
  files.write(os.path.join(workdir, "rehearsal.json"),
              (json.dumps(result, indent=1, default=float) + "\n").encode())
  seg_text = ", ".join(f"{k} {v:.1f}" for k, v in seg.items())
  print(f"sweep: {images} images in {timing['wall_s']:.1f} s ({seg_text}); forwards alone "
        f"{forwards['total_s']:.1f} s of the {steady_s:.1f} s without setup and compile; "
        f"read {reads.get('dataset_bytes_read', float('nan')) / 1e6:.1f} MB of "
        f"{reads['stored_bytes_evaluated'] / 1e6:.1f} MB stored; wrote "
        f"{os.path.join(workdir, 'rehearsal.json')}")
  print(summary_line(result), flush=True)
  return result


def _num(x, fmt):
  return "nan" if x is None else format(x, fmt)


def summary_line(result: dict) -> str:
  return (f"rehearsal: images_per_second={_num(result['images_per_second'], '.2f')} "
          f"bytes_read_ratio={_num(result['bytes_read_ratio'], '.3f')} "
          f"pipeline_efficiency={_num(result['pipeline_efficiency'], '.3f')}")


def _define_flags():
  from ml_collections import config_flags
  config_flags.DEFINE_config_dict("config", rehearsal_config(), "The sweep config (the paper "
                                  "config, CPU-sized); override fields as --config.FIELD=VALUE.")
  flags.DEFINE_string("workdir", None, "Where the sweep, timing.json and rehearsal.json go.")
  flags.DEFINE_integer("num_images", None, "Images to evaluate (sets config.num_images; "
                       "default 1000).")
  flags.DEFINE_integer("synthetic_images", 5000, "Images in the synthetic validation split.")
  flags.DEFINE_integer("synthetic_shards", 0, "TFRecord shards of the synthetic split (0: "
                       "TFDS chooses by size, as for the real split).")
  flags.DEFINE_string("cache_dir", DEFAULT_CACHE, "Where the synthetic split and the random "
                      "checkpoints are built once and kept.")
  flags.DEFINE_integer("seed", 0, "Seed of the synthetic images and the random weights.")
  flags.DEFINE_integer("repeats", 2, "Timed calls per forward shape (the best counts).")
  flags.DEFINE_bool("overwrite", False, "Delete an earlier run's progress in WORKDIR first.")
  flags.DEFINE_bool("verbose", False, "Show tracebacks for input errors.")
  distributed.define_flags()
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = f.config
    if f.num_images is not None:
      config.num_images = f.num_images
    distributed.initialize_from_flags()
    run(config, f.workdir, f.cache_dir, f.synthetic_images, f.synthetic_shards, f.seed,
        f.repeats, f.overwrite)
  except INPUT_ERRORS as e:
    if f.verbose:
      traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
