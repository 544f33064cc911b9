"""The jitted pipeline: edge -> gate -> importance -> selection -> server, on any batches.

`build(plan, models)` places the parameters on the local devices and makes three jitted
steps; `evaluate(pipe, batches, threshold)` runs them over batches from any iterator
(TFDS in the sweep, synthetic arrays in the benchmark) and returns per-image records.

Per edge batch the edge runs once. Offloaded images are gathered into fixed-size server
batches (padded + masked at the end), so the server only ever sees offloaded images and
every step has one static shape. For each server batch the all-patch ceiling runs once,
then one jitted step per budget (ascending) selects with every rule and runs the server
only on the evidence sets it has not seen for that image yet (`make_steps`); each budget
compiles once and nothing returns to the host between budgets.
"""
import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import checkpoints, data, importance, metrics, offload, selection, vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Models(NamedTuple):
  edge: vit.ViT
  edge_params: Any
  server: vit.ViT
  server_params: Any


def load_model(spec, dataset, compute_dtype="float32"):
  """plan.Model -> (model, params), the checkpoint checked against the model first."""
  model = vit.Model(dataset.num_classes, spec.variant, dataset.image_size, DTYPES[compute_dtype])
  params, _ = checkpoints.load_for_model(
      model, spec.checkpoint, dataset.num_classes,
      (dataset.image_size, dataset.image_size, dataset.channels))
  return model, params


def load_models(plan) -> Models:
  return Models(*load_model(plan.edge, plan.dataset, plan.compute_dtype),
                *load_model(plan.server, plan.dataset, plan.compute_dtype))


class Steps(NamedTuple):
  edge: Callable     # (edge params, images) -> per-image edge outputs
  ceiling: Callable  # (server params, images) -> (ceiling outputs, known evidence)
  budget: Callable   # (server params, batch, known, budget) -> (outputs, known)


def make_edge_step(model, importances, measure_name):
  """importances: score names, the first one the default (attention entropy)."""
  score_fns = {name: jax.vmap(importance.get(name)) for name in importances}
  measure = offload.get_measure(measure_name)

  @jax.jit
  def edge_step(params, images):
    logits, out = model.apply({"params": params}, images)
    finite = jnp.isfinite(images).all((1, 2, 3)) & jnp.isfinite(logits).all(-1)
    imp = {name: fn(out) for name, fn in score_fns.items()}
    default = imp[importances[0]]
    # Entropy of the importance distribution (bits): low = attention on few patches.
    attn_entropy = -(default * jnp.log2(jnp.maximum(default, 1e-30))).sum(-1)
    return dict(pred=logits.argmax(-1).astype(jnp.int32), uncertainty=measure(logits),
                importance=imp, tokens=out["tokens"], finite=finite, attn_entropy=attn_entropy)
  return edge_step


def evidence_sets(keep_idx, keep_mask, n: int):
  """bool[..., N]: the patches each selection sends. Order and padding are forgotten, so the
  same evidence compares equal whichever rule or budget chose it."""
  lead, k = keep_idx.shape[:-1], keep_idx.shape[-1]
  rows = jnp.arange(math.prod(lead))[:, None]
  sets = jnp.zeros((rows.shape[0], n), bool).at[rows, keep_idx.reshape(-1, k)].max(
      keep_mask.reshape(-1, k))
  return sets.reshape(lead + (n,))


def _first_match(sets, known):
  """For each row of sets [R, B, N]: the first equal set among known [P, B, N] and the rows
  before it, else itself -> (source i32[R, B] into concat(known, sets), fresh bool[R, B])."""
  r, p = sets.shape[0], known.shape[0]
  cand = jnp.concatenate([known, sets])
  hit = (sets[:, None] == cand[None]).all(-1)                           # [R, P + R, B]
  hit &= (jnp.arange(p + r)[None, :] < p + jnp.arange(r)[:, None])[..., None]
  fresh = ~hit.any(1)
  return jnp.where(fresh, p + jnp.arange(r)[:, None], hit.argmax(1)), fresh


