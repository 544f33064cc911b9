"""Throughput benchmark: sage_jax's jitted pipeline against a PyTorch eager reference.

  python -m sage_jax.benchmark --shapes=fmnist,deit --batch=64 --repeats=2 [--out=bench.json]

Random weights at two shapes: the Fashion-MNIST default (fm-edge -> fm-server, 28 px, 1
channel, 10 classes, N = 49) and the paper's DeiT-Ti/16 -> DeiT-B/16 (224 px, 3 channels,
1000 classes, N = 196). The rule knobs (pool ratio, deltas) come from the shape's config.

sage_jax side: `sweep.make_edge_step` / `sweep.make_server_steps` and `selection.select_batch`,
compiled ahead of time (`.lower().compile()`; that time is the compile row). The reference is
written the way a PyTorch user would: an eager timm-style ViT with the same weights (conv
patch embedding, fused attention except in the block whose attention map is returned), the
subset forward gathering the kept patch embeddings and their position embeddings, batched
top-k, batched farthest-point sampling (a loop over the K picks, vectorised over the batch)
and a per-image Python loop for the variable-length threshold rules, whose server forward
then also runs image by image on just the kept patches.

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
             sets it has not seen yet for that image (`sweep.run_budgets`, the sweep's code);
  reference: for each (rule, budget): edge on the batch again, select, server on the
             offloaded images only (per image for the threshold rules); then one more pass
             for the ceiling.
The "server rows run" row counts the (rule, budget, image) rows sage_jax's server ran on,
against all of them (the reference runs every one).
The threshold rules' row: sage_jax's sweep over those rules alone (ceiling included)
against their share of the reference's full sweep plus its ceiling pass.
"""
import importlib
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
import torch.nn.functional as F

from sage_jax import selection, sweep, vit

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
flags.DEFINE_enum("compute_dtype", "float32", list(sweep.DTYPES),
                  "sage_jax activations (bfloat16 for accelerators); torch stays float32.")

# shape -> (config module, default budgets)
SHAPES = {"fmnist": ("configs.fmnist_sweep", (4, 6, 8, 12, 16, 24, 32, 49)),
          "deit": ("configs.imagenet_deit", (16, 32, 48, 64, 96))}
THRESHOLD_RULES = ("threshold", "sum_threshold")
TORCH_RULES = ("topk", "sage", "diversity") + THRESHOLD_RULES


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


# --- the PyTorch eager reference ---------------------------------------------------------

class TorchViT:
  """Eager PyTorch twin of a sage_jax ViT with the same weights (timm style)."""

  def __init__(self, model: vit.ViT, params, channels: int):
    def t(a):
      return torch.from_numpy(np.array(a, np.float32))

    def dense(p):  # flax kernel [in, out] -> torch weight [out, in]
      return t(p["kernel"]).T.contiguous(), t(p["bias"])

    def norm(p):
      return t(p["scale"]), t(p["bias"])

    p = model.patch_size
    kernel = t(params["patch_embed"]["kernel"]).reshape(p, p, channels, model.width)
    self.patch = (kernel.permute(3, 2, 0, 1).contiguous(), t(params["patch_embed"]["bias"]))
    self.pos, self.cls = t(params["pos_embed"])[0], t(params["cls_token"])[0]
    self.blocks = [dict(norm1=norm(b["norm1"]), qkv=dense(b["attn"]["qkv"]),
                        proj=dense(b["attn"]["proj"]), norm2=norm(b["norm2"]),
                        fc1=dense(b["fc1"]), fc2=dense(b["fc2"]))
                   for b in (params[f"blocks_{i}"] for i in range(model.depth))]
    self.norm, self.head = norm(params["norm"]), dense(params["head"])
    self.patch_size, self.width, self.heads = p, model.width, model.num_heads

  def _block(self, x, blk, need_attn):
    b, t, d = x.shape
    y = F.layer_norm(x, (d,), *blk["norm1"], eps=1e-6)
    q, k, v = F.linear(y, *blk["qkv"]).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    attn = None
    if need_attn:
      attn = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
      y = attn @ v
    else:
      y = F.scaled_dot_product_attention(q, k, v)
    x = x + F.linear(y.transpose(1, 2).reshape(b, t, d), *blk["proj"])
    y = F.gelu(F.linear(F.layer_norm(x, (d,), *blk["norm2"], eps=1e-6), *blk["fc1"]))
    return x + F.linear(y, *blk["fc2"]), attn

  def __call__(self, images, keep_idx=None, need_attn=False):
    """images: f32[B, C, H, W]; keep_idx: i64[B, K] or None -> (logits, last attn, tokens)."""
    x = F.conv2d(images, *self.patch, stride=self.patch_size).flatten(2).transpose(1, 2)
    if keep_idx is None:
      x = x + self.pos[1:]
    else:
      x = x.gather(1, keep_idx[..., None].expand(-1, -1, self.width)) + self.pos[1:][keep_idx]
    x = torch.cat([(self.cls + self.pos[:1]).expand(x.shape[0], 1, -1), x], 1)
    for i, blk in enumerate(self.blocks):
      x, attn = self._block(x, blk, need_attn and i == len(self.blocks) - 1)
    x = F.layer_norm(x, (self.width,), *self.norm, eps=1e-6)
    return F.linear(x[:, 0], *self.head), attn, x[:, 1:]


