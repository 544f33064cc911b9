"""Throughput benchmark: sage_jax's jitted pipeline against a PyTorch eager reference.

  python -m sage_jax.benchmark --shapes=fmnist,deit --batch=64 --repeats=2 [--out=bench.json]
  python -m sage_jax.benchmark --shapes=deit --batch=256 --compute_dtype=bfloat16  # a GPU

Random weights at two shapes: the Fashion-MNIST default (fm-edge -> fm-server, 28 px, 1
channel, 10 classes, N = 49) and the paper's DeiT-Ti/16 -> DeiT-B/16 (224 px, 3 channels,
1000 classes, N = 196). The rule knobs (pool ratio, deltas) come from the shape's config.

sage_jax side: the sweep's own pipeline (`pipeline.build`: its edge, ceiling and budget
steps; `selection.select_batch`), compiled ahead of time (`.lower().compile()`; that time is
the compile row). The reference (`sage_jax/torch_reference.py`) is written the way a PyTorch
user would: an eager timm-style ViT with the same weights, PyTorch's fused
scaled_dot_product_attention wherever no attention map is needed, batched top-k and
farthest-point sampling, and a per-image loop for the variable-length threshold rules.

Devices: when jax runs on a GPU, the reference runs on that GPU too (--torch_device=auto:
CUDA tensors, weights and inputs moved there before any timing), under bf16 autocast when
sage_jax computes in bf16 (--compute_dtype=bfloat16). On a CPU both run on the CPU. (On a
TPU torch stays on the CPU: the ratios then compare different devices, and a line says so.)

Every time is the best of at least --repeats calls (cheap calls: as many as fit in
--min_seconds) after --warmup untimed calls; jax results are waited for with
block_until_ready, and torch.cuda.synchronize() runs before the clock starts and before it
stops (torch_reference.sync; on the CPU torch is synchronous). The sweeps are long and every
piece of them has run before, so they get no warm-up call: the first run of sage_jax's
compiled sweep steps counts against sage_jax. Ratios are sage_jax / torch in throughput:
> 1 is sage_jax faster.

FLOPs per image of a forward (`vit.forward_flops`), multiply-adds counted as 2, elementwise
work (LayerNorm, softmax, GELU) ignored; T = kept patches + 1 (CLS), D width, M MLP width,
L depth, N patches of P = patch*patch*channels values, C classes:
  2*N*P*D                      patch embedding (both implementations embed all N patches)
  + L * (2*T*(4*D^2 + 2*D*M)   qkv, attention projection, MLP
         + 4*T^2*D)            q k^T and attn v
  + 2*D*C                      head
The machine's peak is one large matmul (2*n^3 FLOPs), the faster of jax and torch: float32
2048 x 2048 on a CPU, bfloat16 8192 x 8192 on an accelerator (--matmul_size). Every forward
row gives its achieved FLOP/s as a share of that peak (%peak: the model FLOPs utilisation).

Full sweep, on one batch with the offload share fixed (the ceil(share*batch) least confident
images by min-entropy, so both sides do identical work); both give every (rule, budget)
prediction and the all-patch ceiling:
  sage_jax:  edge once; the offloaded rows gathered; the ceiling, then per budget one jitted
             step that selects with every rule and runs the server once over the evidence
             sets it has not seen yet for that image (`pipeline.run_budgets`, the sweep's code);
  reference: for each (rule, budget): edge on the batch again, select, server on the
             offloaded images only (per image for the threshold rules); then one more pass
             for the ceiling.
The "server rows run" row counts the (rule, budget, image) rows sage_jax's server ran on,
against all of them (the reference runs every one).
The threshold rules' row: sage_jax's sweep over those rules alone (ceiling included)
against their share of the reference's full sweep plus its ceiling pass.

Sweep at scale (`sage_jax/throughput.py`; --scale_images, 0 skips it): the sweep's own
pipeline (`pipeline.build` + `pipeline.evaluate`) on synthetic in-memory images at the
--scale_shape's models (DeiT-Ti/16 -> B/16, 224 px, random weights), every rule of its config
at every budget of it (16..196 at DeiT), --scale_share of the images offloaded (the paper's
35.7%, the threshold calibrated on the images' uncertainties). Compilation is excluded: a
warm-up run over the first edge batch compiles every step first (its time is its own row).
Rows: images per second, and the projected time of the whole evaluation split (50,000
ImageNet validation images; 10,000 at Fashion-MNIST) at that rate: compute only, no data
loading or report. It runs right after the peak row (so a run cut short by a time limit
still has it; --out is rewritten after every part) but its rows come last.
"""
import dataclasses
import importlib.metadata
import inspect
import json
import math
import platform
import sys
import time
from typing import NamedTuple

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import torch

