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
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import (checkpoints, data, importance, metrics, offload, selection,
                      timing, vit)

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
    if "on_item" in batch:  # sent patches on the item's box (datasets with boxes)
      out["on_item"] = (sets & batch["on_item"][None]).sum(-1).astype(jnp.int32)
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
      names += ["on_item"] if "on_item" in batch else []
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


def _raise_if_not_finite(finite, index, where):
  if not finite.all():
    bad = index[~finite]
    raise ValueError(f"NaN/Inf in {where} for image index {int(bad[0])}"
                     f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")


def uncertainties(pipe: Pipeline, batches, timer=timing.NULL) -> tuple:
  """The edge's uncertainty of every valid image of `batches` (for the fraction gate)
  -> (uncertainties, edge batches run). Each batch is dispatched before the one before it
  is read, as in `evaluate`."""
  out, behind, n = [], None, 0
  batches = iter(batches)
  while True:
    with timer("input_wait"):
      batch = next(batches, None)
    if batch is not None:
      ahead = (batch["valid"],
               pipe.steps.edge(pipe.edge_params, pipe.put(batch["image"]))["uncertainty"])
      n += 1
    if behind is not None:
      with timer("device_wait"):
        out.append(np.asarray(behind[1])[behind[0]])
    if batch is None:
      return np.concatenate(out), n
    behind = ahead


# Keys of `evaluate`'s records that hold selection-map examples, not per-image decisions.
MAP_KEYS = ("map_image", "map_keep_idx", "map_keep_mask")
SMALL = ("pred", "uncertainty", "finite", "attn_entropy")  # what the host needs of the edge


def _regroup_fns(pipe: Pipeline):
  """Jitted device functions that regroup offloaded rows into server batches in place.

  The buffer holds server_batch_size + batch_size rows: the offloaded rows not yet sent to
  the server, in offload order from row 0, zeros after them (so a last, partial server
  batch is padded with zeros, as the server steps expect).
  """
  s, cap = pipe.plan.server_batch_size, pipe.plan.server_batch_size + pipe.plan.batch_size
  split = jax.sharding.NamedSharding(pipe.mesh, jax.sharding.PartitionSpec("batch"))

  @functools.partial(jax.jit, out_shardings=split)
  def empty(rows):
    return jax.tree.map(lambda x: jnp.zeros((cap,) + x.shape[1:], x.dtype), rows)

  @functools.partial(jax.jit, out_shardings=split, donate_argnums=0)
  def append(buffer, rows, offloaded, count):
    """Writes the offloaded rows of an edge batch after the `count` rows held."""
    pos = jnp.where(offloaded, count + jnp.cumsum(offloaded) - 1, cap)  # cap: dropped
    return jax.tree.map(lambda buf, x: buf.at[pos].set(x, mode="drop"), buffer, rows)

  @functools.partial(jax.jit, out_shardings=(split, split), donate_argnums=0)
  def pop(buffer):
    """-> (the first server_batch_size rows, the buffer without them)."""
    return (jax.tree.map(lambda x: x[:s], buffer),
            jax.tree.map(lambda x: jnp.concatenate([x[s:], jnp.zeros_like(x[:s])]), buffer))

  return empty, append, pop


def _server_calls(fresh: np.ndarray, devices: int) -> int:
  """Server forwards a budget step ran: each device runs ceil(its fresh rows / its batch)."""
  per_device = fresh.reshape(fresh.shape[0], devices, -1)
  return int(np.max(-(-per_device.sum((0, 2)) // per_device.shape[-1])))


def evaluate(pipe: Pipeline, batches, threshold: float, on_images=lambda n: None,
             timer=timing.NULL):
  """Per-image records of the valid images of `batches` (dicts: image, label, index, valid).

  -> (records, counts). Records: index, label, edge_pred, score (the gate's uncertainty),
  offloaded, attn_entropy for every image; off_index, ceiling_pred, and server_pred / units
  / demand / coverage [m, R, nB] for the m offloaded images; map_image (u8, for display) /
  map_keep_idx / map_keep_mask [R, K] of the first report.map_examples offloaded images at
  the map budget. counts: edge_batches, server_batches, server_calls per budget ("ceiling"
  too), server_rows_run and server_rows_all ((rule, budget, image) rows).

  The devices never wait for the host: each edge batch is dispatched before the host reads
  the previous one's few per-image values; the offloaded rows (images, importance, tokens)
  stay on the devices and are regrouped there (`_regroup_fns`); each server batch's
  outputs are read after the next one is dispatched.
  """
  plan, steps = pipe.plan, pipe.steps
  s, devices = plan.server_batch_size, pipe.mesh.devices.size
  empty, append, pop = _regroup_fns(pipe)
  per_off = ("server_pred", "units", "demand", "coverage")  # [m, R, nB]
  if plan.boxes:  # sent patches on the item, and the item's patches, per offloaded image
    per_off += ("on_item",)
  records = {k: [] for k in ("index", "label", "edge_pred", "score", "offloaded", "attn_entropy",
                             "off_index", "ceiling_pred") + per_off + MAP_KEYS
             + (("item_patches",) if plan.boxes else ())}
  counts = dict(edge_batches=0, server_batches=0, server_rows_run=0, server_rows_all=0,
                server_calls=dict.fromkeys(["ceiling"] + [str(k) for k in plan.budgets], 0))
  state = dict(buffer=None, held=0, queue=[], map_left=plan.report.map_examples)

  def read_edge(batch, rows, out):
    """The host's part of an edge batch: its records, then its offloaded rows to the buffer."""
    with timer("device_wait"):
      small = jax.device_get({k: out[k] for k in SMALL})
    v = batch["valid"]
    _raise_if_not_finite(small["finite"][v], batch["index"][v], "the input or the edge output")
    off = v & (small["uncertainty"] > threshold)
    for k, val in (("index", batch["index"]), ("label", batch["label"]),
                   ("edge_pred", small["pred"]), ("score", small["uncertainty"]),
                   ("offloaded", off), ("attn_entropy", small["attn_entropy"])):
      records[k].append(val[v])
    on_images(int(v.sum() - off.sum()))
    if plan.boxes:
      records["item_patches"].append(batch["on_item"][off].sum(-1).astype(np.int32))
    if off.any():
      if state["buffer"] is None:
        state["buffer"] = empty(rows)
      state["buffer"] = append(state["buffer"], rows, pipe.put(off), state["held"])
      state["held"] += int(off.sum())
      state["queue"].append(batch["index"][off])
      take = np.flatnonzero(off)[:state["map_left"]]
      records["map_image"].append(data.to_uint8(batch["image"][take], plan.dataset))
      state["map_left"] -= len(take)

  def dispatch_server(n_valid):
    """Runs every budget on the first server_batch_size rows held -> what read_server needs."""
    batch, state["buffer"] = pop(state["buffer"])
    valid = np.arange(s) < n_valid
    batch["valid"] = pipe.put(valid)
    queue = np.concatenate(state["queue"])
    state["queue"], state["held"] = [queue[s:]], state["held"] - min(s, state["held"])
    counts["server_batches"] += 1
    return run_budgets(steps, pipe.server_params, batch, plan.budgets), queue[:n_valid], valid

  def read_server(outputs, idx, valid):
    with timer("device_wait"):
      ceiling, outs = jax.device_get(outputs)
    counts["server_calls"]["ceiling"] += 1
    for k, o in zip(plan.budgets, outs):
      counts["server_calls"][str(k)] += _server_calls(o["fresh"], devices)
    counts["server_rows_run"] += sum(int(o["fresh"].sum()) for o in outs)
    counts["server_rows_all"] += len(plan.rules) * len(plan.budgets) * len(idx)
    _raise_if_not_finite(ceiling["finite"][valid], idx, "the server output (all patches)")
    for k, o in zip(plan.budgets, outs):
      _raise_if_not_finite(o["finite"][:, valid].all(0), idx, f"the server output (budget {k})")
    records["off_index"].append(idx)
    records["ceiling_pred"].append(ceiling["pred"][valid])
    for key in per_off:  # [R, S] per budget -> [S, R, nB]
      records[key].append(np.stack([o[key] for o in outs], -1).transpose(1, 0, 2)[valid])
    take = np.arange(len(idx))[:plan.report.map_examples - sum(map(len, records["map_keep_idx"]))]
    at_map = outs[plan.budgets.index(plan.report.map_budget)]
    records["map_keep_idx"].append(at_map["keep_idx"][:, take].transpose(1, 0, 2))
    records["map_keep_mask"].append(at_map["keep_mask"][:, take].transpose(1, 0, 2))
    on_images(len(idx))

  with timer("host"):
    behind, in_flight = None, None  # the edge batch and the server batch not read yet
    batches = iter(batches)
    while True:
      with timer("input_wait"):
        batch = next(batches, None)
      if batch is not None:  # dispatched before the host reads the batch before it
        rows = dict(image=pipe.put(batch["image"]), index=pipe.put(batch["index"]))
        if plan.boxes:
          batch["on_item"] = metrics.box_patches(batch["box"], plan.dataset.image_size,
                                                 plan.patch_size)
          rows["on_item"] = pipe.put(batch["on_item"])
        out = steps.edge(pipe.edge_params, rows["image"])
        rows.update(importance=out["importance"], tokens=out["tokens"])
        counts["edge_batches"] += 1
      if behind is not None:
        read_edge(*behind)
        while state["held"] >= s or (batch is None and state["held"] > 0):
          launched = dispatch_server(min(s, state["held"]))
          if in_flight is not None:
            read_server(*in_flight)
          in_flight = launched
      if batch is None:
        break
      behind = (batch, rows, out)
    if in_flight is not None:
      read_server(*in_flight)

  r, nb, k_map = len(plan.rules), len(plan.budgets), plan.report.map_budget
  hw, ch = plan.dataset.image_size, plan.dataset.channels
  empty_shapes = dict(off_index=((0,), np.int32), ceiling_pred=((0,), np.int32),
                      item_patches=((0,), np.int32),
                      coverage=((0, r, nb), np.float32), map_image=((0, hw, hw, ch), np.uint8),
                      map_keep_idx=((0, r, k_map), np.int32),
                      map_keep_mask=((0, r, k_map), bool))
  for k, v in records.items():
    shape, dtype = empty_shapes.get(k, ((0, r, nb), np.int32))
    records[k] = np.concatenate(v) if v else np.zeros(shape, dtype)
  return records, counts