def torch_edge(model: TorchViT, images):
  """The edge step: CLS->patch importance (head mean, sums to 1), min-entropy score, tokens."""
  logits, attn, tokens = model(images, need_attn=True)
  imp = attn[:, :, 0, 1:].mean(1)
  imp = imp / imp.sum(-1, keepdim=True).clamp_min(1e-12)
  score = -F.log_softmax(logits, -1).amax(-1) / math.log(2.0)
  return dict(score=score, importance=imp, tokens=tokens)


def _farthest_point(x, seed, budget):
  """Greedy max-min cosine on unit rows x: f32[B, P, D], seeded at seed: i64[B] -> i64[B, K]."""
  rows = torch.arange(x.shape[0])
  chosen = torch.empty(x.shape[0], budget, dtype=torch.long)
  chosen[:, 0] = seed
  min_dist = 1.0 - torch.bmm(x, x[rows, seed][..., None])[..., 0]
  min_dist[rows, seed] = -math.inf
  for i in range(1, budget):
    j = min_dist.argmax(1)
    chosen[:, i] = j
    min_dist = torch.minimum(min_dist, 1.0 - torch.bmm(x, x[rows, j][..., None])[..., 0])
    min_dist[rows, j] = -math.inf
  return chosen


def torch_select(name, importance, tokens, budget, kw):
  """-> i64[B, K] for the fixed-size rules, a list of i64[k_b] for the threshold rules."""
  if name == "topk":
    return importance.topk(budget, dim=1).indices
  if name == "diversity":
    return _farthest_point(F.normalize(tokens, dim=-1), importance.argmax(1), budget)
  if name == "sage":
    n = importance.shape[1]
    pool_size = min(n, max(budget, math.ceil(kw["pool_ratio"] * budget)))
    pool = importance.topk(pool_size, dim=1).indices.sort(1).values
    x = F.normalize(tokens.gather(1, pool[..., None].expand(-1, -1, tokens.shape[-1])), dim=-1)
    return pool.gather(1, _farthest_point(x, importance.gather(1, pool).argmax(1), budget))
  if name in THRESHOLD_RULES:
    kept = []
    for imp in importance:  # variable length: one image at a time
      order = imp.argsort(descending=True, stable=True)
      inside = imp >= kw["delta"] if name == "threshold" else imp[order].cumsum(0) <= kw["delta"]
      kept.append(order[:min(budget, max(1, int(inside.sum())))])
    return kept
  raise ValueError(f"rule {name!r} has no torch reference; allowed: {', '.join(TORCH_RULES)}")


def torch_server(model: TorchViT, images, sel):
  """Server predictions from the selected patches (image by image for a list)."""
  if isinstance(sel, list):
    return [model(images[b:b + 1], idx[None])[0].argmax(-1) for b, idx in enumerate(sel)]
  return model(images, sel)[0].argmax(-1)


def torch_sweep(edge, server, images, specs, budgets, n_off):
  """The reference structure: one configuration per pass over the batch, the all-patch
  ceiling being one more.

  -> (server predictions per (rule, budget), seconds spent on each rule, on the ceiling).
  """
  def offloaded():
    out = torch_edge(edge, images)
    return out, out["score"].argsort(descending=True, stable=True)[:n_off]

  preds, seconds = [], []
  for name, kw in specs:
    t0 = time.perf_counter()
    for k in budgets:
      out, off = offloaded()
      sel = torch_select(name, out["importance"][off], out["tokens"][off], k, kw)
      preds.append(torch_server(server, images[off], sel))
    seconds.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  server(images[offloaded()[1]])
  return preds, seconds, time.perf_counter() - t0


# --- the sage_jax side -------------------------------------------------------------------

def jax_sweep(edge_step, server_steps, params, images, n_off, put, budgets):
  """The sweep's structure (`sweep._evaluate_range` on one batch), the ceiling included: each
  distinct evidence set of an image goes through the server once."""
  edge_params, server_params = params
  out = jax.device_get(edge_step(edge_params, put(images)))
  off = np.argsort(-out["score"], kind="stable")[:n_off]
  batch = put(dict(image=images[off], index=off.astype(np.int32),
                   importance=out["importance"][off], tokens=out["tokens"][off],
                   valid=np.ones(n_off, bool)))
  return jax.device_get(sweep.run_budgets(*server_steps, server_params, batch, budgets))


