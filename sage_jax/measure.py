"""Measures (`mode = "measure"`) time the pipeline instead of sweeping it: each (`MEASURES`)
is a module whose `rows(config, workdir, log)` yields dict rows, and `run_measures` writes
WORKDIR/<measure>.json (after every row) and .md. Here too what they share (no torch).
"""
import importlib
import importlib.metadata
import json
import math
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import compile_cache, defaults, files, offload, pipeline, tables, timing, vit
from sage_jax import plan as plan_lib

MEASURES = {"benchmark": "sage_jax.benchmark", "scale": "sage_jax.measure",
            "rehearsal": "sage_jax.rehearsal", "roofline": "sage_jax.roofline"}
# shape -> (config, default budgets, images of the evaluation split)
SHAPES = {"fmnist": (defaults.sweep_config, (4, 6, 8, 12, 16, 24, 32, 49), 10_000),
          "deit": (defaults.imagenet_deit, (16, 32, 48, 64, 96), 50_000)}
VERSIONS = ("jax", "jaxlib", "flax", "torch", "numpy", "ml_collections")


def items(text: str) -> list:
  """'a,b,,c' -> ['a', 'b', 'c'] (a config's comma-separated list)."""
  return [x.strip() for x in str(text).split(",") if x.strip()]


def shape(name: str) -> tuple:
  if name not in SHAPES:
    raise ValueError(f"unknown shape {name!r}; allowed: {', '.join(SHAPES)}")
  return SHAPES[name]


def configured(config, rules=(), budgets=(), compute_dtype="float32", batch=0,
               server_batch=0):
  """A sweep config with these rules, budgets, dtype and batch sizes (empty or 0: its own)
  -> its checked plan."""
  config.rules = ",".join(rules) or config.rules
  config.budgets = ",".join(str(k) for k in budgets) or config.budgets
  config.compute_dtype = compute_dtype
  config.batch_size = batch or config.batch_size
  config.server_batch_size = server_batch or config.server_batch_size
  return plan_lib.make(config)


def shape_plan(name: str, rules=(), budgets=(), compute_dtype="float32", batch=0,
               server_batch=0):
  """The shape's sweep config (its rules, the shape's budgets unless given) -> its plan."""
  config_fn, default_budgets, _ = shape(name)
  return configured(config_fn(), rules, budgets or default_budgets, compute_dtype, batch,
                    server_batch)


def random_params(model, channels: int, seed: int = 0):
  """Random weights of a sage_jax ViT (numpy); the head (zeros at init) has std 2/sqrt(width),
  so the edge's confidence varies from image to image."""
  key, head_key = jax.random.split(jax.random.PRNGKey(seed))
  side = math.isqrt(model.num_patches) * model.patch_size
  image = np.zeros((1, side, side, channels), np.float32)
  params = jax.tree.map(np.asarray, jax.jit(model.init)(key, image)["params"])
  params["head"]["kernel"] = np.asarray(jax.random.normal(
      head_key, (model.width, model.num_classes)) * (2.0 / math.sqrt(model.width)), np.float32)
  return params


def random_models(plan, seed: int = 0) -> pipeline.ModelPair:
  """The plan's edge and server with random weights (seeds seed and seed + 1)."""
  out = []
  for i, spec in enumerate((plan.edge, plan.server)):
    model = vit.Model(plan.dataset.num_classes, spec.variant, plan.dataset.image_size,
                      vit.COMPUTE_DTYPES[plan.compute_dtype])
    out += [model, random_params(model, plan.dataset.channels, seed + i)]
  return pipeline.ModelPair(*out)


def synthetic_images(n: int, ds, seed: int = 0) -> np.ndarray:
  """f32[n, H, W, C] of standard normal pixels (the dataset's shape)."""
  shape_ = (n, ds.image_size, ds.image_size, ds.channels)
  return np.random.default_rng(seed).standard_normal(shape_, np.float32)


def synthetic_batches(n_images: int, batch: int, ds, seed: int = 0) -> list:
  """n_images synthetic images as `data.eval_batches` gives them (last one padded)."""
  images, out = synthetic_images(n_images, ds, seed), []
  for lo in range(0, n_images, batch):
    take = min(batch, n_images - lo)
    image = np.zeros((batch,) + images.shape[1:], np.float32)
    image[:take] = images[lo:lo + take]
    index = np.arange(lo, lo + batch, dtype=np.int32)
    out.append(dict(image=image, label=(index % ds.num_classes).astype(np.int32),
                    index=np.where(index < n_images, index, 0).astype(np.int32),
                    valid=np.arange(batch) < take))
  return out


