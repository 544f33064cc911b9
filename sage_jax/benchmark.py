"""Throughput benchmark: sage_jax's jitted pipeline against a PyTorch eager reference.

  python -m sage_jax.benchmark --shapes=fmnist,deit --batch=64 --repeats=2 [--out=bench.json]

Random weights at two shapes: the Fashion-MNIST default (fm-edge -> fm-server, 28 px, 1
channel, 10 classes, N = 49) and the paper's DeiT-Ti/16 -> DeiT-B/16 (224 px, 3 channels,
1000 classes, N = 196). The rule knobs (pool ratio, deltas) come from the shape's config.

sage_jax side: the sweep's own pipeline (`pipeline.build`: its edge, ceiling and budget
steps; `selection.select_batch`), compiled ahead of time (`.lower().compile()`; that time is
the compile row). The reference (`sage_jax/torch_reference.py`) is written the way a PyTorch
user would: an eager timm-style ViT with the same weights, batched top-k and farthest-point
sampling, and a per-image loop for the variable-length threshold rules.

Every time is the best of at least --repeats calls (cheap calls: as many as fit in
--min_seconds) after --warmup untimed calls; jax results are waited for with
block_until_ready, torch on CPU is synchronous. The sweeps are long and every piece of them
has run before, so they get no warm-up call: the first run of sage_jax's compiled sweep steps
counts against sage_jax. Ratios are sage_jax / torch in throughput: > 1 is sage_jax faster.

FLOPs per image of a forward (`forward_flops`), multiply-adds counted as 2, elementwise
work (LayerNorm, softmax, GELU) ignored; T = kept patches + 1 (CLS), D width, M MLP width,
L depth, N patches of P = patch*patch*channels values, C classes:
  2*N*P*D                      patch embedding (both implementations embed all N patches)
  + L * (2*T*(4*D^2 + 2*D*M)   qkv, attention projection, MLP
         + 4*T^2*D)            q k^T and attn v
  + 2*D*C                      head
The machine's peak is one large float32 matmul (2*n^3 FLOPs), the faster of jax and torch.

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
"""
import dataclasses
import inspect
import json
import math
import time
from typing import NamedTuple

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import torch

from sage_jax import defaults, pipeline, selection, vit
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
flags.DEFINE_integer("matmul_size", 2048, "n of the n x n float32 matmul measuring the peak.")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
flags.DEFINE_string("out", None, "Also write the rows as JSON here.")
flags.DEFINE_enum("compute_dtype", "float32", list(pipeline.DTYPES),
                  "sage_jax activations (bfloat16 for accelerators); torch stays float32.")

# shape -> (config, default budgets)
SHAPES = {"fmnist": (defaults.sweep_config, (4, 6, 8, 12, 16, 24, 32, 49)),
          "deit": (defaults.imagenet_deit, (16, 32, 48, 64, 96))}


def forward_flops(model: vit.ViT, kept: int, channels: int) -> float:
  """FLOPs of one image's forward with `kept` patches (formula in the module docstring)."""
  d, m, t, n = model.width, model.mlp_dim, kept + 1, model.num_patches
  patch_dim = model.patch_size ** 2 * channels
  return (2 * n * patch_dim * d + model.depth * (2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d)
          + 2 * d * model.num_classes)


