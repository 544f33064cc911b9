"""What the measures share: shapes, configured plans, random models, synthetic images,
ahead-of-time compilation and timed forwards (no torch)."""
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import defaults
from sage_jax.models import vit
from sage_jax.sweep import compile_cache
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib

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
  compiled, lower_s, compile_s = aot_parts(jitted, *args)
  return compiled, lower_s + compile_s


def aot_parts(jitted, *args) -> tuple:
  """-> (compiled, seconds to trace and lower, seconds to compile): XLA's own compile, the
  persistent cache bypassed."""
  with compile_cache.bypassed():
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, t1 - t0, time.perf_counter() - t1


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

