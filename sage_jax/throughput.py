"""The sweep's throughput at scale: its own pipeline over synthetic in-memory images.

`measure(plan, n_images, share)` builds the sweep's pipeline (`pipeline.build`) on random
weights and runs `pipeline.evaluate` over n_images synthetic images (standard normal
pixels, generated before any timing), every rule at every budget of the plan, the gate's
threshold calibrated on those images' edge uncertainties so that `share` of them are
offloaded (`offload.calibrate_fraction`; random weights put no image under the paper's 1-bit
gate, so its 35.7% is imposed this way). No TFDS, TensorFlow or torch.

What is timed: `evaluate` over all n_images (edge batches, host-side regrouping, the
ceiling and every budget step, results back on the host): compute only, no image decoding,
no metrics or report. Compilation is excluded by a warm-up: `evaluate` on the first edge
batch, which compiles the edge step, the ceiling step and every budget step at the shapes
the timed run uses (its offloaded images fill server batches of the same fixed size). The
calibration pass (one more edge pass, as the sweep's `fraction` gate makes) is not timed.

With random weights the rules' evidence sets overlap differently than with trained ones, so
the server rows run (`evaluate`'s dedup) differ from the real sweep's: the row reports them.
"""
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import compile_cache, offload, pipeline, vit
from sage_jax import plan as plan_lib


def init_model(spec, ds, key, dtype="float32"):
  """Random-weight sage_jax ViT; the head is random too (its default init is zeros)."""
  model = vit.Model(ds.num_classes, spec.variant, ds.image_size, pipeline.DTYPES[dtype])
  images = jnp.zeros((1, ds.image_size, ds.image_size, ds.channels))
  params = jax.jit(model.init)(key, images)["params"]
  head = params["head"]["kernel"]
  params["head"]["kernel"] = 0.02 * jax.random.normal(jax.random.fold_in(key, 1), head.shape)
  return model, params


def random_models(plan) -> pipeline.Models:
  """The plan's edge and server with random weights (the benchmark's keys)."""
  key = jax.random.PRNGKey(0)
  return pipeline.Models(
      *init_model(plan.edge, plan.dataset, jax.random.fold_in(key, 0), plan.compute_dtype),
      *init_model(plan.server, plan.dataset, jax.random.fold_in(key, 1), plan.compute_dtype))


def scale_plan(config, n_images: int, share: float, rules=(), budgets=(),
               compute_dtype="float32", server_batch: int = 0):
  """A sweep config (every rule and budget of it unless given) -> its checked plan. Batch
  sizes: the config's (server_batch > 0 replaces its server batch), capped by the work: edge
  batch <= n_images, server batch <= the images offloaded in all."""
  if n_images < 1:
    raise ValueError(f"scale images {n_images} is not allowed; give at least 1")
  if not 0 < share <= 1:
    raise ValueError(f"offload share {share} is not allowed; it must be in (0, 1]")
  if server_batch < 0:
    raise ValueError(f"server batch {server_batch} is not allowed; give a size > 0, or 0 "
                     "(the config's)")
  if rules:
    config.rules = ",".join(rules)
  if budgets:
    config.budgets = ",".join(str(k) for k in budgets)
  config.compute_dtype = compute_dtype
  config.gate.measure, config.gate.fraction = "fraction", share
  config.batch_size = min(config.batch_size, n_images)
  config.server_batch_size = min(server_batch or config.server_batch_size,
                                 max(1, math.ceil(share * n_images)))
  return plan_lib.make(config)


def synthetic_batches(n_images: int, batch: int, ds, seed: int = 0) -> list:
  """n_images standard-normal images as the sweep's batch dicts (the last one padded and
  masked, as data.eval_batches makes them)."""
  rng = np.random.default_rng(seed)
  shape = (ds.image_size, ds.image_size, ds.channels)
  out = []
  for lo in range(0, n_images, batch):
    take = min(batch, n_images - lo)
    image = np.zeros((batch,) + shape, np.float32)
    image[:take] = rng.standard_normal((take,) + shape, np.float32)
    index = np.arange(lo, lo + batch, dtype=np.int32)
    out.append(dict(image=image, label=(index % ds.num_classes).astype(np.int32),
                    index=np.where(index < n_images, index, 0).astype(np.int32),
                    valid=np.arange(batch) < take))
  return out


def measure(plan, n_images: int, share: float, models=None) -> dict:
  """The sweep's pipeline over n_images synthetic images -> timings and counts (module
  docstring). models: pipeline.Models (default: `random_models(plan)`)."""
  pipe = pipeline.build(plan, models or random_models(plan))
  batches = synthetic_batches(n_images, pipe.plan.batch_size, plan.dataset)

  t0 = time.perf_counter()
  threshold = offload.calibrate_fraction(pipeline.uncertainties(pipe, batches)[0], share)
  calibrate_seconds = time.perf_counter() - t0

  t0 = time.perf_counter()
  with compile_cache.bypassed():  # the warm-up row is compile time, without the cache
    pipeline.evaluate(pipe, batches[:1], threshold)
  warmup_seconds = time.perf_counter() - t0

  t0 = time.perf_counter()
  records, counts = pipeline.evaluate(pipe, batches, threshold)
  seconds = time.perf_counter() - t0
  rows_run, rows_all = counts["server_rows_run"], counts["server_rows_all"]
  return dict(images=n_images, seconds=seconds, images_per_s=n_images / seconds,
              offloaded=int(records["offloaded"].sum()), threshold=threshold,
              rows_run=rows_run, rows_all=rows_all, warmup_seconds=warmup_seconds,
              warmup_images=int(batches[0]["valid"].sum()),
              calibrate_seconds=calibrate_seconds, batch_size=pipe.plan.batch_size,
              server_batch_size=pipe.plan.server_batch_size, rules=len(plan.rules),
              budgets=list(plan.budgets), compute_dtype=plan.compute_dtype)
