"""The benchmark measure: sage_jax's jitted pipeline against a PyTorch eager reference
(`torch_reference`) on random weights at the Fashion-MNIST and DeiT shapes (docs/benchmark.md).
"""
import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np
import torch

from sage_jax.measure import harness
from sage_jax.measure import scale
from sage_jax.measure import torch_reference
from sage_jax.models import vit
from sage_jax import rules
from sage_jax.sweep import pipeline
from sage_jax.sweep import server_step
from sage_jax import timing
from sage_jax.measure.torch_reference import (THRESHOLD_RULES, TORCH_RULES, TorchViT, torch_edge,
                                      torch_select, torch_sweep)


class Checked(NamedTuple):
  """The benchmark fields checked before anything runs: the reference's device, (shape,
  plan) per shape, (n, dtype) of the matmul row, (plan, images) of the sweep at scale."""
  device: torch.device
  plans: tuple
  matmul: tuple
  scale: object


def check(config) -> Checked:
  """Every benchmark field checked (ValueError naming the bad one) -> Checked."""
  if not 0 < config.offload_share <= 1:
    raise ValueError(f"offload_share {config.offload_share} is not allowed; it must be in "
                     "(0, 1]")
  for name in ("batch", "repeats", "torch_threads"):
    if config[name] < 1:
      raise ValueError(f"{name} {config[name]} is not allowed; it must be >= 1")
  if config.matmul_size < 0:
    raise ValueError(f"matmul_size {config.matmul_size} is not allowed; give n > 0, or 0 "
                     "(auto)")
  device = torch_reference.resolve_device(config.torch_device, jax.default_backend())
  budgets = [int(k) for k in harness.items(config.budgets)]
  plans = tuple((s, harness.shape_plan(s, harness.items(config.rules), budgets,
                                       config.compute_dtype, config.batch, config.batch))
                for s in harness.items(config.shapes))
  for _, plan in plans:
    for rule in plan.rules:
      if rule.name not in TORCH_RULES:
        raise ValueError(f"rule {rule.name!r} has no torch reference; allowed: "
                         f"{', '.join(TORCH_RULES)}")
  accelerator = jax.default_backend() != "cpu"
  matmul = ((config.matmul_size or 8192, "bfloat16") if accelerator else
            (config.matmul_size or 2048, "float32"))
  return Checked(device, plans, matmul, scale.scale_plan_of(config))


def rows(config, workdir, log):
  """The benchmark's rows: the setup, the matmul peak, the sweep at scale, every shape."""
  del workdir
  c = check(config)
  torch.set_num_threads(config.torch_threads)
  timed = lambda fn, warmup=config.warmup, min_seconds=config.min_seconds: timing.best_of(
      fn, config.repeats, warmup, min_seconds, sync=torch_reference.sync)
  torch_name = str(c.device) + (f" ({torch.cuda.get_device_name(c.device)})"
                                if c.device.type == "cuda" else "")
  yield dict(table="setup", torch_device=torch_name, torch_threads=torch.get_num_threads(),
             compute_dtype=config.compute_dtype,
             timing=f"best of >= {config.repeats} timed calls after {config.warmup} warm-up",
             ratio="sage_jax / torch throughput", note=(
                 f"torch on {c.device}, jax on {jax.default_backend()}: the ratios compare "
                 "different devices" if jax.default_backend() != "cpu"
                 and c.device.type != "cuda" else ""))
  with torch.inference_mode():
    peak = matmul_row(*c.matmul, c.device, timed, config.warmup)
    yield peak
    if c.scale:
      log("sweep at scale ...")
      yield from scale.scale_rows(config.scale.shape, *c.scale, config.scale.share)
    with torch_reference.autocast(c.device, config.compute_dtype):
      for shape, plan in c.plans:
        log(f"{shape} shapes ...")
        yield from shape_rows(shape, plan, config.offload_share, peak, c.device, timed)


def _row(shape, name, unit, jax_value, torch_value=None, **extra):
  """One table row; ratio = sage_jax / torch for throughputs (higher is better for sage_jax)."""
  ratio = jax_value / torch_value if torch_value and unit in ("img/s", "GFLOP/s") else None
  return dict(table="benchmark", shape=shape, name=name, unit=unit, jax=jax_value,
              torch=torch_value, ratio=ratio, **extra)


def matmul_row(n, dtype, device, timed, warmup):
  """One n x n matmul in jax and in torch (on `device`, unless that is a CPU while jax runs
  elsewhere) -> the peak row (GFLOP/s)."""
  seconds = lambda fn: timed(fn, warmup=max(1, warmup), min_seconds=1.0)[0]
  t_jax = harness.matmul_seconds(n, dtype, seconds)
  t_torch = None
  if (device.type == "cpu") == (jax.default_backend() == "cpu"):
    t_torch = seconds(torch_reference.matmul(n, dtype, device))
  gflop = 2 * n ** 3 / 1e9
  name = f"matmul {dict(float32='fp32', bfloat16='bf16')[dtype]} {n}x{n}"
  return _row("machine", name, "GFLOP/s", gflop / t_jax, t_torch and gflop / t_torch)


