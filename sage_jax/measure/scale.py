"""The "scale" measure: the whole sweep at scale, on random models and synthetic images."""
import math

import jax

from sage_jax.measure import harness
from sage_jax.sweep import compile_cache
from sage_jax.sweep import offload
from sage_jax.sweep import pipeline
from sage_jax import timing

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
  config.gate.uncertainty, config.gate.fraction = "fraction", share
  return harness.configured(config, rules, budgets, compute_dtype, min(config.batch_size, n_images),
                    min(server_batch or config.server_batch_size,
                        max(1, math.ceil(share * n_images))))


def sweep_at_scale(plan, n_images: int, share: float) -> dict:
  """The pipeline on random weights and n_images synthetic images, `share` offloaded, after
  a warm-up batch that compiles (docs/benchmark.md)."""
  pipe = pipeline.build(plan, harness.random_models(plan))
  batches = harness.synthetic_batches(n_images, pipe.plan.batch_size, plan.dataset)
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
  r, split = sweep_at_scale(plan, n_images, share), harness.shape(shape_name)[2]
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
  return scale_plan(harness.shape(s.shape)[0](), n, s.share, harness.items(s.rules),
                    [int(k) for k in harness.items(s.budgets)], config.compute_dtype,
                    s.server_batch), n


def rows(config, workdir, log):
  """The "scale" measure alone: the sweep at scale of a benchmark config."""
  del workdir, log
  checked = scale_plan_of(config)
  if checked:
    yield from scale_rows(config.scale.shape, checked[0], checked[1], config.scale.share)