from sage_jax import compile_cache, defaults, pipeline, selection, throughput, torch_reference, vit
from sage_jax import plan as plan_lib
from sage_jax.torch_reference import (THRESHOLD_RULES, TORCH_RULES, TorchViT, torch_edge,
                                      torch_select, torch_sweep)

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["fmnist", "deit"], "Shapes to run: fmnist, deit.")
flags.DEFINE_integer("batch", 64, "Images per edge / server / selection call.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (the best is reported).")
flags.DEFINE_integer("warmup", 1, "Untimed calls before timing.")
flags.DEFINE_float("min_seconds", 0.25, "Cheap calls are timed again until this much time "
                   "has passed (the best call counts).")
flags.DEFINE_list("budgets", [], "Budgets K for every shape (default: per shape, "
                  "fmnist 4..49 as the default sweep, deit 16,32,48,64,96).")
flags.DEFINE_list("rules", ["topk", "sage", "diversity", "threshold", "sum_threshold"],
                  "Rules (those with a torch reference).")
flags.DEFINE_float("offload_share", 1 / 3, "Share of the batch offloaded in the full sweep.")
flags.DEFINE_integer("matmul_size", 0, "n of the n x n matmul measuring the peak (0: 8192 "
                     "in bfloat16 on an accelerator, 2048 in float32 on a CPU).")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
flags.DEFINE_string("torch_device", "auto", "The reference's device: auto (CUDA when jax runs "
                    "on a GPU), cpu or cuda.")
flags.DEFINE_string("out", None, "Also write the rows as JSON here (rewritten after each part, "
                    "so a run cut short leaves the rows measured so far).")
flags.DEFINE_enum("compute_dtype", "float32", list(pipeline.DTYPES),
                  "sage_jax activations (bfloat16 for accelerators); torch autocasts likewise.")
flags.DEFINE_integer("scale_images", -1, "Synthetic images of the sweep at scale (-1: 4096 on "
                     "an accelerator, 16 on a CPU; 0: no sweep at scale).")
flags.DEFINE_string("scale_shape", "deit", "Models of the sweep at scale: fmnist or deit.")
flags.DEFINE_list("scale_rules", [], "Rules of the sweep at scale (default: every rule of the "
                  "shape's config).")
flags.DEFINE_list("scale_budgets", [], "Budgets of the sweep at scale (default: the shape's "
                  "config's, 16..196 at deit).")
flags.DEFINE_float("scale_share", 0.357, "Share of the images the sweep at scale offloads "
                   "(the paper's 35.7%).")
flags.DEFINE_integer("scale_server_batch", 0, "Offloaded images per server step of the sweep "
                     "at scale (0: the config's, 64 at deit).")

# shape -> (config, default budgets, images of the evaluation split)
SHAPES = {"fmnist": (defaults.sweep_config, (4, 6, 8, 12, 16, 24, 32, 49), 10_000),
          "deit": (defaults.imagenet_deit, (16, 32, 48, 64, 96), 50_000)}


