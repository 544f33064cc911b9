"""The ImageNet sweep projected onto accelerators by a roofline, the method checked here.

  bash launch/roofline.sh OUTDIR [--edge_batch=256 --server_batch=64 ...]
  python -m sage_jax.roofline [--out=roofline.json --markdown=roofline.md] [flags]

No accelerator has run sage_jax yet; this says what one should do with the paper's sweep
(DeiT-Ti/16 edge -> DeiT-B/16 server, every rule at B = 16..196, 50,000 images) from what
XLA itself says about each compiled step, and checks that way of saying it on this CPU.

1. Cost of every step (`step_costs`): the sweep's own jitted steps (`pipeline.build`,
   random weights from `throughput.random_models`) compiled ahead of time at --edge_batch
   edge rows and --server_batch offloaded rows per chip, in float32 and bfloat16; FLOPs and
   bytes accessed from `compiled.cost_analysis()`. XLA counts the body of a while loop
   once, whatever its trip count: the budget step runs the server inside a fori_loop,
   once per `server_batch` fresh (not de-duplicated) evidence rows, so its cost is taken
   apart as  select = cost(budget step) - cost(one server chunk)  and put back together as
   select + trips * chunk, the chunk (`server.apply` on server_batch rows at K patches)
   compiled on its own. The selection rules' own loops (SAGE's greedy picks, BAT's
   k-means) are counted once too and are left so: a few MFLOP an image against the
   server's GFLOPs, but their bytes are undercounted (see docs/imagenet.md).
2. Roofline (`roofline`): each step takes max(FLOPs / peak FLOP/s, bytes / bandwidth) on
   one chip (PEAKS: dense bf16 and HBM bandwidth per chip, each from its vendor
   document). The sweep (`sweep_seconds`): ceil(images / batch) edge steps; ceil(images x
   offload share / server_batch) server batches, each the ceiling and one budget step per
   budget with trips chunks (`trips_by_budget`: dedup x rules on average, dedup being the
   share of (rule, budget, image) rows the server runs, `server_rows_run /
   server_rows_all` of timing.json; at K = N --full_trips, the rest on the other
   budgets); chips work
   in data parallel (`system`), so a slice of C chips takes 1/C of one chip's time.
   The programs are compiled by XLA:CPU (no accelerator here): the FLOPs are the model's,
   but the bytes are what XLA:CPU's fusions move, and a GPU or TPU compiler fuses more, so
   moves fewer. The FLOPs-only columns (no memory time at all) are the floor; the sweep
   on the accelerator should fall between the two. Left out: compilation, the host, input
   stalls, and the gap between a vendor's peak and what a chip sustains.
3. Input: the images per second each host must decode to keep its chips busy, against
   one CPU core's JPEG decode-and-preprocess rate measured here (`decode_rate`: the
   rehearsal's synthetic ImageNet-sized JPEGs, `rehearsal.synthetic_jpeg`, through the
   sweep's own `preprocess.decode_jpeg` + `deit_eval`, one TensorFlow thread) -> cores
   per host.
4. The check on this CPU (`check_shape`): the same cost analysis at small shapes with
   this machine's matmul peak (`benchmark.matmul_rows`, the faster of jax and torch, as
   the benchmark defines the peak) and memory bandwidth (`bandwidth`: a jitted x + 1 on
   --bandwidth_mb of float32, bytes = read + write) predicts each step's time; the
   measured time is the best of --repeats calls of the compiled step (cheap ones: as many
   as fit in 0.25 s; `benchmark.best_run`). A budget step is predicted with the trips it
   actually ran (its `fresh` rows). When any step at the projection's shape is off by more than 2x
   (measured / predicted outside [1/2, 2]), every projected number carries a flag.
"""
import dataclasses
import functools
import inspect
import json
import math
import sys
import time
from typing import NamedTuple

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import benchmark, pipeline, throughput

