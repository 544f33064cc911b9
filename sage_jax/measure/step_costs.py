"""FLOPs and bytes XLA counts for each compiled step of the sweep. XLA counts a loop body
once, so a budget step is select = step - chunk (+ the select program's one budget), then
select + trips x chunk (docs/imagenet.md).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.measure import harness
from sage_jax.sweep import pipeline


class Cost(NamedTuple):
  flops: float
  bytes: float


class Step(NamedTuple):
  """One step compiled ahead of time: its name, the compiled program, its arguments, XLA's
  cost, and this machine's seconds to trace and lower it and to compile it (no cache)."""
  name: Any
  compiled: Any
  args: tuple
  cost: Cost
  lower_s: float
  compile_s: float


def budget_cost(select: Cost, chunk: Cost, trips: float) -> Cost:
  """The budget step with its server loop run `trips` times."""
  return Cost(select.flops + chunk.flops * trips, select.bytes + chunk.bytes * trips)


def select_cost(step: Cost, chunk: Cost) -> Cost:
  """The budget step without the one server chunk XLA counted in it: selection + dedup."""
  return Cost(max(step.flops - chunk.flops, 0.0), max(step.bytes - chunk.bytes, 0.0))


def cost_of(compiled) -> Cost:
  """compiled.cost_analysis() (a dict, or a list of one dict per program) -> Cost."""
  ca = compiled.cost_analysis()
  ca = ca if isinstance(ca, dict) else ca[0]
  return Cost(float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0)))


def projection_plan(shape, rules=(), budgets=(), dtype="float32", batch=0, server_batch=0):
  """The shape's sweep config (its rules and budgets unless given) -> its plan."""
  return harness.configured(harness.shape(shape)[0](), rules, budgets, dtype, batch, server_batch)


def _rows(x, n):
  """The first n rows of x (repeated if x has fewer): an array or a ShapeDtypeStruct."""
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((n,) + x.shape[1:], x.dtype)
  return np.take(np.asarray(x), np.arange(n) % len(x), axis=0)


def compile_steps(pipe, server, images):
  """Every step compiled at `images` (arrays: the steps run; a ShapeDtypeStruct: nothing
  runs) -> [Step], budgets ascending, each after its chunk."""
  abstract = isinstance(images, jax.ShapeDtypeStruct)
  s, p = pipe.plan.server_batch_size, pipe.server_params
  given = lambda shape, dtype, value: jax.ShapeDtypeStruct(shape, dtype) if abstract else value
  put = (lambda tree: tree) if abstract else pipe.put
  out = []

  def step(name, fn, *args, static=(), tail=()):
    """fn compiled (static: arguments after args, then tail) -> a call giving its outputs
    (or shapes)."""
    compiled, lower_s, compile_s = harness.aot_parts(fn, *args, *static, *tail)
    out.append(Step(name, compiled, args + tail, cost_of(compiled), lower_s, compile_s))
    return lambda: (jax.eval_shape(fn, *args, *static, *tail) if abstract
                    else compiled(*args, *tail))

  edge = step("edge", pipe.steps.edge, pipe.edge_params, put(images))()
  edge = edge if abstract else jax.device_get(edge)
  batch = put(dict(image=_rows(images, s),
                   index=given((s,), jnp.int32, np.arange(s, dtype=np.int32)),
                   importance={k: _rows(v, s) for k, v in edge["importance"].items()},
                   tokens=_rows(edge["tokens"], s), valid=given((s,), jnp.bool_, np.ones(s, bool))))
  known = step("ceiling", pipe.steps.ceiling, p, batch["image"])()[1]
  pre = None  # the slotted rules' picks at every budget: one program (server_step.select_slots)
  if pipe.steps.select is not None:
    pre = step("select", pipe.steps.select,
               {k: batch[k] for k in ("importance", "tokens", "index")})()
  chunk = jax.jit(lambda p, x, idx, mask: server.apply({"params": p}, x, idx, mask, True)[0])
  for k in sorted(pipe.plan.budgets):
    idx = put(given((s, k), jnp.int32, np.tile(np.arange(k, dtype=np.int32), (s, 1))))
    step(("chunk", k), chunk, p, batch["image"], idx,
         put(given((s, k), jnp.bool_, np.ones((s, k), bool))))
    known = step(("budget", k), pipe.steps.budget, p, batch, known, static=(k,),
                 tail=(pre,) if pre is not None else ())()[1]
  return out


def costs_by_step(compiled) -> dict:
  """compile_steps' list -> {"edge", "ceiling", ("chunk", k), ("select", k)} (and "select",
  the slotted rules' program, where there is one): Costs. A budget's selection includes the
  select program's (XLA counts its loop over the budgets once: one budget's share)."""
  costs, shared = {}, Cost(0.0, 0.0)
  for s in compiled:
    if isinstance(s.name, tuple) and s.name[0] == "budget":  # its chunk compiled just before
      own = select_cost(s.cost, costs[("chunk", s.name[1])])
      costs[("select", s.name[1])] = Cost(own.flops + shared.flops, own.bytes + shared.bytes)
    elif s.name == "select":
      shared = costs["select"] = s.cost
    else:
      costs[s.name] = s.cost
  return costs


def compile_seconds(compiled) -> dict:
  """compile_steps' list -> {"edge", "ceiling", ("chunk", k), ("budget", k)}: this machine's
  seconds to trace, lower and compile each."""
  return {s.name: s.lower_s + s.compile_s for s in compiled}


def step_costs(plan) -> tuple:
  """The plan's steps, shapes only (nothing runs) -> (costs_by_step, compile_seconds)."""
  models = harness.random_models(plan)
  pipe = pipeline.build(plan, models)
  ds = plan.dataset
  images = jax.ShapeDtypeStruct((pipe.plan.batch_size, ds.image_size, ds.image_size,
                                 ds.channels), jnp.float32)
  compiled = compile_steps(pipe, models.server, images)
  return costs_by_step(compiled), compile_seconds(compiled)
