"""The roofline measure: the ImageNet sweep projected onto accelerators from XLA's cost of
each compiled step (`step_costs`), a roofline per chip (`PEAKS`) and data parallelism over a
system (`SYSTEMS`), checked against this CPU's step times (docs/imagenet.md). Beside the
compute, the fixed cost: each step's seconds to trace, lower and compile on this CPU
(`CPU_COMPILE`; the persistent cache bypassed), a CPU figure, not the accelerator's.
"""
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.measure import harness
from sage_jax.sweep import pipeline
from sage_jax import timing
from sage_jax.measure.step_costs import (Cost, budget_cost, compile_steps, projection_plan,
                                 select_cost, step_costs)


class Peak(NamedTuple):
  """One chip's FLOP/s and HBM bytes/s, with the document they come from."""
  flops: float
  bandwidth: float
  source: str


PEAKS = {  # datasheets (NVIDIA) and the Cloud TPU docs; dense bf16, not the 2:4-sparse figure
    "H100 SXM": Peak(989e12, 3.35e12, "NVIDIA H100 datasheet, SXM5: 989 TFLOPS, 3.35 TB/s"),
    "H200": Peak(989e12, 4.8e12, "NVIDIA H200 datasheet, SXM: 989 TFLOPS, 4.8 TB/s HBM3e"),
    "A100 SXM 80GB": Peak(312e12, 2.039e12, "NVIDIA A100 datasheet, 80GB SXM: 312 TFLOPS"),
    "TPU v4": Peak(275e12, 1.2e12, "Cloud TPU docs, v4 per chip: 275 TFLOPs, 1,200 GBps"),
    "TPU v5e": Peak(197e12, 819e9, "Cloud TPU docs, v5e per chip: 197 TFLOPs, 819 GBps"),
    "TPU v5p": Peak(459e12, 2765e9, "Cloud TPU docs, v5p per chip: 459 TFLOPs, 2,765 GBps"),
}

# accelerator -> (system, chips, hosts): the machine a researcher would rent. TPU v4 and
# v5p names count TensorCores (2 a chip), v5e names count chips (Cloud TPU docs).
SYSTEMS = {"H100 SXM": ("8x H100 host", 8, 1), "H200": ("8x H200 host", 8, 1),
           "A100 SXM 80GB": ("8x A100 host", 8, 1), "TPU v4": ("v4-32", 16, 4),
           "TPU v5e": ("v5e-8", 8, 1), "TPU v5p": ("v5p-8", 4, 1)}

# The CPU check's defaults per shape: (rules, budgets, batch); empty: the config's.
CHECK = {"fmnist": ((), (), 64), "deit": (("topk", "sage", "threshold"), (16, 64), 8)}
MISS = 2.0  # measured / predicted beyond this factor either way: the method misses
CPU_COMPILE = "compile_s (this CPU)"  # the column of the seconds to trace, lower and compile


# --- the arithmetic (pure) ------------------------------------------------------------

def roofline(cost: Cost, peak_flops: float, bandwidth: float) -> tuple:
  """-> (seconds, "compute" | "memory"): the slower of the FLOPs at the peak and the bytes at
  the bandwidth."""
  compute, memory = cost.flops / peak_flops, cost.bytes / bandwidth
  return (compute, "compute") if compute >= memory else (memory, "memory")


def trips_by_budget(budgets, dedup: float, rules: int, full_budget=None,
                    full_trips: float = 1.0) -> dict:
  """Server chunks per budget step and server batch: dedup x rules on average, full_trips at
  K = N (full_budget; docs/imagenet.md), the rest shared, at most `rules` each."""
  if full_budget not in budgets or len(budgets) == 1:
    return {k: dedup * rules for k in budgets}
  total = dedup * rules * len(budgets)
  full = min(full_trips, total)
  rest = min((total - full) / (len(budgets) - 1), rules)
  return {k: full if k == full_budget else rest for k in budgets}