FLAGS = flags.FLAGS
flags.DEFINE_string("shape", "deit", "Models of the projection: deit (the paper's) or fmnist.")
# --repeats, --out and --matmul_size are the benchmark's flags (sage_jax.benchmark, imported
# for its timer), with the same meaning; its other flags do not apply here (refused).
flags.DEFINE_integer("edge_batch", 0, "Edge images per step per chip (0: the config's, 256 at "
                     "deit).")
flags.DEFINE_integer("server_batch", 0, "Offloaded images per server step per chip (0: the "
                     "config's, 64 at deit).")
flags.DEFINE_list("sweep_rules", [], "Rules of the projection (default: every rule of the config).")
flags.DEFINE_list("sweep_budgets", [], "Budgets of the projection (default: the "
                  "config's, 16..196 at deit).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Dtypes whose costs are listed; the "
                  "projection uses the last one.")
flags.DEFINE_integer("images", 0, "Images of the sweep (0: the split's, 50,000 at deit).")
flags.DEFINE_float("share", 0.357, "Share of the images offloaded (the paper's 35.7%).")
flags.DEFINE_float("dedup", 214107 / 300960, "Share of the (rule, budget, image) rows the "
                   "server runs (timing.json's server_rows_run / server_rows_all; default: the "
                   "Fashion-MNIST main job's 214,107 of 300,960).")
flags.DEFINE_float("full_trips", 1.0, "Server chunks per server batch at K = N (all "
                   "patches), where fixed-size rules repeat the ceiling (default: the "
                   "Fashion-MNIST main job's one); the other budgets share the rest of dedup.")
flags.DEFINE_list("accelerators", [], "Accelerators of the projection (default: all of PEAKS).")
flags.DEFINE_list("check_shapes", ["fmnist", "deit"], "Shapes of the CPU check ('' for none).")
flags.DEFINE_integer("check_batch", 0, "Edge and server rows of the CPU check (0: per shape, "
                     "fmnist 64, deit 8).")
flags.DEFINE_list("check_rules", [], "Rules of the CPU check (default: per shape, fmnist "
                  "every rule, deit topk,sage,threshold as the rehearsal).")
flags.DEFINE_list("check_budgets", [], "Budgets of the CPU check (default: per shape, fmnist "
                  "every budget, deit 16,64).")
flags.DEFINE_integer("bandwidth_mb", 256, "MB of float32 read (and as much written) by the "
                     "bandwidth measure.")
flags.DEFINE_integer("decode_images", 32, "Synthetic JPEGs whose decode-and-preprocess is "
                     "timed on one core (0: use --decode_per_core).")
flags.DEFINE_float("decode_per_core", 0.0, "Images per second one core decodes and "
                   "preprocesses, when not measured (--decode_images=0).")
flags.DEFINE_string("markdown", None, "Write the tables as markdown here.")


class Peak(NamedTuple):
  """One chip's dense bf16 peak and memory bandwidth, with the document they come from."""
  flops: float       # FLOP/s, dense bf16 (not the 2:4-sparse figure)
  bandwidth: float   # bytes/s, HBM
  source: str


PEAKS = {
    "H100 SXM": Peak(989e12, 3.35e12, "NVIDIA H100 Tensor Core GPU datasheet: SXM5, BF16 "
                     "Tensor Core 1,979 TFLOPS with sparsity (989 dense), 3.35 TB/s HBM3"),
    "H200": Peak(989e12, 4.8e12, "NVIDIA H200 Tensor Core GPU datasheet: SXM, BF16 Tensor "
                 "Core 1,979 TFLOPS with sparsity (989 dense), 4.8 TB/s HBM3e"),
    "A100 SXM 80GB": Peak(312e12, 2.039e12, "NVIDIA A100 Tensor Core GPU datasheet: BF16 "
                          "Tensor Core 312 TFLOPS (624 with sparsity), 80GB SXM 2,039 GB/s"),
    "TPU v4": Peak(275e12, 1.2e12, "Cloud TPU docs, TPU v4: peak compute per chip 275 TFLOPs "
                   "(bf16), HBM2 32 GiB, 1,200 GBps"),
    "TPU v5e": Peak(197e12, 819e9, "Cloud TPU docs, TPU v5e: peak compute per chip 197 TFLOPs "
                    "(bf16), HBM2 16 GB, 819 GBps"),
    "TPU v5p": Peak(459e12, 2765e9, "Cloud TPU docs, TPU v5p: peak compute per chip 459 "
                    "TFLOPs (bf16), HBM2e 95 GB, 2,765 GBps"),
}

