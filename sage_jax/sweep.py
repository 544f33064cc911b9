"""The budget sweep: data -> edge -> gate -> importance -> selection -> server -> records.

Per edge batch the edge runs once (jitted). Offloaded images are gathered into
fixed-size server batches (padded + masked at the end), so the server only
ever sees offloaded images and every step has one static shape. For each
server batch the all-patch ceiling runs once, then one jitted step per budget
evaluates every rule at that budget in a single server call (rules
concatenated along the batch); each budget compiles once.

The sweep returns per-image records; `metrics.summarize` turns them into rows.
"""
import math
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sage_jax import checkpoints, data, importance, metrics, offload, report, selection, vit


def parse_list(value, cast, what):
  """'a,b' / (a, b) -> list, rejecting empties."""
  items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
  try:
    out = [cast(v) for v in items if v != ""]
  except ValueError:
    raise ValueError(f"could not parse {what} {value!r}; expected a comma-separated list") from None
  if not out:
    raise ValueError(f"{what} is empty; give at least one")
  return out


def rule_kwargs(name: str, config) -> dict:
  """Config -> the keyword arguments of rule `name`."""
  r = config.rules
  return {"sage": dict(pool_ratio=r.pool_ratio),
          "threshold": dict(delta=r.threshold_delta),
          "sum_threshold": dict(delta=r.sum_threshold_delta)}.get(name, {})


def load_model(model_cfg, ds_cfg):
  model = vit.Model(ds_cfg.num_classes, model_cfg.variant, ds_cfg.image_size)
  params, meta = checkpoints.load_for_model(
      model, model_cfg.checkpoint, ds_cfg.num_classes,
      (ds_cfg.image_size, ds_cfg.image_size, ds_cfg.channels))
  return model, params, meta


def make_edge_step(model, score_name, measure_name):
  score_fn = jax.vmap(importance.get_score(score_name))
  measure = offload.get_measure(measure_name)

  @jax.jit
  def edge_step(params, images):
    logits, out = model.apply({"params": params}, images)
    return dict(pred=logits.argmax(-1).astype(jnp.int32), score=measure(logits),
                importance=score_fn(out["attns"]), tokens=out["tokens"])
  return edge_step


def make_server_steps(model, methods, budgets, config):
  """-> (ceiling_step, budget_step): jitted; budget_step compiles once per budget."""

  @jax.jit
  def ceiling_step(params, images):
    return model.apply({"params": params}, images)[0].argmax(-1).astype(jnp.int32)

  def budget_step(params, batch, budget):
    sels = [selection.select_batch(m, batch["importance"], batch["tokens"], batch["index"],
                                   budget, config.seed, **rule_kwargs(m, config))
            for m in methods]
    r, b = len(methods), batch["image"].shape[0]
    cat = lambda xs: jnp.concatenate(xs, axis=0)
    images = jnp.broadcast_to(batch["image"][None], (r,) + batch["image"].shape)
    logits, _ = model.apply({"params": params}, images.reshape((r * b,) + images.shape[2:]),
                            cat([s.keep_idx for s in sels]), cat([s.keep_mask for s in sels]))
    return dict(server_pred=logits.argmax(-1).astype(jnp.int32).reshape(r, b),
                units=jnp.stack([s.keep_mask.sum(-1) for s in sels]).astype(jnp.int32),
                demand=jnp.stack([s.demand for s in sels]).astype(jnp.int32))

  return ceiling_step, jax.jit(budget_step, static_argnums=2)


class _Rebatcher:
  """Collects offloaded rows and releases them as full, fixed-size batches."""

  def __init__(self, size):
    self.size, self.parts = size, []

  def add(self, rows):
    if len(rows["index"]):
      self.parts.append(rows)

  def pop(self, final=False):
    """Yields full batches; with final=True also the padded remainder."""
    n = sum(len(p["index"]) for p in self.parts)
    while n >= self.size or (final and n > 0):
      merged = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
      take = min(self.size, n)
      batch = {k: v[:take] for k, v in merged.items()}
      self.parts = [{k: v[take:] for k, v in merged.items()}] if n > take else []
      n -= take
      valid = np.arange(self.size) < take
      if take < self.size:
        batch = {k: np.concatenate([v, np.zeros((self.size - take,) + v.shape[1:], v.dtype)])
                 for k, v in batch.items()}
      yield batch, valid