def _forward_fresh(forward, images, keep_idx, keep_mask, fresh):
  """Server predictions for the rows marked fresh only: [R, B] rows are compacted (fresh
  first) and run B at a time, as many chunks as there are fresh rows.

  -> (pred i32[R, B], finite bool[R, B]); rows not fresh hold junk."""
  r, b = fresh.shape
  flat = lambda x: x.reshape((r * b,) + x.shape[2:])
  keep_idx, keep_mask, order = flat(keep_idx), flat(keep_mask), jnp.argsort(~fresh.ravel(),
                                                                             stable=True)

  def chunk(i, acc):
    rows = jax.lax.dynamic_slice_in_dim(order, i * b, b)
    logits = forward(images[rows % b], keep_idx[rows], keep_mask[rows])
    return (acc[0].at[rows].set(logits.argmax(-1).astype(jnp.int32)),
            acc[1].at[rows].set(jnp.isfinite(logits).all(-1)))

  n_chunks = (fresh.sum() + b - 1) // b
  acc = (jnp.zeros(r * b, jnp.int32), jnp.ones(r * b, bool))
  pred, finite = jax.lax.fori_loop(0, n_chunks, chunk, acc)
  return pred.reshape(r, b), finite.reshape(r, b)


def make_steps(plan, edge, server, mesh=None) -> Steps:
  """Jitted steps for the plan's rules; the budget step compiles once per budget.

  The server sees each distinct evidence set of an image once. `known` (sets, pred, finite;
  [1 + R, B, ...]: the all-patch ceiling, then every rule at the previous budget) goes from
  the ceiling step into each budget step and out of it; a rule's row whose set equals a known
  one or an earlier rule's row at the same budget (a saturated threshold rule, top-K =
  threshold below the threshold's demand, any rule at K = N) takes that prediction instead
  of running the server. Only padding rows and the order of the patches differ in those
  repeats, so this changes nothing but the last bits of the logits. With a mesh each device
  does this for its own slice of the batch (shard_map), so no rows cross devices. At the
  map budget the step also returns every rule's selection (keep_idx, keep_mask).
  """
  n, r = server.num_patches, len(plan.rules)
  cells = jnp.asarray(metrics.coverage_cells(n, plan.coverage_grid))
  n_cells = plan.coverage_grid ** 2

  @jax.jit
  def ceiling_step(params, images):
    logits = server.apply({"params": params}, images, logits_only=True)[0]
    pred, finite = logits.argmax(-1).astype(jnp.int32), jnp.isfinite(logits).all(-1)
    b = images.shape[0]
    known = dict(sets=jnp.zeros((1 + r, b, n), bool).at[0].set(True),
                 pred=jnp.zeros((1 + r, b), jnp.int32).at[0].set(pred),
                 finite=jnp.ones((1 + r, b), bool).at[0].set(finite))
    return dict(pred=pred, finite=finite), known

  def budget_step(params, batch, known, budget):
    sels = [selection.select_batch(rule.name, batch["importance"][rule.importance],
                                   batch["tokens"], batch["index"], budget, plan.seed,
                                   **rule.kwargs) for rule in plan.rules]
    keep_idx = jnp.stack([s.keep_idx for s in sels])                    # [R, B, K]
    keep_mask = jnp.stack([s.keep_mask for s in sels])
    sets = evidence_sets(keep_idx, keep_mask, n)
    source, fresh = _first_match(sets, known["sets"])
    fresh &= batch["valid"][None]  # padding rows of the last server batch: never run
    forward = lambda x, idx, mask: server.apply({"params": params}, x, idx, mask, True)[0]
    pred, finite = _forward_fresh(forward, batch["image"], keep_idx, keep_mask, fresh)
    pick = lambda old, new: jnp.take_along_axis(jnp.concatenate([old, new]), source, 0)
    pred, finite = pick(known["pred"], pred), pick(known["finite"], finite)
    out = dict(server_pred=pred, units=keep_mask.sum(-1).astype(jnp.int32),
               demand=jnp.stack([s.demand for s in sels]).astype(jnp.int32),
               coverage=metrics.coverage(keep_idx, keep_mask, cells, n_cells), finite=finite,
               fresh=fresh)
    if budget == plan.report.map_budget:
      out.update(keep_idx=keep_idx, keep_mask=keep_mask)
    keep = lambda old, new: jnp.concatenate([old[:1], new])
    return out, dict(sets=keep(known["sets"], sets), pred=keep(known["pred"], pred),
                     finite=keep(known["finite"], finite))

  step = budget_step
  if mesh is not None:  # every device checks and runs its own rows; no row crosses devices
    P = jax.sharding.PartitionSpec
    rows = P(None, "batch")
    known_spec = dict(sets=rows, pred=rows, finite=rows)

    def step(params, batch, known, budget):
      names = ["server_pred", "units", "demand", "coverage", "finite", "fresh"]
      names += ["keep_idx", "keep_mask"] if budget == plan.report.map_budget else []
      local = lambda p, b, kn: budget_step(p, b, kn, budget)
      return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch"), known_spec),
                           out_specs=(dict.fromkeys(names, rows), known_spec),
                           check_vma=False)(params, batch, known)

  edge_step = make_edge_step(edge, plan.importances, plan.gate.measure)
  return Steps(edge_step, ceiling_step, jax.jit(step, static_argnums=3))