# accelerator -> (system, chips, hosts): the machine a researcher would rent. TPU v4 and
# v5p names count TensorCores (2 a chip), v5e names count chips (Cloud TPU docs).
SYSTEMS = {"H100 SXM": ("8x H100 host", 8, 1), "H200": ("8x H200 host", 8, 1),
           "A100 SXM 80GB": ("8x A100 host", 8, 1), "TPU v4": ("v4-32", 16, 4),
           "TPU v5e": ("v5e-8", 8, 1), "TPU v5p": ("v5p-8", 4, 1)}

# The CPU check's defaults per shape: (rules, budgets, batch); empty: the config's.
CHECK = {"fmnist": ((), (), 64), "deit": (("topk", "sage", "threshold"), (16, 64), 8)}
MISS = 2.0  # measured / predicted beyond this factor either way: the method misses


# --- the arithmetic (pure) ------------------------------------------------------------

class Cost(NamedTuple):
  flops: float
  bytes: float


def add(*costs) -> Cost:
  return Cost(sum(c.flops for c in costs), sum(c.bytes for c in costs))


def times(cost: Cost, k: float) -> Cost:
  return Cost(cost.flops * k, cost.bytes * k)


def roofline(cost: Cost, peak_flops: float, bandwidth: float) -> tuple:
  """-> (seconds, "compute" | "memory"): the slower of doing the FLOPs at the peak and
  moving the bytes at the bandwidth; a step can be no faster than either."""
  compute, memory = cost.flops / peak_flops, cost.bytes / bandwidth
  return (compute, "compute") if compute >= memory else (memory, "memory")


def budget_cost(select: Cost, chunk: Cost, trips: float) -> Cost:
  """The budget step with its server loop run `trips` times (XLA counts the body once)."""
  return add(select, times(chunk, trips))


def sweep_calls(images: int, share: float, batch: int, server_batch: int) -> tuple:
  """-> (edge steps, server batches): every batch is padded to its static shape."""
  return math.ceil(images / batch), math.ceil(images * share / server_batch)


def trips_by_budget(budgets, dedup: float, rules: int, full_budget=None,
                    full_trips: float = 1.0) -> dict:
  """Server chunks each budget step runs per server batch: dedup x rules on average (the
  fresh rows over a chunk's rows). At K = N (full_budget) only full_trips: every
  fixed-size rule sends the ceiling's set there and the threshold rules their saturated
  sets of the budget before (the Fashion-MNIST main job ran one chunk a server batch at
  K = 49); the other budgets share the rest, at most `rules` chunks each."""
  if full_budget not in budgets or len(budgets) == 1:
    return {k: dedup * rules for k in budgets}
  total = dedup * rules * len(budgets)
  full = min(full_trips, total)
  rest = min((total - full) / (len(budgets) - 1), rules)
  return {k: full if k == full_budget else rest for k in budgets}


def sweep_seconds(costs: dict, peak_flops, bandwidth, images, share, dedup, rules, batch,
                  server_batch, full_budget=None, full_trips=1.0) -> dict:
  """One chip's seconds for the sweep, step by step at the roofline.

  costs: "edge", "ceiling", and per budget k ("select", k) and ("chunk", k). Each budget
  step runs `trips_by_budget` server chunks. -> dict(seconds, compute_s, memory_s (time
  in steps bound by each), edge_s,
  server_s, per_image_s, bound, flops_only_s: the FLOPs alone at the peak, the floor;
  budget_s: each budget step's seconds)."""
  edge_calls, server_batches = sweep_calls(images, share, batch, server_batch)
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
  """One chip's sweep seconds -> the slice's (chips in data parallel), and the images per
  second each host must decode to keep its chips busy -> cores per host."""
  seconds = chip_seconds / chips
  per_host = images / seconds / hosts
  return dict(seconds=seconds, images_per_s=images / seconds, per_host_images_per_s=per_host,
              cores_per_host=per_host / decode_per_core if decode_per_core else None)