def keep_indices(rows: int, n: int, k: int, seed: int = 0) -> np.ndarray:
  """i32[rows, k]: k distinct patches of n per row, in random order."""
  return np.random.default_rng(seed).random((rows, n)).argsort(-1)[:, :k].astype(np.int32)


def aot(jitted, *args) -> tuple:
  """-> (compiled, seconds to trace, lower and compile, the persistent cache bypassed)."""
  with compile_cache.bypassed():
    seconds, compiled = timing.best_of(lambda: jitted.lower(*args).compile())
  return compiled, seconds


def matmul_seconds(n: int, dtype: str, timed) -> float:
  """One n x n matmul in jax (its default device); timed(fn) -> seconds."""
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, n, n), vit.COMPUTE_DTYPES[dtype])
  mm = jax.jit(jnp.matmul)
  return timed(lambda: mm(a, b))


def forward_seconds(pipe, server, names, timed, images) -> dict:
  """The sweep's forwards alone, compiled ahead of time: "edge", the server on all patches
  ("ceiling") or K random ones (int K) -> {name: (seconds per call, compile seconds)}."""
  b, s, n = pipe.plan.batch_size, pipe.plan.server_batch_size, server.num_patches
  x_edge, x_server = pipe.put(images[:b]), pipe.put(images[:s])
  subset = jax.jit(lambda p, x, idx, mask: server.apply({"params": p}, x, idx, mask, True)[0])
  ceiling = jax.jit(lambda p, x: server.apply({"params": p}, x, logits_only=True)[0])
  out = {}
  for name in names:
    if name in ("edge", "ceiling"):
      jitted, args = ((pipe.steps.edge, (pipe.edge_params, x_edge)) if name == "edge"
                      else (ceiling, (pipe.server_params, x_server)))
    else:
      keep = (pipe.put(keep_indices(s, n, name)), pipe.put(np.ones((s, name), bool)))
      jitted, args = subset, (pipe.server_params, x_server, *keep)
    fn, secs = aot(jitted, *args)
    out[name] = (timed(lambda: fn(*args)), secs)
  return out


# --- the sweep at scale --------------------------------------------------------------------

def scale_plan(config, n_images: int, share: float, rules=(), budgets=(),
               compute_dtype="float32", server_batch: int = 0):
  """A sweep config -> its plan, the gate offloading `share`, batches capped by the work."""
  if n_images < 1:
    raise ValueError(f"scale images {n_images} is not allowed; give at least 1")
  if not 0 < share <= 1:
    raise ValueError(f"offload share {share} is not allowed; it must be in (0, 1]")
  if server_batch < 0:
    raise ValueError(f"server batch {server_batch} is not allowed; give a size > 0, or 0 "
                     "(the config's)")
  config.gate.measure, config.gate.fraction = "fraction", share
  return configured(config, rules, budgets, compute_dtype, min(config.batch_size, n_images),
                    min(server_batch or config.server_batch_size,
                        max(1, math.ceil(share * n_images))))


def sweep_at_scale(plan, n_images: int, share: float) -> dict:
  """The pipeline on random weights and n_images synthetic images, `share` offloaded, after
  a warm-up batch that compiles (docs/benchmark.md)."""
  pipe = pipeline.build(plan, random_models(plan))
  batches = synthetic_batches(n_images, pipe.plan.batch_size, plan.dataset)
  threshold = offload.calibrate_fraction(pipeline.uncertainties(pipe, batches)[0], share)
  with compile_cache.bypassed():  # the warm-up row is compile time, without the cache
    warmup_seconds, _ = timing.best_of(lambda: pipeline.evaluate(pipe, batches[:1], threshold))
  seconds, (records, counts) = timing.best_of(
      lambda: pipeline.evaluate(pipe, batches, threshold))
  return dict(images=n_images, seconds=seconds, images_per_s=n_images / seconds,
              offloaded=int(records["offloaded"].sum()), threshold=threshold,
              rows_run=counts["server_rows_run"], rows_all=counts["server_rows_all"],
              warmup_seconds=warmup_seconds, warmup_images=int(batches[0]["valid"].sum()),
              batch_size=pipe.plan.batch_size, server_batch_size=pipe.plan.server_batch_size,
              rules=len(plan.rules), budgets=list(plan.budgets),
              compute_dtype=plan.compute_dtype)