def sweep_seconds(costs: dict, peak_flops, bandwidth, images, share, dedup, rules, batch,
                  server_batch, full_budget=None, full_trips=1.0) -> dict:
  """One chip's seconds for the sweep, step by step at the roofline (batches padded).
  costs: "edge", "ceiling", ("select", k), ("chunk", k). flops_only_s: the FLOPs alone."""
  edge_calls, server_batches = math.ceil(images / batch), math.ceil(images * share / server_batch)
  budgets = sorted(key[1] for key in costs if isinstance(key, tuple) and key[0] == "chunk")
  trips = trips_by_budget(budgets, dedup, rules, full_budget, full_trips)
  steps = [(edge_calls, costs["edge"], "edge"), (server_batches, costs["ceiling"], "server")]
  steps += [(server_batches, budget_cost(costs[("select", k)], costs[("chunk", k)], trips[k]),
             k) for k in budgets]
  out = dict(compute_s=0.0, memory_s=0.0, edge_s=0.0, server_s=0.0, flops_only_s=0.0,
             budget_s={})
  for calls, cost, part in steps:
    seconds, bound = roofline(cost, peak_flops, bandwidth)
    out[f"{bound}_s"] += calls * seconds
    out["edge_s" if part == "edge" else "server_s"] += calls * seconds
    out["flops_only_s"] += calls * cost.flops / peak_flops
    if part not in ("edge", "server"):
      out["budget_s"][part] = calls * seconds
  out["seconds"] = out["edge_s"] + out["server_s"]
  out["per_image_s"] = out["seconds"] / images
  out["bound"] = "compute" if out["compute_s"] >= out["memory_s"] else "memory"
  out.update(edge_steps=edge_calls, server_batches=server_batches, trips=trips)
  return out


def system(chip_seconds: float, images: int, chips: int, hosts: int,
           decode_per_core: float) -> dict:
  """One chip's sweep seconds -> the system's (data parallel) and the decoding cores per host
  that keep its chips busy."""
  seconds = chip_seconds / chips
  per_host = images / seconds / hosts
  return dict(seconds=seconds, images_per_s=images / seconds, per_host_images_per_s=per_host,
              cores_per_host=per_host / decode_per_core if decode_per_core else None)


def project(costs, peaks, systems, images, share, dedup, rules, batch, server_batch,
            decode_per_core, flag="", full_budget=None, full_trips=1.0,
            compile_s=None) -> list:
  """Per accelerator: the chip's and its system's roofline seconds and cores per host, and
  the same at the FLOPs alone -> rows. compile_s: the sweep's steps compiled on this CPU
  (`sweep_compile_s`), paid once per process whatever the accelerator, beside sweep_s."""
  rows = []
  for name, peak in peaks.items():
    s = sweep_seconds(costs, peak.flops, peak.bandwidth, images, share, dedup, rules, batch,
                      server_batch, full_budget, full_trips)
    label, chips, hosts = systems[name]
    sy = system(s["seconds"], images, chips, hosts, decode_per_core)
    floor = system(s["flops_only_s"], images, chips, hosts, decode_per_core)
    rows.append(dict(accelerator=name, tflops=peak.flops / 1e12, tb_s=peak.bandwidth / 1e12,
                     source=peak.source, edge_batch_s=s["edge_s"] / s["edge_steps"],
                     server_batch_s=s["server_s"] / max(s["server_batches"], 1),
                     per_image_s=s["per_image_s"], chip_sweep_s=s["seconds"], bound=s["bound"],
                     compute_share=s["compute_s"] / s["seconds"], system=label, chips=chips,
                     hosts=hosts, sweep_s=sy["seconds"], **{CPU_COMPILE: compile_s},
                     per_host_images_per_s=sy["per_host_images_per_s"],
                     cores_per_host=sy["cores_per_host"], flops_only_sweep_s=floor["seconds"],
                     flops_only_cores_per_host=floor["cores_per_host"],
                     budget_share={k: v / s["seconds"] for k, v in s["budget_s"].items()},
                     flag=flag))
  return rows


def sweep_compile_s(seconds: dict):
  """Seconds to compile the programs a sweep runs (edge, ceiling, select, every budget step;
  not the chunks, compiled to count their cost) -> their sum, or None when not measured."""
  if not seconds:
    return None
  return sum(v for k, v in seconds.items() if not (isinstance(k, tuple) and k[0] == "chunk"))