def project(costs, peaks, systems, images, share, dedup, rules, batch, server_batch,
            decode_per_core, flag="", full_budget=None, full_trips=1.0) -> list:
  """Per accelerator: the chip's roofline seconds per edge batch, per server batch, per
  image and for the sweep, and its system's wall time and cores per host -> rows; the
  same at the FLOPs alone (flops_only_*: no memory time, the fastest the sweep can go)."""
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
                     hosts=hosts, sweep_s=sy["seconds"],
                     per_host_images_per_s=sy["per_host_images_per_s"],
                     cores_per_host=sy["cores_per_host"], flops_only_sweep_s=floor["seconds"],
                     flops_only_cores_per_host=floor["cores_per_host"],
                     budget_share={k: v / s["seconds"] for k, v in s["budget_s"].items()},
                     flag=flag))
  return rows


def miss_flag(check_rows, shape) -> str:
  """'' when every checked step at `shape` is within MISS of its prediction, else a note
  naming the worst."""
  rows = [r for r in check_rows if r["shape"] == shape]
  bad = [r for r in rows if not 1 / MISS <= r["ratio"] <= MISS]
  if not bad:
    return ""
  worst = max(bad, key=lambda r: abs(math.log(r["ratio"])))
  return (f"method misses by >{MISS:g}x on this CPU ({len(bad)} of {len(rows)} {shape} steps; "
          f"worst {worst['step']}: measured/predicted {worst['ratio']:.2f})")


# --- costs from XLA -------------------------------------------------------------------

def cost_of(compiled) -> Cost:
  """compiled.cost_analysis() (a dict, or a list of one dict per program) -> Cost."""
  ca = compiled.cost_analysis()
  ca = ca if isinstance(ca, dict) else ca[0]
  return Cost(float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0)))


def projection_plan(shape, rules=(), budgets=(), dtype="float32", batch=0, server_batch=0):
  """The shape's sweep config (every rule and budget unless given) -> its plan, with the
  per-chip batch sizes."""
  config = benchmark.SHAPES[shape][0]() if shape in benchmark.SHAPES else None
  if config is None:
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(benchmark.SHAPES)}")
  plan = benchmark.shape_plan(shape, rules or config.rules.split(","),
                              budgets or [int(k) for k in config.budgets.split(",")], dtype)
  return dataclasses.replace(plan, batch_size=batch or plan.batch_size,
                             server_batch_size=server_batch or plan.server_batch_size)


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
    compiled = benchmark.aot(fn, *args, *static)[0]
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
  models = models or throughput.random_models(plan)
  pipe = pipeline.build(plan, models)
  ds = plan.dataset
  images = jax.ShapeDtypeStruct((pipe.plan.batch_size, ds.image_size, ds.image_size,
                                 ds.channels), jnp.float32)
  return costs_by_step(compile_steps(pipe, models.server, images))


# --- this machine ---------------------------------------------------------------------

def matmul_peak(n: int, repeats: int) -> dict:
  """The benchmark's peak row (one n x n float32 matmul, jax and torch) -> FLOP/s."""
  import torch
  row = benchmark.matmul_rows(n, "float32", repeats, 1, torch.device("cpu"))[0]
  return dict(jax_gflops=row["jax"], torch_gflops=row["torch"],
              flops=1e9 * max(v for v in (row["jax"], row["torch"]) if v))