def scale_rows(shape_name, plan, n_images, share):
  """The sweep at scale -> benchmark-style rows (sage_jax alone)."""
  r, split = sweep_at_scale(plan, n_images, share), shape(shape_name)[2]
  row = lambda name, unit, value, **kw: dict(table="benchmark", shape=shape_name, name=name,
                                             unit=unit, jax=value, **kw)
  return [row(f"sweep at scale {r['rules']}x{len(r['budgets'])}, {n_images} img, "
              f"{r['offloaded']} off", "img/s", r["images_per_s"], scale=r),
          row(f"projected {split:,}-image sweep, compute only", "s", split / r["images_per_s"]),
          row(f"sweep at scale, server rows run of {r['rows_all']}", "rows", r["rows_run"]),
          row(f"sweep at scale, warm-up: compile + {r['warmup_images']} img", "s",
              r["warmup_seconds"])]


def scale_plan_of(config):
  """config.scale -> (plan, images), or None."""
  s = config.scale
  if s.images < -1:
    raise ValueError(f"scale.images {s.images} is not allowed; give a count, 0 (none) or "
                     "-1 (auto)")
  n = s.images if s.images != -1 else (4096 if jax.default_backend() != "cpu" else 16)
  if not n:
    return None
  return scale_plan(shape(s.shape)[0](), n, s.share, items(s.rules),
                    [int(k) for k in items(s.budgets)], config.compute_dtype,
                    s.server_batch), n


def rows(config, workdir, log):
  """The "scale" measure alone: the sweep at scale of a benchmark config."""
  del workdir, log
  checked = scale_plan_of(config)
  if checked:
    yield from scale_rows(config.scale.shape, checked[0], checked[1], config.scale.share)


# --- the one writer ------------------------------------------------------------------------

def describe() -> dict:
  """Where and with what this ran (every JSON's header)."""

  def version(package):
    try:
      return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      return None
  return dict(devices=[str(d) for d in jax.devices()], jax_backend=jax.default_backend(),
              versions=dict(python=platform.python_version(),
                            **{name: version(name) for name in VERSIONS}))


def _cell(v) -> str:
  return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def by_table(rows) -> dict:
  """Rows -> {table: (head, rows of strings)}: scalar columns, in first-seen order."""
  out = {}
  for r in rows:
    head, _ = out.setdefault(r.get("table", ""), ([], []))
    head += [k for k, v in r.items() if k != "table" and k not in head
             and not isinstance(v, (dict, list, tuple))]
  for r in rows:
    head, cells = out[r.get("table", "")]
    cells.append([_cell(r.get(k)) for k in head])
  return out


def report(rows, markdown: bool = False) -> str:
  fmt = tables.markdown if markdown else tables.text
  return "\n\n".join(f"{name}:\n{fmt(*t)}" for name, t in by_table(rows).items()) + "\n"


def run_measures(config, workdir: str) -> dict:
  """config.measures' rows -> {name: rows}; process 0 writes and prints."""
  names = items(config.measures)
  unknown = [n for n in names if n not in MEASURES]
  if unknown or not names:
    raise ValueError(f"unknown measure {(unknown or [''])[0]!r}; allowed: {', '.join(MEASURES)}")
  writes = jax.process_index() == 0
  if writes:
    files.makedirs(workdir)
  elapsed, done = timing.stopwatch(), {}
  log = lambda msg: print(f"[{elapsed():6.0f} s] {msg}", file=sys.stderr, flush=True)
  for name in names:
    module = importlib.import_module(MEASURES[name])
    path, got = os.path.join(workdir, f"{name}.json"), []
    head = dict(measure=name, config=json.loads(config.to_json()), **describe())
    for row in module.rows(config, workdir, log):
      got.append(row)
      log(f"{name}: {len(got)} rows measured")
      if writes:
        _write_json(path, head, got, elapsed(), complete=False)
    if writes:
      _write_json(path, head, got, elapsed(), complete=True)
      files.write(os.path.join(workdir, f"{name}.md"), report(got, markdown=True).encode())
      notes = getattr(module, "notes", lambda rows: [])(got)
      print(report(got) + "".join(f"{line}\n" for line in notes), end="", flush=True)
    done[name] = got
  return done


def _write_json(path, head, rows, seconds, complete):
  files.write(path, (json.dumps(dict(head, rows=rows, total_seconds=seconds, complete=complete,
                                     tensorflow_imported="tensorflow" in sys.modules),
                                indent=1, default=_plain) + "\n").encode())


def _plain(x):
  """numpy scalars -> Python numbers; anything else JSON lacks -> its str."""
  return x.item() if isinstance(x, np.generic) else str(x)