def best_run(fn, repeats, warmup, min_seconds=0.25, max_calls=200):
  """-> (seconds, output) of the fastest timed call of fn() after `warmup` untimed calls.

  At least `repeats` calls are timed, and cheap calls are repeated until `min_seconds` have
  passed (at most `max_calls`): on shared cores a single short call is often preempted.
  jax outputs are waited for (block_until_ready), and torch's CUDA queue is drained before
  the clock starts and before it stops (a no-op when torch never used CUDA).
  """
  sync = torch_reference.sync
  for _ in range(warmup):
    jax.block_until_ready(fn())
    sync()
  best, total, calls = (math.inf, None), 0.0, 0
  while calls < max(1, repeats) or (total < min_seconds and calls < max_calls):
    sync()
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    sync()
    seconds = time.perf_counter() - t0
    best, total, calls = min(best, (seconds, out), key=lambda x: x[0]), total + seconds, calls + 1
  return best


def best_time(fn, repeats, warmup, min_seconds=0.25):
  return best_run(fn, repeats, warmup, min_seconds)[0]


def aot(jitted, *args):
  """-> (compiled, seconds spent tracing, lowering and compiling). The persistent
  compilation cache is bypassed here, so the compile rows time compilation itself."""
  with compile_cache.bypassed():
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


# --- the sage_jax side -------------------------------------------------------------------

def jax_sweep(pipe, images, n_off):
  """The sweep's structure (`pipeline.evaluate` on one batch), the ceiling included: each
  distinct evidence set of an image goes through the server once."""
  out = jax.device_get(pipe.steps.edge(pipe.edge_params, pipe.put(images)))
  off = np.argsort(-out["uncertainty"], kind="stable")[:n_off]
  batch = pipe.put(dict(image=images[off], index=off.astype(np.int32),
                        importance={k: v[off] for k, v in out["importance"].items()},
                        tokens=out["tokens"][off], valid=np.ones(n_off, bool)))
  return jax.device_get(pipeline.run_budgets(pipe.steps, pipe.server_params, batch,
                                             pipe.plan.budgets))


def _shape(shape: str):
  if shape not in SHAPES:
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
  return SHAPES[shape]


def shape_plan(shape: str, rules, budgets, compute_dtype="float32"):
  """The shape's sweep config with these rules and budgets -> its checked plan."""
  config, default_budgets, _ = _shape(shape)
  config = config()
  config.rules = ",".join(rules)
  config.budgets = ",".join(str(k) for k in (budgets or default_budgets))
  config.compute_dtype = compute_dtype
  return plan_lib.make(config)


def _row(shape, name, unit, jax_value, torch_value=None, **extra):
  """One table row; ratio = sage_jax / torch for throughputs (higher is better for sage_jax)."""
  ratio = jax_value / torch_value if torch_value and unit in ("img/s", "GFLOP/s") else None
  return dict(shape=shape, name=name, unit=unit, jax=jax_value, torch=torch_value,
              ratio=ratio, **extra)


def matmul_rows(n, dtype, repeats, warmup, device):
  """Machine peak: one n x n matmul in `dtype` in jax (its default device) and in torch (on
  `device`; skipped when that is a CPU while jax runs elsewhere) -> rows (GFLOP/s)."""
  ja, jb = jax.random.normal(jax.random.PRNGKey(0), (2, n, n), pipeline.DTYPES[dtype])
  mm = jax.jit(jnp.matmul)
  gflop = 2 * n ** 3 / 1e9
  t_jax = best_time(lambda: mm(ja, jb), repeats, max(1, warmup), min_seconds=1.0)
  t_torch = None
  if (device.type == "cpu") == (jax.default_backend() == "cpu"):
    t_torch = best_time(torch_reference.matmul(n, dtype, device), repeats, max(1, warmup),
                        min_seconds=1.0)
  name = f"matmul {dict(float32='fp32', bfloat16='bf16')[dtype]} {n}x{n}"
  return [_row("machine", name, "GFLOP/s", gflop / t_jax, t_torch and gflop / t_torch)]


def _forward_row(shape, name, model, kept, channels, batch, t_jax, t_torch, peak):
  flops = vit.forward_flops(model, kept, channels)
  jax_gflops, torch_gflops = flops * batch / t_jax / 1e9, flops * batch / t_torch / 1e9
  return _row(shape, name, "img/s", batch / t_jax, batch / t_torch,
              gflop_per_image=flops / 1e9, jax_gflops=jax_gflops, torch_gflops=torch_gflops,
              jax_peak_frac=jax_gflops / peak, torch_peak_frac=torch_gflops / peak)