def bandwidth(mb: int, repeats: int) -> float:
  """Bytes/s of a jitted x + 1 over `mb` MB of float32 (read + write)."""
  x = jnp.zeros(mb * 2 ** 20 // 4, jnp.float32)
  inc = jax.jit(lambda x: x + 1.0)
  seconds = benchmark.best_time(lambda: inc(x), repeats, 1, min_seconds=1.0)
  return 2 * x.nbytes / seconds


def decode_rate(n_images: int, repeats: int = 3) -> dict:
  """Images/s one core decodes and preprocesses: the rehearsal's synthetic ImageNet-sized
  JPEGs through the sweep's decode_jpeg + deit_eval in a tf.data map, as the sweep reads
  them, on a private pool of one thread with one thread per op (no global TF setting)."""
  import tensorflow as tf
  from sage_jax import preprocess, rehearsal
  jpegs = [rehearsal.synthetic_jpeg(i) for i in range(n_images)]
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  ds = tf.data.Dataset.from_tensor_slices(jpegs).map(
      lambda b: preprocess.deit_eval(preprocess.decode_jpeg(b))).with_options(options)

  def all_images():
    for _ in ds:
      pass

  seconds = benchmark.best_time(all_images, repeats, 1, min_seconds=0.0)
  return dict(images_per_s=n_images / seconds, images=n_images, threads=1,
              mean_jpeg_kb=float(np.mean([len(b) for b in jpegs])) / 1e3)


def check_shape(shape, rules, budgets, batch, peak_flops, bw, repeats) -> list:
  """The steps at `shape`, float32, run and timed here against their roofline -> rows."""
  plan = projection_plan(shape, rules, budgets, "float32", batch, batch)
  models = throughput.random_models(plan)
  pipe = pipeline.build(plan, models)
  images = throughput.synthetic_batches(pipe.plan.batch_size, pipe.plan.batch_size,
                                        plan.dataset)[0]["image"]
  compiled = compile_steps(pipe, models.server, images)
  rows = []
  for name, fn, args, cost in compiled:
    seconds, out = benchmark.best_run(functools.partial(fn, *args), repeats, 1)
    predict, trips = cost, None
    if isinstance(name, tuple) and name[0] == "budget":
      chunk = next(c for n, _, _, c in compiled if n == ("chunk", name[1]))
      fresh = int(np.asarray(out[0]["fresh"]).sum())
      trips = math.ceil(fresh / pipe.plan.server_batch_size)
      predict = budget_cost(select_cost(cost, chunk), chunk, trips)
    predicted, bound = roofline(predict, peak_flops, bw)
    label = name if isinstance(name, str) else f"{name[0]} K={name[1]}"
    rows.append(dict(shape=shape, step=label, rows=pipe.plan.batch_size if name == "edge"
                     else pipe.plan.server_batch_size,
                     trips=trips, gflop=predict.flops / 1e9, mb=predict.bytes / 1e6,
                     predicted_s=predicted, measured_s=seconds, ratio=seconds / predicted,
                     bound=bound))
  return rows


# --- the command ----------------------------------------------------------------------

class Checked(NamedTuple):
  """The options resolved and checked (`check`) before anything compiles."""
  shape: str
  plans: tuple          # (dtype, plan) of the projection, per dtype; the last one projects
  accelerators: dict    # name -> Peak
  images: int
  share: float
  dedup: float
  full_trips: float     # server chunks per server batch of the K = N budget step
  checks: tuple         # (shape, rules, budgets, batch) of the CPU check
  repeats: int
  matmul_size: int
  bandwidth_mb: int
  decode_images: int
  decode_per_core: float


def check(shape="deit", edge_batch=0, server_batch=0, sweep_rules=(), sweep_budgets=(),
          dtypes=("float32", "bfloat16"), images=0, share=0.357, dedup=214107 / 300960,
          full_trips=1.0, accelerators=(), check_shapes=("fmnist", "deit"), check_batch=0,
          check_rules=(), check_budgets=(), repeats=3, matmul_size=0, bandwidth_mb=256,
          decode_images=32, decode_per_core=0.0, **_) -> Checked:
  """Every option checked (ValueError naming the bad one) and resolved -> Checked."""
  for name, value in (("edge_batch", edge_batch), ("server_batch", server_batch),
                      ("images", images), ("check_batch", check_batch),
                      ("decode_images", decode_images), ("matmul_size", matmul_size)):
    if value < 0:
      raise ValueError(f"{name} {value} is not allowed; it must be >= 0 (0: the default)")
  for name, value in (("repeats", repeats), ("bandwidth_mb", bandwidth_mb)):
    if value < 1:
      raise ValueError(f"{name} {value} is not allowed; it must be >= 1")
  for name, value in (("share", share), ("dedup", dedup)):
    if not 0 < value <= 1:
      raise ValueError(f"{name} {value} is not allowed; it must be in (0, 1]")
  if full_trips < 0:
    raise ValueError(f"full_trips {full_trips} is not allowed; it must be >= 0")
  if decode_images == 0 and decode_per_core <= 0:
    raise ValueError("decode_per_core must be > 0 when the decode rate is not measured "
                     "(--decode_images=0)")
  if not dtypes:
    raise ValueError("dtypes is empty; give float32 and/or bfloat16")
  for d in dtypes:
    if d not in pipeline.DTYPES:
      raise ValueError(f"unknown dtype {d!r}; allowed: {', '.join(pipeline.DTYPES)}")
  unknown = [a for a in accelerators if a not in PEAKS]
  if unknown:
    raise ValueError(f"unknown accelerator {unknown[0]!r}; allowed: {', '.join(PEAKS)}")
  for s in check_shapes:
    if s not in CHECK:
      raise ValueError(f"unknown check shape {s!r}; allowed: {', '.join(CHECK)}")
  plans = tuple((d, projection_plan(shape, sweep_rules, [int(k) for k in sweep_budgets], d,
                                    edge_batch, server_batch)) for d in dtypes)
  checks = []
  for s in check_shapes:
    c_rules, c_budgets, c_batch = CHECK[s]
    c = (s, tuple(check_rules) or c_rules, tuple(int(k) for k in check_budgets) or c_budgets,
         check_batch or c_batch)
    projection_plan(*c[:3], "float32", c[3], c[3])  # refuses bad rules / budgets now
    checks.append(c)
  return Checked(shape, plans, {a: PEAKS[a] for a in (accelerators or PEAKS)},
                 images or benchmark.SHAPES[shape][2], share, dedup, full_trips,
                 tuple(checks), repeats,
                 matmul_size or 2048, bandwidth_mb, decode_images, decode_per_core)


def run(c: Checked, log=print) -> dict:
  """Costs, this machine's measures, the CPU check and the projection -> one dict."""
  out = dict(shape=c.shape, images=c.images, offload_share=c.share, dedup=c.dedup)
  costs = {}
  for dtype, plan in c.plans:
    log(f"compiling the {c.shape} steps in {dtype} (edge batch {plan.batch_size}, server "
        f"batch {plan.server_batch_size}, {len(plan.rules)} rules x {len(plan.budgets)} "
        "budgets) ...")
    costs[dtype] = step_costs(plan)
  dtype, plan = c.plans[-1]
  out["plan"] = dict(batch=plan.batch_size, server_batch=plan.server_batch_size,
                     rules=[r.label for r in plan.rules], budgets=list(plan.budgets),
                     dtype=dtype)
  out["costs"] = cost_rows(costs, plan, c.dedup, c.full_trips)
  log("measuring this machine: matmul peak, memory bandwidth ...")
  machine = matmul_peak(c.matmul_size, c.repeats)
  machine["bandwidth"] = bandwidth(c.bandwidth_mb, c.repeats)
  if c.decode_images:
    log(f"timing JPEG decode + preprocess of {c.decode_images} synthetic images on one "
        "core ...")
    machine["decode"] = decode_rate(c.decode_images)
    machine["decode_per_core"] = machine["decode"]["images_per_s"]
  else:
    machine["decode_per_core"] = c.decode_per_core
  out["machine"] = machine
  out["check"] = []
  for s, rules, budgets, batch in c.checks:
    log(f"CPU check at {s} shapes (batch {batch}, rules {','.join(rules) or 'all'}, "
        f"budgets {','.join(map(str, budgets)) or 'all'}) ...")
    out["check"] += check_shape(s, rules, budgets, batch, machine["flops"],
                                machine["bandwidth"], c.repeats)
  checked_here = any(r["shape"] == c.shape for r in out["check"])
  out["flag"] = (miss_flag(out["check"], c.shape) if checked_here
                 else f"method not checked at {c.shape} shapes in this run")
  out["projection"] = project(costs[dtype], c.accelerators,
                              {a: SYSTEMS[a] for a in c.accelerators}, c.images, c.share,
                              c.dedup, len(plan.rules), plan.batch_size,
                              plan.server_batch_size, machine["decode_per_core"], out["flag"],
                              plan.num_patches, c.full_trips)
  return out


def cost_rows(costs: dict, plan, dedup: float, full_trips: float = 1.0) -> list:
  """Per step, each dtype's GFLOP and MB (per call at the plan's batches); budget steps at
  their expected trips (`trips_by_budget`)."""
  trips = trips_by_budget(plan.budgets, dedup, len(plan.rules), plan.num_patches, full_trips)
  rows = []

  def row(step, get):
    r = dict(step=step)
    for dtype, c in costs.items():
      cost = get(c)
      r[f"{dtype}_gflop"], r[f"{dtype}_mb"] = cost.flops / 1e9, cost.bytes / 1e6
      r[f"{dtype}_flop_per_byte"] = cost.flops / max(cost.bytes, 1.0)
    return r

  rows.append(row(f"edge ({plan.batch_size} images)", lambda c: c["edge"]))
  rows.append(row(f"ceiling ({plan.server_batch_size} rows)", lambda c: c["ceiling"]))
  for k in sorted(plan.budgets):
    rows.append(row(f"select+dedup K={k}", lambda c, k=k: c[("select", k)]))
    rows.append(row(f"server chunk K={k} ({plan.server_batch_size} rows)",
                    lambda c, k=k: c[("chunk", k)]))
    rows.append(row(f"budget step K={k} ({trips[k]:.2f} chunks)", lambda c, k=k: budget_cost(
        c[("select", k)], c[("chunk", k)], trips[k])))
  return rows


# --- tables ---------------------------------------------------------------------------

def _hms(seconds: float) -> str:
  if seconds >= 3600:
    return f"{seconds / 3600:.2f} h"
  return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.2f} s"