def _forward_row(shape, name, model, kept, channels, batch, t_jax, t_torch, peak):
  flops = vit.forward_flops(model, kept, channels)
  jax_gflops, torch_gflops = flops * batch / t_jax / 1e9, flops * batch / t_torch / 1e9
  return _row(shape, name, "img/s", batch / t_jax, batch / t_torch,
              gflop_per_image=flops / 1e9, jax_gflops=jax_gflops, torch_gflops=torch_gflops,
              jax_peak_pct=100 * jax_gflops / peak, torch_peak_pct=100 * torch_gflops / peak)


class Setup(NamedTuple):
  """One shape's random-weight pipeline, its torch twins (edge, server) and the images as
  f32[B, H, W, C] and, on the reference's device, f32[B, C, H, W]."""
  pipe: pipeline.Pipeline
  edge: vit.ViT
  server: vit.ViT
  torch_models: tuple
  images: np.ndarray
  images_t: torch.Tensor
  device: torch.device


def make_setup(plan, device=torch.device("cpu")) -> Setup:
  """plan: batch_size = server_batch_size = the benchmark's batch."""
  ds = plan.dataset
  models = harness.random_models(plan)
  edge, edge_params, server, server_params = models
  torch_models = (TorchViT(edge, edge_params, ds.channels, device),
                  TorchViT(server, server_params, ds.channels, device))
  pipe = pipeline.build(plan, models)
  images = harness.synthetic_images(pipe.plan.batch_size, ds, seed=1)
  return Setup(pipe, edge, server, torch_models, images,
               torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device), device)