def gate_threshold(config, edge_step, edge_params, n_images) -> float:
  gate = config.gate
  if gate.measure != "fraction":
    return offload.threshold_for(gate)
  # Offloading a fixed share needs every image's score first: one extra edge pass.
  scores = []
  for batch in data.eval_batches(config.dataset, config.batch_size, n_images):
    s = np.asarray(edge_step(edge_params, batch["image"])["score"])
    scores.append(s[batch["valid"]])
  return offload.calibrate_fraction(np.concatenate(scores), gate.fraction)


def evaluate(config, edge, server, methods, budgets, progress=True) -> dict:
  """Runs the sweep; returns per-image records (numpy arrays, dataset order).

  edge/server: (model, params). Records: index, label, edge_pred, score,
  offloaded for every image; off_index, ceiling_pred, server_pred[m, R, nB],
  units[m, R, nB], demand[m, R, nB] for the m offloaded images.
  """
  (edge_model, edge_params), (server_model, server_params) = edge, server
  n_images = data.num_examples(config.dataset, config.num_images)
  edge_step = make_edge_step(edge_model, config.importance, config.gate.measure)
  ceiling_step, budget_step = make_server_steps(server_model, methods, budgets, config)
  thr = gate_threshold(config, edge_step, edge_params, config.num_images)

  per_image = {k: [] for k in ("index", "label", "edge_pred", "score", "offloaded")}
  per_off = {k: [] for k in ("off_index", "ceiling_pred", "server_pred", "units", "demand")}
  rebatch = _Rebatcher(config.server_batch_size)

  def run_server(final=False):
    for sb, valid in rebatch.pop(final):
      outs = [budget_step(server_params, sb, k) for k in budgets]
      per_off["off_index"].append(sb["index"][valid])
      per_off["ceiling_pred"].append(np.asarray(ceiling_step(server_params, sb["image"]))[valid])
      for key in ("server_pred", "units", "demand"):
        # [R, S] per budget -> [S, R, nB]
        per_off[key].append(np.stack([np.asarray(o[key]) for o in outs], -1).transpose(1, 0, 2)[valid])

  batches = data.eval_batches(config.dataset, config.batch_size, config.num_images)
  for batch in tqdm(batches, total=math.ceil(n_images / config.batch_size), disable=not progress,
                    desc="sweep", unit="batch"):
    out = jax.device_get(edge_step(edge_params, batch["image"]))
    v = batch["valid"]
    off = v & (out["score"] > thr)
    for k, val in (("index", batch["index"]), ("label", batch["label"]),
                   ("edge_pred", out["pred"]), ("score", out["score"]), ("offloaded", off)):
      per_image[k].append(val[v])
    rebatch.add(dict(image=batch["image"][off], index=batch["index"][off],
                     importance=out["importance"][off], tokens=out["tokens"][off]))
    run_server()
  run_server(final=True)

  records = {k: np.concatenate(v) for k, v in per_image.items()}
  shapes = dict(off_index=(0,), ceiling_pred=(0,), server_pred=(0, len(methods), len(budgets)))
  for k, v in per_off.items():
    records[k] = np.concatenate(v) if v else np.zeros(shapes.get(k, shapes["server_pred"]), np.int32)
  records["threshold"] = np.float64(thr)
  return records


def run(config, workdir: str) -> list:
  """Main job: sweep every (rule, budget) and write results.{csv,json} + curves.png."""
  t0 = time.time()
  methods = parse_list(config.methods, str, "methods")
  for m in methods:
    selection.get_rule(m)
  budgets = parse_list(config.budgets, int, "budgets")
  ds = config.dataset
  edge = load_model(config.edge, ds)[:2]
  server = load_model(config.server, ds)[:2]
  n = edge[0].num_patches
  if server[0].num_patches != n:
    raise ValueError(f"edge has {n} patches per image, server {server[0].num_patches}")
  for b in budgets:
    if not 1 <= b <= n:
      raise ValueError(f"budget {b} is out of range; allowed: 1..{n} (patches per image)")
  os.makedirs(workdir, exist_ok=True)
  records = evaluate(config, edge, server, methods, budgets)
  bits = config.bits_per_unit
  if bits < 0:
    p = edge[0].patch_size
    bits = 8 * p * p * ds.channels + math.ceil(math.log2(n))
  rows = metrics.summarize(records, methods, budgets, n, bits)
  report.write_all(rows, workdir, records)
  logging.info("sweep finished in %.1f s", time.time() - t0)
  print(report.format_table(rows))
  print(f"wrote {workdir}/results.csv, results.json, curves.png ({time.time() - t0:.1f} s)")
  return rows