def init_model(config_model, ds, key, dtype="float32"):
  """Random-weight sage_jax ViT; the head is random too (its default init is zeros)."""
  model = vit.Model(ds.num_classes, config_model.variant, ds.image_size, sweep.DTYPES[dtype])
  images = jnp.zeros((1, ds.image_size, ds.image_size, ds.channels))
  params = jax.jit(model.init)(key, images)["params"]
  head = params["head"]["kernel"]
  params["head"]["kernel"] = 0.02 * jax.random.normal(jax.random.fold_in(key, 1), head.shape)
  return model, params


def shape_config(shape: str):
  if shape not in SHAPES:
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
  return importlib.import_module(SHAPES[shape][0]).get_config()


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
  """One shape's random-weight models (sage_jax and torch twins) and inputs."""
  config: object          # the shape's sweep config, batch sizes fitted to the devices
  put: object             # numpy tree -> device (split over the batch)
  mesh: object            # the devices' 1-d "batch" mesh
  edge: vit.ViT
  server: vit.ViT
  params: tuple           # (edge, server) sage_jax params, on the devices
  torch_models: tuple     # (edge, server) TorchViT
  images: np.ndarray      # f32[B, H, W, C]
  images_t: torch.Tensor  # f32[B, C, H, W]


def make_setup(config, batch) -> Setup:
  config, put, put_params, mesh = sweep.data_parallel(config)
  ds, key = config.dataset, jax.random.PRNGKey(0)
  edge, edge_params = init_model(config.edge, ds, jax.random.fold_in(key, 0), config.compute_dtype)
  server, server_params = init_model(config.server, ds, jax.random.fold_in(key, 1),
                                     config.compute_dtype)
  torch_models = (TorchViT(edge, edge_params, ds.channels),
                  TorchViT(server, server_params, ds.channels))
  ndev = jax.local_device_count()
  images = np.random.default_rng(1).standard_normal(
      (-(-batch // ndev) * ndev, ds.image_size, ds.image_size, ds.channels), np.float32)
  return Setup(config, put, mesh, edge, server,
               (put_params(edge_params), put_params(server_params)), torch_models, images,
               torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))


def forward_rows(su, shape, budgets, timed, peak):
  """Edge and server forwards -> (rows, compile rows, edge step, edge outputs, server times)."""
  (edge_params, server_params), (t_edge, t_server) = su.params, su.torch_models
  batch, channels = len(su.images), su.config.dataset.channels
  images = su.put(su.images)
  edge_step, secs = aot(sweep.make_edge_step(su.edge, su.config.importance,
                                             su.config.gate.measure), edge_params, images)
  compiles = [_row(shape, "compile edge step", "s", secs)]
  rows = [_forward_row(shape, "edge forward", su.edge, su.edge.num_patches, channels, batch,
                       timed(lambda: edge_step(edge_params, images)),
                       timed(lambda: torch_edge(t_edge, su.images_t)), peak)]
  edge_out = edge_step(edge_params, images)
  server_fwd = jax.jit(lambda p, x, idx: su.server.apply({"params": p}, x, idx)[0])
  server_time = {}
  for k in budgets:
    keep = su.put(jax.lax.top_k(edge_out["importance"], k)[1])
    keep_t = torch.from_numpy(np.array(keep)).long()
    fwd, secs = aot(server_fwd, server_params, images, keep)
    compiles.append(_row(shape, f"compile server K={k}", "s", secs))
    server_time[k] = (timed(lambda: fwd(server_params, images, keep)),
                      timed(lambda: t_server(su.images_t, keep_t)))
    rows.append(_forward_row(shape, f"server forward K={k}", su.server, k, channels, batch,
                             *server_time[k], peak))
  return rows, compiles, edge_step, edge_out, server_time


def selection_rows(su, shape, rules, budgets, edge_out, server_time, timed):
  """Each rule at each budget on the edge's outputs; SAGE's share of the server forward."""
  imp, tokens = edge_out["importance"], edge_out["tokens"]
  imp_t, tokens_t = torch.from_numpy(np.array(imp)), torch.from_numpy(np.array(tokens))
  index = su.put(np.arange(len(su.images), dtype=np.int32))
  rows = []
  for rule in rules:
    name, kw = sweep.method_spec(rule, su.config)
    for k in budgets:
      select, _ = aot(jax.jit(lambda i, e, x, k=k: selection.select_batch(
          name, i, e, x, k, su.config.seed, **kw)), imp, tokens, index)
      t_jax = timed(lambda: select(imp, tokens, index))
      t_torch = timed(lambda: torch_select(name, imp_t, tokens_t, k, kw))
      batch = len(su.images)
      rows.append(_row(shape, f"select {rule} K={k}", "img/s", batch / t_jax, batch / t_torch))
      if name == "sage":
        rows.append(_row(shape, f"sage % of server K={k}", "%", 100 * t_jax / server_time[k][0],
                         100 * t_torch / server_time[k][1]))
  return rows


def sweep_rows(su, shape, rules, budgets, n_off, edge_step, edge_out, timed):
  """sage_jax's sweep structure against the reference's on one batch -> (rows, compile rows)."""
  example = su.put(dict(image=su.images[:n_off], index=np.arange(n_off, dtype=np.int32),
                        importance=np.asarray(edge_out["importance"])[:n_off],
                        tokens=np.asarray(edge_out["tokens"])[:n_off],
                        valid=np.ones(n_off, bool)))

  def compiled_steps(methods):
    """-> ((ceiling step, budget step) running the AOT-compiled steps, compile seconds)."""
    ceiling_step, budget_step = sweep.make_server_steps(su.server, methods, su.config, su.mesh)
    ceiling, secs = aot(ceiling_step, su.params[1], example["image"])
    known, compiled, seconds = ceiling(su.params[1], example["image"])[1], {}, [secs]
    for k in budgets:
      compiled[k], secs = aot(budget_step, su.params[1], example, known, k)
      seconds.append(secs)
    return (ceiling, lambda p, b, kn, k: compiled[k](p, b, kn)), seconds

  steps, seconds = compiled_steps(rules)
  compiles = [_row(shape, f"compile sweep step {name}", "s", secs)
              for name, secs in zip(["ceiling"] + [f"K={k}" for k in budgets], seconds)]
  specs = [sweep.method_spec(r, su.config) for r in rules]
  t_jax, (_, outs) = timed(lambda: jax_sweep(edge_step, steps, su.params, su.images, n_off,
                                             su.put, budgets), warmup=0, output=True)
  t_torch, (_, rule_seconds, ceiling_seconds) = timed(
      lambda: torch_sweep(*su.torch_models, su.images_t, specs, budgets, n_off), warmup=0,
      output=True)
  batch = len(su.images)
  rows = [_row(shape, f"full sweep {len(rules)}x{len(budgets)}, {n_off}/{batch} off", "img/s",
               batch / t_jax, batch / t_torch),
          _row(shape, "full sweep, server rows run", "rows",
               sum(int(o["fresh"].sum()) for o in outs), len(rules) * len(budgets) * n_off)]
  thresholds = [i for i, (name, _) in enumerate(specs) if name in THRESHOLD_RULES]
  if thresholds:
    steps = compiled_steps([rules[i] for i in thresholds])[0]
    t_jax = timed(lambda: jax_sweep(edge_step, steps, su.params, su.images, n_off, su.put,
                                    budgets), warmup=0)
    t_torch = sum(rule_seconds[i] for i in thresholds) + ceiling_seconds
    rows.append(_row(shape, f"sweep, threshold rules {len(thresholds)}x{len(budgets)}", "img/s",
                     batch / t_jax, batch / t_torch))
  return rows, compiles


def run_shape(shape, config, batch, repeats, warmup, min_seconds, budgets, rules, offload_share,
              peak):
  """Every row for one shape. config: the shape's sweep config (models, rule knobs)."""
  for rule in rules:
    name = sweep.method_spec(rule, config)[0]
    if name not in TORCH_RULES:
      raise ValueError(f"rule {name!r} has no torch reference; allowed: {', '.join(TORCH_RULES)}")
  su = make_setup(config, batch)
  ndev = jax.local_device_count()
  n_off = -(-math.ceil(offload_share * len(su.images)) // ndev) * ndev

  def timed(fn, warmup=warmup, output=False):
    seconds, out = best_run(fn, repeats, warmup, min_seconds)
    return (seconds, out) if output else seconds

  rows, compiles, edge_step, edge_out, server_time = forward_rows(su, shape, budgets, timed, peak)
  rows += selection_rows(su, shape, rules, budgets, edge_out, server_time, timed)
  more_rows, more_compiles = sweep_rows(su, shape, rules, budgets, n_off, edge_step, edge_out,
                                       timed)
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
      config = shape_config(shape)
      config.compute_dtype = compute_dtype
      ks = [int(k) for k in budgets] or list(SHAPES[shape][1])
      rows += run_shape(shape, config, batch, repeats, warmup, min_seconds, ks, rules,
                        offload_share, peak)
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