def shape_rows(shape, plan, offload_share, peak, device, timed):
  """Every row for one shape: forwards, selections, the sweep, then the compile rows."""
  su = make_setup(plan, device)
  ndev = jax.local_device_count()
  n_off = -(-math.ceil(offload_share * len(su.images)) // ndev) * ndev
  peak = max(v for v in (peak["jax"], peak["torch"]) if v)
  forwards, compiles, server_time = forward_rows(su, shape, timed, peak)
  yield from forwards
  yield from selection_rows(su, shape, server_time, timed)
  sweeps, more = sweep_rows(su, shape, n_off, timed)
  yield from sweeps + compiles + more


def forward_rows(su, shape, timed, peak):
  """Edge and server forwards -> (rows, compile rows, {K: (jax seconds, torch seconds)})."""
  pipe, (t_edge, t_server) = su.pipe, su.torch_models
  batch, channels, budgets = len(su.images), pipe.plan.dataset.channels, pipe.plan.budgets
  seconds = lambda fn: timed(fn)[0]
  jax_s = harness.forward_seconds(pipe, su.server, ["edge", *budgets], seconds, su.images)
  rows = [_forward_row(shape, "edge forward", su.edge, su.edge.num_patches, channels, batch,
                       jax_s["edge"][0], seconds(lambda: torch_edge(t_edge, su.images_t)),
                       peak)]
  compiles = [_row(shape, "compile edge step", "s", jax_s["edge"][1])]
  server_time = {}
  for k in budgets:
    keep_t = torch.from_numpy(harness.keep_indices(batch, su.server.num_patches, k)).long()
    keep_t = keep_t.to(su.device)
    server_time[k] = (jax_s[k][0], seconds(lambda: t_server(su.images_t, keep_t)))
    rows.append(_forward_row(shape, f"server forward K={k}", su.server, k, channels, batch,
                             *server_time[k], peak))
    compiles.append(_row(shape, f"compile server K={k}", "s", jax_s[k][1]))
  return rows, compiles, server_time


def selection_rows(su, shape, server_time, timed):
  """Each rule at each budget on the edge's outputs; SAGE's share of the server forward."""
  plan = su.pipe.plan
  edge_out = su.pipe.steps.edge(su.pipe.edge_params, su.pipe.put(su.images))
  tokens, index = edge_out["tokens"], su.pipe.put(np.arange(len(su.images), dtype=np.int32))
  tokens_t = torch.from_numpy(np.array(tokens)).to(su.device)
  rows, batch = [], len(su.images)
  for rule in plan.rules:
    imp = edge_out["importance"][rule.importance]
    imp_t = torch.from_numpy(np.array(imp)).to(su.device)
    for k in plan.budgets:
      select, _ = harness.aot(jax.jit(lambda i, e, x, k=k: rules.select_batch(
          rule.name, i, e, x, k, plan.seed, **rule.kwargs)), imp, tokens, index)
      t_jax = timed(lambda: select(imp, tokens, index))[0]
      t_torch = timed(lambda: torch_select(rule.name, imp_t, tokens_t, k, rule.kwargs))[0]
      rows.append(_row(shape, f"select {rule.label} K={k}", "img/s", batch / t_jax,
                       batch / t_torch))
      if rule.name == "sage":
        rows.append(_row(shape, f"sage % of server K={k}", "%", 100 * t_jax / server_time[k][0],
                         100 * t_torch / server_time[k][1]))
  return rows


def jax_sweep(pipe, images, n_off):
  """The sweep's structure on one batch, the ceiling included: each distinct evidence set of
  an image goes through the server once."""
  out = jax.device_get(pipe.steps.edge(pipe.edge_params, pipe.put(images)))
  batch = _server_batch(pipe, images, out, np.argsort(-out["uncertainty"], kind="stable")[:n_off])
  return jax.device_get(server_step.run_budgets(pipe.steps, pipe.server_params, batch,
                                             pipe.plan.budgets))


def _server_batch(pipe, images, edge_out, rows):
  """The server steps' batch of these rows of the images and their edge outputs."""
  return pipe.put(dict(image=images[rows], index=rows.astype(np.int32),
                       importance={k: v[rows] for k, v in edge_out["importance"].items()},
                       tokens=edge_out["tokens"][rows], valid=np.ones(len(rows), bool)))


def _compiled_sweep(su, rules, example):
  """-> (su.pipe running AOT-compiled server steps for `rules`, compile seconds)."""
  pipe = su.pipe
  sub = dataclasses.replace(pipe.plan, rules=rules)
  # The stop signals' log-probabilities only for signal rules this subset still runs.
  prog = sub.report.progressive
  prog = dataclasses.replace(prog, signal_rules=tuple(r for r in prog.signal_rules
                                                      if r in sub.labels))
  sub = dataclasses.replace(sub, report=dataclasses.replace(sub.report, progressive=prog))
  steps = pipeline.make_steps(sub, su.edge, su.server, pipe.mesh)
  ceiling, secs = harness.aot(steps.ceiling, pipe.server_params, example["image"])
  known, by_budget, seconds = ceiling(pipe.server_params, example["image"])[1], {}, [secs]
  select, pre, rows = steps.select, (), {k: example[k] for k in ("importance", "tokens", "index")}
  if select is not None:  # one program for the slotted rules at every budget
    select, select_secs = harness.aot(select, rows)
    pre = (select(rows),)
  for k in sub.budgets:
    by_budget[k], secs = harness.aot(steps.budget, pipe.server_params, example, known, k, *pre)
    seconds.append(secs)
  if select is not None:
    seconds.append(select_secs)  # listed last
  steps = steps._replace(ceiling=ceiling, select=select, budget=lambda p, b, kn, k, *pr:
                         by_budget[k](p, b, kn, *pr))
  return pipe._replace(plan=sub, steps=steps), seconds


def sweep_rows(su, shape, n_off, timed):
  """sage_jax's sweep structure against the reference's on one batch -> (rows, compile rows)."""
  pipe = su.pipe
  plan, budgets = pipe.plan, pipe.plan.budgets
  edge_out = jax.device_get(pipe.steps.edge(pipe.edge_params, pipe.put(su.images)))
  example = _server_batch(pipe, su.images, edge_out, np.arange(n_off))
  fast, seconds = _compiled_sweep(su, plan.rules, example)
  compiles = [_row(shape, f"compile sweep step {name}", "s", secs)
              for name, secs in zip(["ceiling"] + [f"K={k}" for k in budgets] + ["select"],
                                    seconds)]
  specs = [(r.name, r.kwargs) for r in plan.rules]
  t_jax, (_, outs) = timed(lambda: jax_sweep(fast, su.images, n_off), warmup=0)
  t_torch, (_, rule_seconds, ceiling_seconds) = timed(
      lambda: torch_sweep(*su.torch_models, su.images_t, specs, budgets, n_off), warmup=0)
  batch = len(su.images)
  rows = [_row(shape, f"full sweep {len(specs)}x{len(budgets)}, {n_off}/{batch} off", "img/s",
               batch / t_jax, batch / t_torch),
          _row(shape, "full sweep, server rows run", "rows",
               sum(int(o["fresh"].sum()) for o in outs), len(specs) * len(budgets) * n_off)]
  thresholds = [i for i, r in enumerate(plan.rules) if r.name in THRESHOLD_RULES]
  if thresholds:
    fast = _compiled_sweep(su, tuple(plan.rules[i] for i in thresholds), example)[0]
    t_jax = timed(lambda: jax_sweep(fast, su.images, n_off), warmup=0)[0]
    t_torch = sum(rule_seconds[i] for i in thresholds) + ceiling_seconds
    rows.append(_row(shape, f"sweep, threshold rules {len(thresholds)}x{len(budgets)}", "img/s",
                     batch / t_jax, batch / t_torch))
  return rows, compiles