def tables(result: dict) -> dict:
  """The three tables as (header, rows of strings) -> {"costs", "check", "projection"}."""
  dtypes = [k[:-6] for k in result["costs"][0] if k.endswith("_gflop")]
  cost_head = ["step"] + [f"{d} {u}" for d in dtypes for u in ("GFLOP", "MB", "FLOP/B")]
  cost_rows_ = [[r["step"]] + [f"{r[f'{d}_{u}']:.3f}" if u != "flop_per_byte" else
                               f"{r[f'{d}_{u}']:.1f}"
                               for d in dtypes for u in ("gflop", "mb", "flop_per_byte")]
                for r in result["costs"]]
  check_head = ["shape", "step", "rows", "trips", "GFLOP", "MB", "predicted ms", "measured ms",
                "measured/predicted", "bound"]
  check_rows = [[r["shape"], r["step"], str(r["rows"]), "" if r["trips"] is None else
                 str(r["trips"]), f"{r['gflop']:.3f}", f"{r['mb']:.1f}",
                 f"{1e3 * r['predicted_s']:.2f}", f"{1e3 * r['measured_s']:.2f}",
                 f"{r['ratio']:.3g}" + ("" if 1 / MISS <= r["ratio"] <= MISS else " (>2x)"),
                 r["bound"]] for r in result["check"]]
  proj_head = ["accelerator", "bf16 TFLOP/s", "TB/s", "edge batch ms", "server batch ms",
               "ms/image/chip", "sweep, 1 chip", "bound (compute share)", "system",
               "sweep on system", "img/s/host to decode", "cores/host",
               "FLOPs only: sweep on system", "FLOPs only: cores/host", "flag"]
  proj_rows = [[r["accelerator"], f"{r['tflops']:.0f}", f"{r['tb_s']:.3g}",
                f"{1e3 * r['edge_batch_s']:.3g}", f"{1e3 * r['server_batch_s']:.3g}",
                f"{1e3 * r['per_image_s']:.3f}", _hms(r["chip_sweep_s"]),
                f"{r['bound']} ({r['compute_share']:.0%})", r["system"], _hms(r["sweep_s"]),
                f"{r['per_host_images_per_s']:.0f}",
                "" if r["cores_per_host"] is None else f"{r['cores_per_host']:.0f}",
                _hms(r["flops_only_sweep_s"]), "" if r["flops_only_cores_per_host"] is None
                else f"{r['flops_only_cores_per_host']:.0f}",
                r["flag"] or "-"] for r in result["projection"]]
  return dict(costs=(cost_head, cost_rows_), check=(check_head, check_rows),
              projection=(proj_head, proj_rows))