class Setup(NamedTuple):
  """One shape's random-weight models (sage_jax pipeline and torch twins) and inputs."""
  pipe: pipeline.Pipeline   # the sweep's pipeline on these models (batch sizes fitted)
  edge: vit.ViT
  server: vit.ViT
  torch_models: tuple       # (edge, server) TorchViT, on `device`
  images: np.ndarray        # f32[B, H, W, C]
  images_t: torch.Tensor    # f32[B, C, H, W], on `device`
  device: torch.device      # the reference's


def make_setup(plan, batch, device=torch.device("cpu")) -> Setup:
  ds = plan.dataset
  models = throughput.random_models(plan)
  edge, edge_params, server, server_params = models
  torch_models = (TorchViT(edge, edge_params, ds.channels, device),
                  TorchViT(server, server_params, ds.channels, device))
  pipe = pipeline.build(plan, models)
  ndev = jax.local_device_count()
  images = np.random.default_rng(1).standard_normal(
      (-(-batch // ndev) * ndev, ds.image_size, ds.image_size, ds.channels), np.float32)
  return Setup(pipe, edge, server, torch_models, images,
               torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device), device)


def forward_rows(su, shape, timed, peak):
  """Edge and server forwards -> (rows, compile rows, edge outputs, server times)."""
  pipe, (t_edge, t_server) = su.pipe, su.torch_models
  batch, channels = len(su.images), pipe.plan.dataset.channels
  images = pipe.put(su.images)
  edge_step, secs = aot(pipe.steps.edge, pipe.edge_params, images)
  compiles = [_row(shape, "compile edge step", "s", secs)]
  rows = [_forward_row(shape, "edge forward", su.edge, su.edge.num_patches, channels, batch,
                       timed(lambda: edge_step(pipe.edge_params, images)),
                       timed(lambda: torch_edge(t_edge, su.images_t)), peak)]
  edge_out = edge_step(pipe.edge_params, images)
  server_fwd = jax.jit(lambda p, x, idx: su.server.apply({"params": p}, x, idx)[0])
  server_time = {}
  for k in pipe.plan.budgets:
    keep = pipe.put(jax.lax.top_k(edge_out["importance"][pipe.plan.importance], k)[1])
    keep_t = torch.from_numpy(np.array(keep)).long().to(su.device)
    fwd, secs = aot(server_fwd, pipe.server_params, images, keep)
    compiles.append(_row(shape, f"compile server K={k}", "s", secs))
    server_time[k] = (timed(lambda: fwd(pipe.server_params, images, keep)),
                      timed(lambda: t_server(su.images_t, keep_t)))
    rows.append(_forward_row(shape, f"server forward K={k}", su.server, k, channels, batch,
                             *server_time[k], peak))
  return rows, compiles, edge_out, server_time


def selection_rows(su, shape, edge_out, server_time, timed):
  """Each rule at each budget on the edge's outputs; SAGE's share of the server forward."""
  plan = su.pipe.plan
  tokens, index = edge_out["tokens"], su.pipe.put(np.arange(len(su.images), dtype=np.int32))
  tokens_t = torch.from_numpy(np.array(tokens)).to(su.device)
  rows = []
  for rule in plan.rules:
    imp = edge_out["importance"][rule.importance]
    imp_t = torch.from_numpy(np.array(imp)).to(su.device)
    for k in plan.budgets:
      select, _ = aot(jax.jit(lambda i, e, x, k=k: selection.select_batch(
          rule.name, i, e, x, k, plan.seed, **rule.kwargs)), imp, tokens, index)
      t_jax = timed(lambda: select(imp, tokens, index))
      t_torch = timed(lambda: torch_select(rule.name, imp_t, tokens_t, k, rule.kwargs))
      batch = len(su.images)
      rows.append(_row(shape, f"select {rule.label} K={k}", "img/s", batch / t_jax,
                       batch / t_torch))
      if rule.name == "sage":
        rows.append(_row(shape, f"sage % of server K={k}", "%", 100 * t_jax / server_time[k][0],
                         100 * t_torch / server_time[k][1]))
  return rows


def sweep_rows(su, shape, n_off, timed):
  """sage_jax's sweep structure against the reference's on one batch -> (rows, compile rows)."""
  pipe = su.pipe
  plan, budgets = pipe.plan, pipe.plan.budgets
  edge_out = jax.device_get(pipe.steps.edge(pipe.edge_params, pipe.put(su.images)))
  example = pipe.put(dict(image=su.images[:n_off], index=np.arange(n_off, dtype=np.int32),
                          importance={k: v[:n_off] for k, v in edge_out["importance"].items()},
                          tokens=edge_out["tokens"][:n_off], valid=np.ones(n_off, bool)))

  def compiled(rules):
    """-> (pipeline running AOT-compiled server steps for `rules`, compile seconds)."""
    sub = dataclasses.replace(plan, rules=rules)
    steps = pipeline.make_steps(sub, su.edge, su.server, pipe.mesh)
    ceiling, secs = aot(steps.ceiling, pipe.server_params, example["image"])
    known, by_budget, seconds = ceiling(pipe.server_params, example["image"])[1], {}, [secs]
    for k in budgets:
      by_budget[k], secs = aot(steps.budget, pipe.server_params, example, known, k)
      seconds.append(secs)
    steps = steps._replace(ceiling=ceiling, budget=lambda p, b, kn, k: by_budget[k](p, b, kn))
    return pipe._replace(plan=sub, steps=steps), seconds

  fast, seconds = compiled(plan.rules)
  compiles = [_row(shape, f"compile sweep step {name}", "s", secs)
              for name, secs in zip(["ceiling"] + [f"K={k}" for k in budgets], seconds)]
  specs = [(r.name, r.kwargs) for r in plan.rules]
  t_jax, (_, outs) = timed(lambda: jax_sweep(fast, su.images, n_off), warmup=0, output=True)
  t_torch, (_, rule_seconds, ceiling_seconds) = timed(
      lambda: torch_sweep(*su.torch_models, su.images_t, specs, budgets, n_off), warmup=0,
      output=True)
  batch = len(su.images)
  rows = [_row(shape, f"full sweep {len(specs)}x{len(budgets)}, {n_off}/{batch} off", "img/s",
               batch / t_jax, batch / t_torch),
          _row(shape, "full sweep, server rows run", "rows",
               sum(int(o["fresh"].sum()) for o in outs), len(specs) * len(budgets) * n_off)]
  thresholds = [i for i, r in enumerate(plan.rules) if r.name in THRESHOLD_RULES]
  if thresholds:
    fast = compiled(tuple(plan.rules[i] for i in thresholds))[0]
    t_jax = timed(lambda: jax_sweep(fast, su.images, n_off), warmup=0)
    t_torch = sum(rule_seconds[i] for i in thresholds) + ceiling_seconds
    rows.append(_row(shape, f"sweep, threshold rules {len(thresholds)}x{len(budgets)}", "img/s",
                     batch / t_jax, batch / t_torch))
  return rows, compiles


def run_shape(shape, plan, batch, repeats, warmup, min_seconds, offload_share, peak,
              device=torch.device("cpu"), report=lambda rows: None):
  """Every row for one shape. plan: the shape's sweep plan (models, rules, budgets).
  report(rows so far) after the forwards and after the selections."""
  su = make_setup(plan, batch, device)
  ndev = jax.local_device_count()
  n_off = -(-math.ceil(offload_share * len(su.images)) // ndev) * ndev

  def timed(fn, warmup=warmup, output=False):
    seconds, out = best_run(fn, repeats, warmup, min_seconds)
    return (seconds, out) if output else seconds

  rows, compiles, edge_out, server_time = forward_rows(su, shape, timed, peak)
  report(rows + compiles)
  rows += selection_rows(su, shape, edge_out, server_time, timed)
  report(rows + compiles)
  more_rows, more_compiles = sweep_rows(su, shape, n_off, timed)
  return rows + more_rows + compiles + more_compiles


def scale_rows(shape, plan, n_images, share):
  """The sweep at scale (sage_jax alone; module docstring) -> rows."""
  r = throughput.measure(plan, n_images, share)
  split = _shape(shape)[2]
  return [
      _row(shape, f"sweep at scale {r['rules']}x{len(r['budgets'])}, {n_images} img, "
           f"{r['offloaded']} off", "img/s", r["images_per_s"], scale=r),
      _row(shape, f"projected {split:,}-image sweep, compute only", "s",
           split / r["images_per_s"]),
      _row(shape, f"sweep at scale, server rows run of {r['rows_all']}", "rows", r["rows_run"]),
      _row(shape, f"sweep at scale, warm-up: compile + {r['warmup_images']} img", "s",
           r["warmup_seconds"])]


def format_table(rows) -> str:
  head = (f"{'shape':<8}{'row':<46}{'unit':>8}{'sage_jax':>11}{'torch':>11}{'ratio':>8}"
          f"{'GFLOP/img':>11}{'jax GF/s':>10}{'%peak':>7}{'torch GF/s':>11}{'%peak':>7}")
  lines = [head, "-" * len(head)]

  def num(v, width, fmt="{:.4g}"):
    return f"{'' if v is None else fmt.format(v):>{width}}"

  for r in rows:
    lines.append(f"{r['shape']:<8}{r['name']:<46}{r['unit']:>8}{num(r['jax'], 11)}"
                 f"{num(r['torch'], 11)}{num(r['ratio'], 8, '{:.2f}')}"
                 f"{num(r.get('gflop_per_image'), 11)}{num(r.get('jax_gflops'), 10, '{:.1f}')}"
                 f"{num(r.get('jax_peak_frac'), 7, '{:.0%}')}"
                 f"{num(r.get('torch_gflops'), 11, '{:.1f}')}"
                 f"{num(r.get('torch_peak_frac'), 7, '{:.0%}')}")
  return "\n".join(lines)


class Checked(NamedTuple):
  """The options resolved and checked (`check`) before anything runs."""
  device: torch.device      # the reference's
  plans: tuple              # per shape
  matmul: tuple             # (n, dtype) of the peak row
  scale: object             # the sweep at scale's plan, or None
  scale_images: int


def check(shapes, batch, repeats, budgets, rules, offload_share, matmul_size, torch_threads,
          compute_dtype="float32", torch_device="auto", scale_images=0, scale_shape="deit",
          scale_rules=(), scale_budgets=(), scale_share=0.357, scale_server_batch=0,
          **_) -> Checked:
  """Every option checked (ValueError naming the bad one) and resolved -> Checked."""
  if not 0 < offload_share <= 1:
    raise ValueError(f"offload_share {offload_share} is not allowed; it must be in (0, 1]")
  for name, value in (("batch", batch), ("repeats", repeats), ("torch_threads", torch_threads)):
    if value < 1:
      raise ValueError(f"{name} {value} is not allowed; it must be >= 1")
  if matmul_size < 0:
    raise ValueError(f"matmul_size {matmul_size} is not allowed; give n > 0, or 0 (auto)")
  if scale_images < -1:
    raise ValueError(f"scale_images {scale_images} is not allowed; give a count, 0 (none) "
                     "or -1 (auto)")
  accelerator = jax.default_backend() != "cpu"
  device = torch_reference.resolve_device(torch_device, jax.default_backend())
  plans = tuple(shape_plan(shape, rules, budgets, compute_dtype) for shape in shapes)
  for plan in plans:
    for rule in plan.rules:
      if rule.name not in TORCH_RULES:
        raise ValueError(f"rule {rule.name!r} has no torch reference; allowed: "
                         f"{', '.join(TORCH_RULES)}")
  if scale_images == -1:
    scale_images = 4096 if accelerator else 16
  scale = None
  if scale_images:
    scale = throughput.scale_plan(_shape(scale_shape)[0](), scale_images, scale_share,
                                  scale_rules, scale_budgets, compute_dtype,
                                  scale_server_batch)
  matmul = ((matmul_size or 8192, "bfloat16") if accelerator else
            (matmul_size or 2048, "float32"))
  return Checked(device, plans, matmul, scale, scale_images)


def run(shapes, batch, repeats, warmup, min_seconds, budgets, rules, offload_share,
        matmul_size, torch_threads, compute_dtype="float32", torch_device="auto",
        scale_images=0, scale_shape="deit", scale_rules=(), scale_budgets=(), scale_share=0.357,
        scale_server_batch=0, on_rows=lambda rows: None, checked=None):
  """-> rows (dicts) for the matmul peak, every shape and the sweep at scale (run second,
  listed last).

  checked: `check`'s result for these options (made here if not given). on_rows(rows so
  far) after each part.
  """
  c = checked or check(shapes, batch, repeats, budgets, rules, offload_share, matmul_size,
                       torch_threads, compute_dtype, torch_device, scale_images, scale_shape,
                       scale_rules, scale_budgets, scale_share, scale_server_batch)
  torch.set_num_threads(torch_threads)
  with torch.inference_mode():
    rows = matmul_rows(*c.matmul, repeats, warmup, c.device)
    on_rows(rows)
    peak = max(v for v in (rows[0]["jax"], rows[0]["torch"]) if v)
    scale = scale_rows(scale_shape, c.scale, c.scale_images, scale_share) if c.scale else []
    on_rows(rows + scale)
    with torch_reference.autocast(c.device, compute_dtype):
      for shape, plan in zip(shapes, c.plans):
        rows += run_shape(shape, plan, batch, repeats, warmup, min_seconds, offload_share, peak,
                          c.device, report=lambda part: on_rows(rows + part + scale))
        on_rows(rows + scale)
  return rows + scale


VERSIONS = ("jax", "jaxlib", "flax", "torch", "numpy", "ml_collections")


def _version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def describe(device) -> dict:
  """Where and with what this ran (the JSON's header and the table's first line)."""
  torch_name = str(device)
  if device.type == "cuda":
    torch_name += f" ({torch.cuda.get_device_name(device)})"
  return dict(devices=[str(d) for d in jax.devices()], jax_backend=jax.default_backend(),
              torch_device=torch_name,
              versions=dict(python=platform.python_version(),
                            **{name: _version(name) for name in VERSIONS}))


def _write_json(path, rows, options, info, seconds, complete):
  with open(path, "w") as f:
    json.dump(dict(rows=rows, options=options, **info, total_seconds=seconds,
                   complete=complete, tensorflow_imported="tensorflow" in sys.modules), f,
              indent=1, default=str)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  t0 = time.perf_counter()
  options = {name: FLAGS[name].value for name in inspect.signature(run).parameters
             if name in FLAGS}
  info = {}

  def on_rows(rows):
    seconds = time.perf_counter() - t0
    print(f"[{seconds:6.0f} s] {len(rows)} rows measured", file=sys.stderr, flush=True)
    if FLAGS.out:
      _write_json(FLAGS.out, rows, options, info, seconds, complete=False)

  try:
    checked = check(**options)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  info.update(describe(checked.device))
  compile_cache.enable(compile_cache.FLAG.value)
  rows = run(**options, on_rows=on_rows, checked=checked)
  print(f"devices: {info['devices']}; torch on {info['torch_device']} "
        f"({torch.get_num_threads()} threads); {FLAGS.compute_dtype}; best of "
        f">= {FLAGS.repeats} timed calls after {FLAGS.warmup} warm-up; "
        "ratio = sage_jax / torch throughput; %peak = share of the matmul row's rate")
  if info["jax_backend"] != "cpu" and not info["torch_device"].startswith("cuda"):
    print(f"note: torch runs on {info['torch_device']}, jax on {info['jax_backend']}: the "
          "ratios compare different devices")
  print(format_table(rows))
  seconds = time.perf_counter() - t0
  print(f"total {seconds:.0f} s")
  if FLAGS.out:
    _write_json(FLAGS.out, rows, options, info, seconds, complete=True)


def parse_flags(argv):
  """absl's parser, with a bad flag ending in one line and exit code 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