def best_run(fn, repeats, warmup, min_seconds=0.25, max_calls=200):
  """-> (seconds, output) of the fastest timed call of fn() after `warmup` untimed calls.

  At least `repeats` calls are timed, and cheap calls are repeated until `min_seconds` have
  passed (at most `max_calls`): on shared cores a single short call is often preempted.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  best, total, calls = (math.inf, None), 0.0, 0
  while calls < max(1, repeats) or (total < min_seconds and calls < max_calls):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    seconds = time.perf_counter() - t0
    best, total, calls = min(best, (seconds, out), key=lambda x: x[0]), total + seconds, calls + 1
  return best


def best_time(fn, repeats, warmup, min_seconds=0.25):
  return best_run(fn, repeats, warmup, min_seconds)[0]


def aot(jitted, *args):
  """-> (compiled, seconds spent tracing, lowering and compiling)."""
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


def init_model(spec, ds, key, dtype="float32"):
  """Random-weight sage_jax ViT; the head is random too (its default init is zeros)."""
  model = vit.Model(ds.num_classes, spec.variant, ds.image_size, pipeline.DTYPES[dtype])
  images = jnp.zeros((1, ds.image_size, ds.image_size, ds.channels))
  params = jax.jit(model.init)(key, images)["params"]
  head = params["head"]["kernel"]
  params["head"]["kernel"] = 0.02 * jax.random.normal(jax.random.fold_in(key, 1), head.shape)
  return model, params


def shape_plan(shape: str, rules, budgets, compute_dtype="float32"):
  """The shape's sweep config with these rules and budgets -> its checked plan."""
  if shape not in SHAPES:
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
  config, default_budgets = SHAPES[shape]
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


def matmul_rows(n, repeats, warmup):
  """Machine peak: one n x n float32 matmul in jax and in torch -> rows (GFLOP/s)."""
  a = np.random.default_rng(0).standard_normal((2, n, n), np.float32)
  ja, jb = jnp.asarray(a[0]), jnp.asarray(a[1])
  ta, tb = torch.from_numpy(a[0]), torch.from_numpy(a[1])
  mm = jax.jit(jnp.matmul)
  gflop = 2 * n ** 3 / 1e9
  t_jax = best_time(lambda: mm(ja, jb), repeats, max(1, warmup), min_seconds=1.0)
  t_torch = best_time(lambda: torch.mm(ta, tb), repeats, max(1, warmup), min_seconds=1.0)
  return [_row("machine", f"matmul fp32 {n}x{n}", "GFLOP/s", gflop / t_jax, gflop / t_torch)]


def _forward_row(shape, name, model, kept, channels, batch, t_jax, t_torch, peak):
  flops = forward_flops(model, kept, channels)
  jax_gflops, torch_gflops = flops * batch / t_jax / 1e9, flops * batch / t_torch / 1e9
  return _row(shape, name, "img/s", batch / t_jax, batch / t_torch,
              gflop_per_image=flops / 1e9, jax_gflops=jax_gflops, torch_gflops=torch_gflops,
              jax_peak_frac=jax_gflops / peak, torch_peak_frac=torch_gflops / peak)


class Setup(NamedTuple):
  """One shape's random-weight models (sage_jax pipeline and torch twins) and inputs."""
  pipe: pipeline.Pipeline   # the sweep's pipeline on these models (batch sizes fitted)
  edge: vit.ViT
  server: vit.ViT
  torch_models: tuple       # (edge, server) TorchViT
  images: np.ndarray        # f32[B, H, W, C]
  images_t: torch.Tensor    # f32[B, C, H, W]