def text_table(head, rows) -> str:
  widths = [max(len(x) for x in col) for col in zip(head, *rows)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(head, rows) -> str:
  out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
  return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def summary(result: dict) -> str:
  m, p = result["machine"], result["plan"]
  decode = m.get("decode", {})
  return (f"this CPU: matmul peak {m['flops'] / 1e9:.1f} GFLOP/s (jax {m['jax_gflops']:.1f}, "
          f"torch {m['torch_gflops'] or 0:.1f}), memory bandwidth {m['bandwidth'] / 1e9:.1f} "
          f"GB/s, JPEG decode + preprocess {m['decode_per_core']:.1f} images/s per core"
          + (f" ({decode['images']} synthetic JPEGs of {decode['mean_jpeg_kb']:.0f} KB mean, "
             "one thread)" if decode else " (given)") + "\n"
          f"projection: {result['shape']}, {result['images']:,} images, offload share "
          f"{result['offload_share']:.3f}, server rows run (dedup) {result['dedup']:.4f}, "
          f"{len(p['rules'])} rules x budgets {p['budgets']}, per-chip batches {p['batch']} "
          f"edge / {p['server_batch']} server, {p['dtype']}; flag: {result['flag'] or 'none'}")


def report(result: dict, markdown: bool = False) -> str:
  fmt = markdown_table if markdown else text_table
  t = tables(result)
  return "\n\n".join([summary(result), "Cost of each step (XLA cost analysis, per call):",
                      fmt(*t["costs"]), "CPU check (float32, this machine's peak and "
                      "bandwidth):", fmt(*t["check"]), "Projection (roofline, per chip and "
                      "per system):", fmt(*t["projection"])]) + "\n"


# The benchmark's flags that mean nothing here (its module defines them on import).
FOREIGN = ("batch", "rules", "budgets", "offload_share", "shapes", "compute_dtype", "warmup",
           "min_seconds", "torch_threads", "torch_device", "scale_images", "scale_shape",
           "scale_rules", "scale_budgets", "scale_share", "scale_server_batch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  t0 = time.perf_counter()
  options = {name: FLAGS[name].value for name in inspect.signature(check).parameters
             if name in FLAGS}
  try:
    given = [name for name in FOREIGN if FLAGS[name].present]
    if given:
      raise ValueError(f"--{given[0]} is sage_jax.benchmark's flag, not this command's; see "
                       "--edge_batch, --server_batch, --sweep_rules, --sweep_budgets, --share")
    checked = check(**options)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr,
                          flush=True)
  result = run(checked, log)
  result["total_seconds"] = time.perf_counter() - t0
  result["devices"] = [str(d) for d in jax.devices()]
  print(report(result))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=1, default=str)
  if FLAGS.markdown:
    with open(FLAGS.markdown, "w") as f:
      f.write(report(result, markdown=True))
  print(f"total {result['total_seconds']:.0f} s")


if __name__ == "__main__":
  app.run(main, flags_parser=benchmark.parse_flags)