def miss_flag(check_rows, shape) -> str:
  """'' when every checked step at `shape` is within MISS of its prediction, else a note."""
  rows = [r for r in check_rows if r["shape"] == shape]
  bad = [r for r in rows if not 1 / MISS <= r["ratio"] <= MISS]
  if not bad:
    return ""
  worst = max(bad, key=lambda r: abs(math.log(r["ratio"])))
  return (f"method misses by >{MISS:g}x on this CPU ({len(bad)} of {len(rows)} {shape} steps; "
          f"worst {worst['step']}: measured/predicted {worst['ratio']:.2f})")


# --- this machine ---------------------------------------------------------------------

def matmul_peak(n: int, repeats: int) -> dict:
  """One n x n float32 matmul in jax, and in torch where installed; the faster is the peak."""
  timed = lambda fn: timing.best_of(fn, repeats, 1, min_seconds=1.0)[0]
  gflop = 2 * n ** 3 / 1e9
  jax_gflops, torch_gflops = gflop / harness.matmul_seconds(n, "float32", timed), None
  try:  # without torch the peak is jax's alone
    import torch
    from sage_jax.measure import torch_reference
    torch_gflops = gflop / timed(torch_reference.matmul(n, "float32", torch.device("cpu")))
  except ImportError:
    pass
  return dict(jax_gflops=jax_gflops, torch_gflops=torch_gflops,
              flops=1e9 * max(v for v in (jax_gflops, torch_gflops) if v))