def make_setup(plan, batch) -> Setup:
  ds, key = plan.dataset, jax.random.PRNGKey(0)
  edge, edge_params = init_model(plan.edge, ds, jax.random.fold_in(key, 0), plan.compute_dtype)
  server, server_params = init_model(plan.server, ds, jax.random.fold_in(key, 1),
                                     plan.compute_dtype)
  torch_models = (TorchViT(edge, edge_params, ds.channels),
                  TorchViT(server, server_params, ds.channels))
  pipe = pipeline.build(plan, pipeline.Models(edge, edge_params, server, server_params))
  ndev = jax.local_device_count()
  images = np.random.default_rng(1).standard_normal(
      (-(-batch // ndev) * ndev, ds.image_size, ds.image_size, ds.channels), np.float32)
  return Setup(pipe, edge, server, torch_models, images,
               torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))


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
    keep_t = torch.from_numpy(np.array(keep)).long()
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
  tokens_t = torch.from_numpy(np.array(tokens))
  rows = []
  for rule in plan.rules:
    imp = edge_out["importance"][rule.importance]
    imp_t = torch.from_numpy(np.array(imp))
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


def run_shape(shape, plan, batch, repeats, warmup, min_seconds, offload_share, peak):
  """Every row for one shape. plan: the shape's sweep plan (models, rules, budgets)."""
  for rule in plan.rules:
    if rule.name not in TORCH_RULES:
      raise ValueError(f"rule {rule.name!r} has no torch reference; allowed: "
                       f"{', '.join(TORCH_RULES)}")
  su = make_setup(plan, batch)
  ndev = jax.local_device_count()
  n_off = -(-math.ceil(offload_share * len(su.images)) // ndev) * ndev

  def timed(fn, warmup=warmup, output=False):
    seconds, out = best_run(fn, repeats, warmup, min_seconds)
    return (seconds, out) if output else seconds

  rows, compiles, edge_out, server_time = forward_rows(su, shape, timed, peak)
  rows += selection_rows(su, shape, edge_out, server_time, timed)
  more_rows, more_compiles = sweep_rows(su, shape, n_off, timed)
  return rows + more_rows + compiles + more_compiles


def format_table(rows) -> str:
  head = (f"{'shape':<8}{'row':<40}{'unit':>8}{'sage_jax':>11}{'torch':>11}{'ratio':>8}"
          f"{'GFLOP/img':>11}{'jax GF/s':>10}{'%peak':>7}{'torch GF/s':>11}{'%peak':>7}")
  lines = [head, "-" * len(head)]

  def num(v, width, fmt="{:.4g}"):
    return f"{'' if v is None else fmt.format(v):>{width}}"

  for r in rows:
    lines.append(f"{r['shape']:<8}{r['name']:<40}{r['unit']:>8}{num(r['jax'], 11)}"
                 f"{num(r['torch'], 11)}{num(r['ratio'], 8, '{:.2f}')}"
                 f"{num(r.get('gflop_per_image'), 11)}{num(r.get('jax_gflops'), 10, '{:.1f}')}"
                 f"{num(r.get('jax_peak_frac'), 7, '{:.0%}')}"
                 f"{num(r.get('torch_gflops'), 11, '{:.1f}')}"
                 f"{num(r.get('torch_peak_frac'), 7, '{:.0%}')}")
  return "\n".join(lines)


def run(shapes, batch, repeats, warmup, min_seconds, budgets, rules, offload_share,
        matmul_size, torch_threads, compute_dtype="float32"):
  """-> rows (dicts) for the matmul peak and every shape."""
  if not 0 < offload_share <= 1:
    raise ValueError(f"offload_share {offload_share} is not allowed; it must be in (0, 1]")
  torch.set_num_threads(torch_threads)
  with torch.inference_mode():
    rows = matmul_rows(matmul_size, repeats, warmup)
    peak = max(rows[0]["jax"], rows[0]["torch"])
    for shape in shapes:
      plan = shape_plan(shape, rules, budgets, compute_dtype)
      rows += run_shape(shape, plan, batch, repeats, warmup, min_seconds, offload_share, peak)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  t0 = time.perf_counter()
  options = {name: FLAGS[name].value for name in inspect.signature(run).parameters}
  rows = run(**options)
  print(f"devices: {jax.devices()}; torch threads: {torch.get_num_threads()}; best of "
        f">= {FLAGS.repeats} timed calls after {FLAGS.warmup} warm-up; "
        "ratio = sage_jax / torch throughput")
  print(format_table(rows))
  seconds = time.perf_counter() - t0
  print(f"total {seconds:.0f} s")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(dict(rows=rows, options=options, devices=[str(d) for d in jax.devices()],
                     total_seconds=seconds), f, indent=1)


if __name__ == "__main__":
  app.run(main)