def run_budgets(steps: Steps, server_params, batch, budgets):
  """Ceiling, then every budget in ascending order (so saturated rules repeat the previous
  budget's evidence), chaining what is known; no host round trip in between.
  -> (ceiling, outputs in the order of `budgets`), still on the devices."""
  ceiling, known = steps.ceiling(server_params, batch["image"])
  outs = {}
  for k in sorted(budgets):
    outs[k], known = steps.budget(server_params, batch, known, k)
  return ceiling, [outs[k] for k in budgets]


class Pipeline(NamedTuple):
  """What a sweep runs: the plan (batch sizes fitted to the devices), the jitted steps,
  the parameters on the devices, and `put` (numpy tree -> devices, split over the batch)."""
  plan: Any
  steps: Steps
  edge_params: Any
  server_params: Any
  put: Callable
  mesh: Any


def build(plan, models: Models) -> Pipeline:
  """Data parallelism over the local devices: a 1-d mesh ("batch"), batches split along it,
  params replicated; batch sizes rounded up to a multiple of the device count (results do
  not depend on batch sizes)."""
  devices = jax.local_devices()
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
  up = lambda size: -(-size // len(devices)) * len(devices)
  plan = dataclasses.replace(plan, batch_size=up(plan.batch_size),
                             server_batch_size=up(plan.server_batch_size))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  steps = make_steps(plan, models.edge, models.server, mesh)
  return Pipeline(plan, steps, jax.device_put(models.edge_params, replicated),
                  jax.device_put(models.server_params, replicated),
                  lambda tree: jax.device_put(tree, split), mesh)


def _rebatch(parts, size):
  """Concatenates row trees and cuts them into full batches of `size` (the last padded).

  Yields (batch, valid bool[size]).
  """
  merged = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  n = len(merged["index"])
  for lo in range(0, n, size):
    take = min(size, n - lo)
    batch = jax.tree.map(lambda v: v[lo:lo + take], merged)
    if take < size:
      batch = jax.tree.map(
          lambda v: np.concatenate([v, np.zeros((size - take,) + v.shape[1:], v.dtype)]), batch)
    yield batch, np.arange(size) < take


def _raise_if_not_finite(finite, index, where):
  if not finite.all():
    bad = index[~finite]
    raise ValueError(f"NaN/Inf in {where} for image index {int(bad[0])}"
                     f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")


def uncertainties(pipe: Pipeline, batches) -> np.ndarray:
  """The edge's uncertainty of every valid image of `batches` (for the fraction gate)."""
  out = [np.asarray(pipe.steps.edge(pipe.edge_params, pipe.put(b["image"]))["uncertainty"])
         [b["valid"]] for b in batches]
  return np.concatenate(out)


# Keys of `evaluate`'s records that hold selection-map examples, not per-image decisions.
MAP_KEYS = ("map_image", "map_keep_idx", "map_keep_mask")


def evaluate(pipe: Pipeline, batches, threshold: float, on_images=lambda n: None):
  """Per-image records of the valid images of `batches` (dicts: image, label, index, valid).

  -> (records, (server rows run, (rule, budget, image) rows)). Records: index, label,
  edge_pred, score (the gate's uncertainty), offloaded, attn_entropy for every image;
  off_index, ceiling_pred, and server_pred / units / demand / coverage [m, R, nB] for the m
  offloaded images; map_image (u8, for display) / map_keep_idx / map_keep_mask [R, K] of
  the first report.map_examples offloaded images at the map budget.
  """
  plan, steps = pipe.plan, pipe.steps
  per_image = {k: [] for k in ("index", "label", "edge_pred", "score", "offloaded",
                                "attn_entropy")}
  pending = []
  for batch in batches:
    out = jax.device_get(steps.edge(pipe.edge_params, pipe.put(batch["image"])))
    v = batch["valid"]
    _raise_if_not_finite(out["finite"][v], batch["index"][v], "the input or the edge output")
    off = v & (out["uncertainty"] > threshold)
    for k, val in (("index", batch["index"]), ("label", batch["label"]),
                   ("edge_pred", out["pred"]), ("score", out["uncertainty"]),
                   ("offloaded", off), ("attn_entropy", out["attn_entropy"])):
      per_image[k].append(val[v])
    pending.append(dict(image=batch["image"][off], index=batch["index"][off],
                        importance={k: x[off] for k, x in out["importance"].items()},
                        tokens=out["tokens"][off]))
    on_images(int(v.sum()))
  records = {k: np.concatenate(v) for k, v in per_image.items()}

  r, nb = len(plan.rules), len(plan.budgets)
  per_off = {k: [] for k in ("off_index", "ceiling_pred", "server_pred", "units", "demand",
                             "coverage") + MAP_KEYS}
  rows_run = rows_all = n_map = 0
  if records["offloaded"].any():
    for sb, valid in _rebatch(pending, plan.server_batch_size):
      sb["valid"] = valid
      ceiling, outs = jax.device_get(run_budgets(steps, pipe.server_params, pipe.put(sb),
                                                 plan.budgets))
      rows_run += sum(int(o["fresh"].sum()) for o in outs)
      rows_all += r * nb * int(valid.sum())
      idx = sb["index"][valid]
      _raise_if_not_finite(ceiling["finite"][valid], idx, "the server output (all patches)")
      for k, o in zip(plan.budgets, outs):
        _raise_if_not_finite(o["finite"][:, valid].all(0), idx, f"the server output (budget {k})")
      per_off["off_index"].append(idx)
      per_off["ceiling_pred"].append(ceiling["pred"][valid])
      for key in ("server_pred", "units", "demand", "coverage"):  # [R, S] per budget -> [S, R, nB]
        per_off[key].append(np.stack([o[key] for o in outs], -1).transpose(1, 0, 2)[valid])
      take = np.flatnonzero(valid)[:plan.report.map_examples - n_map]
      at_map = outs[plan.budgets.index(plan.report.map_budget)]
      per_off["map_image"].append(data.to_uint8(sb["image"][take], plan.dataset))
      per_off["map_keep_idx"].append(at_map["keep_idx"][:, take].transpose(1, 0, 2))
      per_off["map_keep_mask"].append(at_map["keep_mask"][:, take].transpose(1, 0, 2))
      n_map += len(take)
  k_map, hw = plan.report.map_budget, plan.dataset.image_size
  empty = dict(off_index=((0,), np.int32), ceiling_pred=((0,), np.int32),
               coverage=((0, r, nb), np.float32),
               map_image=((0, hw, hw, plan.dataset.channels), np.uint8),
               map_keep_idx=((0, r, k_map), np.int32), map_keep_mask=((0, r, k_map), bool))
  for k, v in per_off.items():
    shape, dtype = empty.get(k, ((0, r, nb), np.int32))
    records[k] = np.concatenate(v) if v else np.zeros(shape, dtype)
  return records, (rows_run, rows_all)