def bandwidth(mb: int, repeats: int) -> float:
  """Bytes/s of a jitted x + 1 over `mb` MB of float32 (read + write)."""
  x = jnp.zeros(mb * 2 ** 20 // 4, jnp.float32)
  inc = jax.jit(lambda x: x + 1.0)
  seconds = timing.best_of(lambda: inc(x), repeats, 1, min_seconds=1.0)[0]
  return 2 * x.nbytes / seconds


def decode_rate(n_images: int, repeats: int = 3) -> dict:
  """Images/s one core decodes and preprocesses (the rehearsal's JPEGs, the sweep's
  decode_jpeg + deit_eval, tf.data on one thread)."""
  import tensorflow as tf
  from sage_jax.data import preprocess
  from sage_jax.measure import rehearsal
  jpegs = [rehearsal.synthetic_jpeg(i) for i in range(n_images)]
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  ds = tf.data.Dataset.from_tensor_slices(jpegs).map(
      lambda b: preprocess.deit_eval(preprocess.decode_jpeg(b))).with_options(options)
  seconds = timing.best_of(lambda: list(ds), repeats, 1)[0]
  return dict(images_per_s=n_images / seconds, images=n_images, threads=1,
              mean_jpeg_kb=float(np.mean([len(b) for b in jpegs])) / 1e3)


def check_shape(shape, rules, budgets, batch, peak_flops, bw, repeats) -> list:
  """The steps at `shape`, float32, run and timed here against their roofline -> rows."""
  plan = projection_plan(shape, rules, budgets, "float32", batch, batch)
  models = harness.random_models(plan)
  pipe = pipeline.build(plan, models)
  images = harness.synthetic_images(pipe.plan.batch_size, plan.dataset)
  compiled = compile_steps(pipe, models.server, images)
  rows = []
  for name, fn, args, cost, lower_s, compile_s in compiled:
    seconds, out = timing.best_of(functools.partial(fn, *args), repeats, 1, min_seconds=0.25)
    predict, trips = cost, None
    if isinstance(name, tuple) and name[0] == "budget":
      chunk = next(s.cost for s in compiled if s.name == ("chunk", name[1]))
      fresh = int(np.asarray(out[0]["fresh"]).sum())
      trips = math.ceil(fresh / pipe.plan.server_batch_size)
      predict = budget_cost(select_cost(cost, chunk), chunk, trips)
    predicted, bound = roofline(predict, peak_flops, bw)
    label = name if isinstance(name, str) else f"{name[0]} K={name[1]}"
    rows.append(dict(shape=shape, step=label, rows=pipe.plan.batch_size if name == "edge"
                     else pipe.plan.server_batch_size,
                     trips=trips, gflop=predict.flops / 1e9, mb=predict.bytes / 1e6,
                     predicted_s=predicted, measured_s=seconds, ratio=seconds / predicted,
                     bound=bound, **{CPU_COMPILE: lower_s + compile_s}))
  return rows


# --- the command ----------------------------------------------------------------------

class Checked(NamedTuple):
  """The options checked before anything compiles: plans, (dtype, plan) per dtype, the last
  projecting; checks, (shape, rules, budgets, batch) of the CPU check."""
  config: Any
  plans: tuple
  accelerators: dict    # name -> Peak
  images: int
  checks: tuple


def check(config) -> Checked:
  """Every roofline field checked (ValueError naming the bad one) and resolved -> Checked."""
  c = config
  for names, ok, allowed in (
      (("edge_batch", "server_batch", "images", "check_batch", "decode_images", "matmul_size"),
       lambda v: v >= 0, "it must be >= 0 (0: the default)"),
      (("full_trips",), lambda v: v >= 0, "it must be >= 0"),
      (("repeats", "bandwidth_mb"), lambda v: v >= 1, "it must be >= 1"),
      (("share", "dedup"), lambda v: 0 < v <= 1, "it must be in (0, 1]")):
    for name in names:
      if not ok(c[name]):
        raise ValueError(f"{name} {c[name]} is not allowed; {allowed}")
  if c.decode_images == 0 and c.decode_per_core <= 0:
    raise ValueError("decode_per_core must be > 0 when the decode rate is not measured "
                     "(decode_images=0)")
  dtypes, accelerators = harness.items(c.dtypes), harness.items(c.accelerators)
  if not dtypes:
    raise ValueError("dtypes is empty; give float32 and/or bfloat16")
  unknown = [a for a in accelerators if a not in PEAKS]
  if unknown:
    raise ValueError(f"unknown accelerator {unknown[0]!r}; allowed: {', '.join(PEAKS)}")
  plans = tuple((d, projection_plan(c.shape, harness.items(c.sweep_rules),
                                    harness.items(c.sweep_budgets), d, c.edge_batch,
                                    c.server_batch)) for d in dtypes)
  checks = []
  for s in harness.items(c.check_shapes):
    if s not in CHECK:
      raise ValueError(f"unknown check shape {s!r}; allowed: {', '.join(CHECK)}")
    c_rules, c_budgets, c_batch = CHECK[s]
    checked = (s, tuple(harness.items(c.check_rules)) or c_rules,
               tuple(int(k) for k in harness.items(c.check_budgets)) or c_budgets,
               c.check_batch or c_batch)
    projection_plan(*checked[:3], "float32", checked[3], checked[3])  # refuses bad rules now
    checks.append(checked)
  return Checked(c, plans, {a: PEAKS[a] for a in (accelerators or PEAKS)},
                 c.images or harness.shape(c.shape)[2], tuple(checks))


def measure_and_project(c: Checked, log=print) -> dict:
  """Costs, this machine, the CPU check and the projection -> one dict."""
  f = c.config
  out = dict(shape=f.shape, images=c.images, offload_share=f.share, dedup=f.dedup)
  costs, compile_s = {}, {}
  for dtype, plan in c.plans:
    log(f"compiling the {f.shape} steps in {dtype} (edge batch {plan.batch_size}, server "
        f"batch {plan.server_batch_size}, {len(plan.rules)} rules x {len(plan.budgets)} "
        "budgets) ...")
    costs[dtype], compile_s[dtype] = step_costs(plan)
  dtype, plan = c.plans[-1]
  out["plan"] = dict(batch=plan.batch_size, server_batch=plan.server_batch_size,
                     rules=[r.label for r in plan.rules], budgets=list(plan.budgets),
                     dtype=dtype)
  out["costs"] = cost_rows(costs, plan, f.dedup, f.full_trips, compile_s)
  log("measuring this machine: matmul peak, memory bandwidth ...")
  machine = matmul_peak(f.matmul_size or 2048, f.repeats)
  machine["bandwidth"] = bandwidth(f.bandwidth_mb, f.repeats)
  if f.decode_images:
    log(f"timing the decoding of {f.decode_images} synthetic images on one core ...")
    machine["decode"] = decode_rate(f.decode_images)
    machine["decode_per_core"] = machine["decode"]["images_per_s"]
  else:
    machine["decode_per_core"] = f.decode_per_core
  out["machine"] = machine
  out["check"] = []
  for s, rules, budgets, batch in c.checks:
    log(f"CPU check at {s} shapes (batch {batch}, rules {','.join(rules) or 'all'}, "
        f"budgets {','.join(map(str, budgets)) or 'all'}) ...")
    out["check"] += check_shape(s, rules, budgets, batch, machine["flops"],
                                machine["bandwidth"], f.repeats)
  checked_here = any(r["shape"] == f.shape for r in out["check"])
  out["flag"] = (miss_flag(out["check"], f.shape) if checked_here
                 else f"method not checked at {f.shape} shapes in this run")
  out["projection"] = project(costs[dtype], c.accelerators,
                              {a: SYSTEMS[a] for a in c.accelerators}, c.images, f.share,
                              f.dedup, len(plan.rules), plan.batch_size,
                              plan.server_batch_size, machine["decode_per_core"], out["flag"],
                              plan.num_patches, f.full_trips,
                              sweep_compile_s(compile_s[dtype]))
  return out


def cost_rows(costs: dict, plan, dedup: float, full_trips: float = 1.0,
              compile_s=None) -> list:
  """Per step, each dtype's GFLOP and MB per call; budget steps at `trips_by_budget`.
  compile_s: {dtype: `step_costs`' seconds}, each step's program compiled on this CPU (the
  budget step's on its row, none on select+dedup's: it is part of that program)."""
  trips = trips_by_budget(plan.budgets, dedup, len(plan.rules), plan.num_patches, full_trips)

  def row(step, get, program=None):
    r = dict(step=step)
    for dtype, c in costs.items():
      cost = get(c)
      r[f"{dtype}_gflop"], r[f"{dtype}_mb"] = cost.flops / 1e9, cost.bytes / 1e6
      r[f"{dtype}_flop_per_byte"] = cost.flops / max(cost.bytes, 1.0)
      if compile_s is not None:
        r[f"{dtype}_{CPU_COMPILE}"] = compile_s[dtype].get(program)
    return r

  rows = [row(f"edge ({plan.batch_size} images)", lambda c: c["edge"], "edge"),
          row(f"ceiling ({plan.server_batch_size} rows)", lambda c: c["ceiling"], "ceiling")]
  for k in sorted(plan.budgets):
    rows.append(row(f"select+dedup K={k}", lambda c, k=k: c[("select", k)]))
    rows.append(row(f"server chunk K={k} ({plan.server_batch_size} rows)",
                    lambda c, k=k: c[("chunk", k)], ("chunk", k)))
    rows.append(row(f"budget step K={k} ({trips[k]:.2f} chunks)", lambda c, k=k: budget_cost(
        c[("select", k)], c[("chunk", k)], trips[k]), ("budget", k)))
  if all("select" in c for c in costs.values()):  # in each select+dedup row already
    rows.append(row(f"select, every K (one program, {plan.server_batch_size} rows)",
                    lambda c: c["select"], "select"))
  return rows


# --- the measure --------------------------------------------------------------------

def rows(config, workdir, log):
  """The setup and this machine, each step's cost, the CPU check, the projection."""
  del workdir
  result = measure_and_project(check(config), log)
  m, p = result["machine"], result["plan"]
  yield dict(table="setup", shape=result["shape"], images=result["images"],
             offload_share=result["offload_share"], dedup=result["dedup"],
             rules=len(p["rules"]), budgets=",".join(map(str, p["budgets"])),
             edge_batch=p["batch"], server_batch=p["server_batch"], dtype=p["dtype"],
             flag=result["flag"] or "none")
  yield dict(table="this machine", matmul_gflops=m["flops"] / 1e9, jax_gflops=m["jax_gflops"],
             torch_gflops=m["torch_gflops"], bandwidth_gb_s=m["bandwidth"] / 1e9,
             decode_images_per_s_per_core=m["decode_per_core"], decode=m.get("decode"))
  for table in ("costs", "check", "projection"):
    for row in result[table]:
      row = dict(row)
      if "source" in row:  # long: in the JSON, not the table
        row["peak"] = dict(source=row.pop("source"))
      yield dict(table=table, **row)
