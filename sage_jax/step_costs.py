"""What XLA says each compiled step of the sweep costs: FLOPs and bytes accessed.

The sweep's own jitted steps (`pipeline.build` on random weights) are compiled ahead of
time, shapes only, and `compiled.cost_analysis()` gives each one's cost. XLA counts the
body of a while loop once, whatever its trip count: the budget step runs the server inside
a fori_loop, once per server_batch fresh evidence rows, so its cost is taken apart as
select = cost(budget step) - cost(one server chunk) and put back together as
select + trips * chunk (`budget_cost`), the chunk compiled on its own (docs/imagenet.md).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import measure, pipeline


class Cost(NamedTuple):
  flops: float
  bytes: float


def add(*costs) -> Cost:
  return Cost(sum(c.flops for c in costs), sum(c.bytes for c in costs))


def times(cost: Cost, k: float) -> Cost:
  return Cost(cost.flops * k, cost.bytes * k)


def budget_cost(select: Cost, chunk: Cost, trips: float) -> Cost:
  """The budget step with its server loop run `trips` times (XLA counts the body once)."""
  return add(select, times(chunk, trips))


def cost_of(compiled) -> Cost:
  """compiled.cost_analysis() (a dict, or a list of one dict per program) -> Cost."""
  ca = compiled.cost_analysis()
  ca = ca if isinstance(ca, dict) else ca[0]
  return Cost(float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0)))


def projection_plan(shape, rules=(), budgets=(), dtype="float32", batch=0, server_batch=0):
  """The shape's sweep config (every rule and budget of it unless given) -> its plan, with
  the per-chip batch sizes (0: the config's)."""
  budgets = budgets or measure.items(measure.shape(shape)[0]().budgets)
  return measure.shape_plan(shape, rules, budgets, dtype, batch, server_batch)


def _rows(x, n):
  """The first n rows of x (repeated if x has fewer): an array or a ShapeDtypeStruct."""
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((n,) + x.shape[1:], x.dtype)
  return np.take(np.asarray(x), np.arange(n) % len(x), axis=0)


def step_inputs(pipe, images):
  """-> (edge images, server batch): concrete arrays from `images` (the steps run), or
  ShapeDtypeStructs when `images` is one (shapes only, nothing runs)."""
  abstract = isinstance(images, jax.ShapeDtypeStruct)
  put = (lambda t: t) if abstract else pipe.put
  edge_in = put(images)
  out = (jax.eval_shape(pipe.steps.edge, pipe.edge_params, edge_in) if abstract else
         jax.device_get(pipe.steps.edge(pipe.edge_params, edge_in)))
  s = pipe.plan.server_batch_size
  batch = dict(image=_rows(images, s),
               index=_rows(jax.ShapeDtypeStruct((s,), jnp.int32) if abstract
                           else np.arange(s, dtype=np.int32), s),
               importance={k: _rows(v, s) for k, v in out["importance"].items()},
               tokens=_rows(out["tokens"], s),
               valid=_rows(jax.ShapeDtypeStruct((s,), jnp.bool_) if abstract
                           else np.ones(s, bool), s))
  return edge_in, batch if abstract else put(batch)


def chunk_fn(server):
  """The budget step's loop body: the server on a chunk of rows with K kept patches."""
  return jax.jit(lambda p, x, idx, mask: server.apply({"params": p}, x, idx, mask, True)[0])


def compile_steps(pipe, server, images):
  """Every step compiled at the inputs `images` makes (`step_inputs`) -> list of
  (name, compiled, args, cost); budgets ascending, each with its server chunk."""
  edge_in, batch = step_inputs(pipe, images)
  p, s = pipe.server_params, pipe.plan.server_batch_size
  abstract = isinstance(images, jax.ShapeDtypeStruct)
  out = []

  def add_step(name, fn, *args, static=()):
    """Compiled with `static` (trailing static arguments), called without them."""
    compiled = measure.aot(fn, *args, *static)[0]
    out.append((name, compiled, args, cost_of(compiled)))
    return compiled

  add_step("edge", pipe.steps.edge, pipe.edge_params, edge_in)
  ceiling = add_step("ceiling", pipe.steps.ceiling, p, batch["image"])
  known = (jax.eval_shape(pipe.steps.ceiling, p, batch["image"]) if abstract
           else ceiling(p, batch["image"]))[1]
  chunk = chunk_fn(server)
  for k in sorted(pipe.plan.budgets):
    idx = _rows(jax.ShapeDtypeStruct((s, k), jnp.int32) if abstract
                else np.tile(np.arange(k, dtype=np.int32), (s, 1)), s)
    mask = _rows(jax.ShapeDtypeStruct((s, k), jnp.bool_) if abstract else np.ones((s, k), bool), s)
    if not abstract:
      idx, mask = pipe.put(idx), pipe.put(mask)
    add_step(("chunk", k), chunk, p, batch["image"], idx, mask)
    step = add_step(("budget", k), pipe.steps.budget, p, batch, known, static=(k,))
    known = (jax.eval_shape(pipe.steps.budget, p, batch, known, k) if abstract
             else step(p, batch, known))[1]
  return out


def select_cost(step: Cost, chunk: Cost) -> Cost:
  """The budget step without the one server chunk XLA counted in it: selection + dedup."""
  return Cost(max(step.flops - chunk.flops, 0.0), max(step.bytes - chunk.bytes, 0.0))


def costs_by_step(compiled) -> dict:
  """compile_steps' list -> {"edge", "ceiling", ("chunk", k), ("select", k)}: Costs."""
  raw = {name: cost for name, _, _, cost in compiled}
  costs = {name: cost for name, cost in raw.items() if not isinstance(name, tuple)
           or name[0] == "chunk"}
  for name, cost in raw.items():
    if isinstance(name, tuple) and name[0] == "budget":
      costs[("select", name[1])] = select_cost(cost, raw[("chunk", name[1])])
  return costs


def step_costs(plan, models=None) -> dict:
  """The plan's steps, shapes only (nothing runs) -> costs_by_step."""
  models = models or measure.random_models(plan)
  pipe = pipeline.build(plan, models)
  ds = plan.dataset
  images = jax.ShapeDtypeStruct((pipe.plan.batch_size, ds.image_size, ds.image_size,
                                 ds.channels), jnp.float32)
  return costs_by_step(compile_steps(pipe, models.server, images))
