"""The host loop: edge step -> gate -> selection-and-server step, over any batches.

`build` places the parameters on the local devices' mesh and makes the jitted steps;
`evaluate` runs them over any batch iterator -> per-image records. Offloaded rows are
regrouped into fixed-size server batches on the devices, and the host reads each step one
behind its dispatch (docs/choices.md, "The sweep").
"""
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.data import input_pipeline
from sage_jax.models import checkpoints
from sage_jax.models import vit
from sage_jax.sweep import compile_cache
from sage_jax.sweep import edge_step
from sage_jax.sweep import server_step
from sage_jax import timing


class ModelPair(NamedTuple):
  edge: vit.ViT
  edge_params: Any
  server: vit.ViT
  server_params: Any


def load_model(spec, dataset, compute_dtype="float32"):
  """plan.ModelSpec -> (model, params), the checkpoint checked against the model first."""
  model = vit.Model(dataset.num_classes, spec.variant, dataset.image_size,
                    vit.COMPUTE_DTYPES[compute_dtype])
  params, _ = checkpoints.load_for_model(
      model, spec.checkpoint, dataset.num_classes,
      (dataset.image_size, dataset.image_size, dataset.channels))
  return model, params


def load_models(plan) -> ModelPair:
  return ModelPair(*load_model(plan.edge, plan.dataset, plan.compute_dtype),
                   *load_model(plan.server, plan.dataset, plan.compute_dtype))


class Steps(NamedTuple):
  edge: Callable     # (edge params, images) -> per-image edge outputs
  ceiling: Callable  # (server params, images) -> (ceiling outputs, known evidence)
  budget: Callable   # (server params, batch, known, budget[, pre]) -> (outputs, known)
  select: Callable = None  # rows -> the slotted rules' picks at every budget (pre)


def make_steps(plan, edge, server, mesh=None) -> Steps:
  """The plan's jitted steps (`edge_step.make_edge_step`, `server_step.make_server_steps`)."""
  return Steps(edge_step.make_edge_step(edge, plan.importances, plan.gate.uncertainty),
               *server_step.make_server_steps(plan, server, mesh))


class Pipeline(NamedTuple):
  """What a sweep runs: the plan (batch sizes fitted to the devices), the jitted steps,
  the parameters on the devices, and `put` (numpy tree -> devices, split over the batch)."""
  plan: Any
  steps: Steps
  edge_params: Any
  server_params: Any
  put: Callable
  mesh: Any
  regroup: tuple = ()  # `_regroup_fns`, made once so every chunk reuses their programs
  programs: Any = None  # the steps through `compile_cache.Program`: what the sweep calls


def build(plan, models: ModelPair) -> Pipeline:
  """Data parallelism over the local devices: a 1-d mesh ("batch"), batches split along it,
  params replicated; batch sizes rounded up to a multiple of the device count (decisions
  match across batch sizes; floats can move by ~1e-6, docs/choices.md). The sweep calls
  the steps through `compile_cache.Program` (`programs`, and the regrouping functions): a
  warm run loads their executables whole; `steps` stay the jitted functions (to lower,
  trace or time them)."""
  devices = jax.local_devices()
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
  up = lambda size: -(-size // len(devices)) * len(devices)
  plan = dataclasses.replace(plan, batch_size=up(plan.batch_size),
                             server_batch_size=up(plan.server_batch_size))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  steps = make_steps(plan, models.edge, models.server, mesh)
  pipe = Pipeline(plan, steps, jax.device_put(models.edge_params, replicated),
                  jax.device_put(models.server_params, replicated),
                  lambda tree: jax.device_put(tree, split), mesh)
  context = functools.cache(lambda: compile_cache.fingerprint(
      _traced_part(plan), models.edge, models.server))
  program = lambda fn, name, static=(): fn and compile_cache.Program(fn, name, context, static)
  return pipe._replace(
      regroup=tuple(program(fn, f"regroup {fn.__name__}") for fn in _regroup_fns(pipe)),
      programs=Steps(program(steps.edge, "edge"), program(steps.ceiling, "ceiling"),
                     program(steps.budget, "budget", (3,)), program(steps.select, "select")))


def _traced_part(plan):
  """The plan less what only the host reads (the images, chunks, gate threshold, checkpoint
  paths, the report's settings but the map budget and the progressive schedule): runs that
  differ only there load the same steps (`compile_cache.fingerprint`)."""
  r = dataclasses.replace
  return r(plan, num_images=0, chunk_size=0, config_json="",
           gate=r(plan.gate, eta=0.0, fraction=0.0), edge=r(plan.edge, checkpoint=""),
           server=r(plan.server, checkpoint=""),
           report=r(plan.report, n_boot=0, channel="", rates=(), map_examples=0, moderate=(),
                    compare_to=(), beyond=None))


def compile_ahead(pipe: Pipeline):
  """Compiles (or loads) every step `evaluate` will call, in its order, from the types its
  arguments will have (each step's outputs type the next one's), so that the sweep itself
  compiles nothing (tests/sweep/test_executables.py) and no compile shares the cores with the
  sweep's computing. Mirrors `evaluate`'s data flow: a change there must be made here too,
  or the sweep compiles again what this compiled (the test says so)."""
  plan, steps = pipe.plan, pipe.programs
  split = jax.sharding.NamedSharding(pipe.mesh, jax.sharding.PartitionSpec("batch"))
  typed = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=split)
  outputs = lambda executable: jax.tree.map(  # without the layouts: the defaults
      lambda o: jax.ShapeDtypeStruct(o.shape, o.dtype, sharding=o.sharding),
      executable.out_info)

  def ready(label, program, *args):
    with timing.labelled(label, *(a for a in args if not isinstance(a, int))):
      return outputs(program.executable(*args))

  b, s, n = plan.batch_size, plan.server_batch_size, plan.num_patches
  side, channels = plan.dataset.image_size, plan.dataset.channels
  rows = dict(image=typed((b, side, side, channels), jnp.float32), index=typed((b,), jnp.int32))
  if plan.boxes:
    rows["on_item"] = typed((b, n), jnp.bool_)
  out = ready("edge", steps.edge, pipe.edge_params, rows["image"])
  rows.update(importance=out["importance"], tokens=out["tokens"], edge_pred=out["pred"])
  empty, append, pop = pipe.regroup
  buffer = ready("regroup empty", empty, rows)
  buffer = ready("regroup append", append, buffer, rows, typed((b,), jnp.bool_), 0)
  batch, _ = ready("regroup pop", pop, buffer)
  batch["valid"] = typed((s,), jnp.bool_)
  _, known = ready("ceiling", steps.ceiling, pipe.server_params, batch["image"])
  pre = None
  if steps.select is not None:
    pre = ready("select", steps.select, {k: batch[k] for k in ("importance", "tokens", "index")})
  for k in sorted(plan.budgets):
    _, known = ready(f"budget K={k}", steps.budget, pipe.server_params, batch, known, k, pre)


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
      images = pipe.put(batch["image"])
      with timing.labelled("edge", images):
        ahead = (batch["valid"], pipe.programs.edge(pipe.edge_params, images)["uncertainty"])
      n += 1
    if behind is not None:
      with timer("device_wait"):
        out.append(np.asarray(behind[1])[behind[0]])
    if batch is None:
      return np.concatenate(out), n
    behind = ahead


# Keys of `evaluate`'s records that hold selection-map examples, not per-image decisions.
MAP_KEYS = ("map_image", "map_keep_idx", "map_keep_mask")
# The stop signals' log-probabilities (float16, offloaded images only): the server's of the
# signal rules at the progressive schedule's budgets, and the edge's.
LOGP_KEYS = ("server_logp", "edge_logp")


def _keeps_logp(plan) -> bool:
  prog = plan.report.progressive
  return bool(prog.signal_rules and prog.schedule)


def log_softmax16(logits) -> np.ndarray:
  """f16[..., C]: log-softmax of f32 logits, computed in float64 on the host (the same
  numbers on every device kind), stored in float16 (probabilities to ~1e-3 relative)."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  return (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float16)


def _regroup_fns(pipe: Pipeline):
  """Jitted device functions that regroup offloaded rows into server batches in place. The
  buffer holds server_batch_size + batch_size rows: the offloaded rows not yet sent, from
  row 0, then zeros (so a last, partial server batch is padded, as the server steps expect).
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


def _server_calls(fresh: np.ndarray, devices: int, conditions: int = 1) -> int:
  """Server forwards a budget step ran: each device runs ceil(its fresh rows / its batch)
  per uplink condition (fresh: [conditions * R, B], condition-major)."""
  per_device = fresh.reshape(conditions, -1, devices, fresh.shape[-1] // devices)
  return int(np.max((-(-per_device.sum((1, 3)) // per_device.shape[-1])).sum(0)))


@dataclasses.dataclass
class _Loop:
  """The host loop's state: what it has recorded and counted, and the offloaded rows held
  on the devices (buffer, how many, their image indices) not yet sent to the server."""
  pipe: Any
  threshold: float
  on_images: Callable
  timer: Any
  records: dict = None
  counts: dict = None
  per_off: tuple = ("server_pred", "units", "demand", "coverage", "server_conf", "kl_full",
                    "units_sent")  # [m, R or U * R, nB]
  buffer: Any = None
  held: int = 0
  queue: list = dataclasses.field(default_factory=list)
  map_left: int = 0
  regroup: tuple = ()

  def __post_init__(self):
    plan = self.pipe.plan
    if plan.boxes:  # sent patches on the item, and the item's patches, per offloaded image
      self.per_off += ("on_item",)
    self.records = {k: [] for k in ("index", "label", "edge_pred", "score", "offloaded",
                                    "attn_entropy", "off_index", "ceiling_pred")
                    + self.per_off + MAP_KEYS + (("item_patches",) if plan.boxes else ())
                    + (LOGP_KEYS if _keeps_logp(plan) else ())}
    self.counts = dict(edge_batches=0, server_batches=0, server_rows_run=0, server_rows_all=0,
                       server_calls=dict.fromkeys(["ceiling"] + [str(k) for k in plan.budgets],
                                                  0))
    self.map_left = plan.report.map_examples
    self.regroup = self.pipe.regroup or _regroup_fns(self.pipe)


def evaluate(pipe: Pipeline, batches, threshold: float, on_images=lambda n: None,
             timer=timing.NULL):
  """Per-image records of the valid images of `batches` (dicts: image, label, index, valid).

  -> (records, counts). Records: index, label, edge_pred, score (the gate's uncertainty),
  offloaded, attn_entropy for every image; off_index, ceiling_pred, units / demand /
  coverage / units_sent (the union of the rule's sets up to this budget) [m, R, nB] and
  server_pred / server_conf (max probability) / kl_full [m, U * R, nB] (U uplink conditions,
  condition-major) for the m offloaded images; with signal rules (report.progressive),
  server_logp f16[m, R_sig, nS, C] (the reference condition, the schedule's budgets) and
  edge_logp f16[m, C], log-softmaxes for the stop signals; map_image (u8, for display) /
  map_keep_idx / map_keep_mask [R, K] of the first report.map_examples offloaded images at
  the map budget. counts: edge_batches, server_batches, server_calls per budget ("ceiling"
  too), server_rows_run and server_rows_all ((rule, budget, image) rows).
  """
  loop, s = _Loop(pipe, threshold, on_images, timer), pipe.plan.server_batch_size
  with timer("host"):
    behind, in_flight = None, None  # the edge batch and the server batch not read yet
    batches = iter(batches)
    while True:
      with timer("input_wait"):
        batch = next(batches, None)
      if batch is not None:  # dispatched before the host reads the batch before it
        ahead = _dispatch_edge(loop, batch)
      if behind is not None:
        _read_edge(loop, *behind)
        while loop.held >= s or (batch is None and loop.held > 0):
          launched = _dispatch_server(loop, min(s, loop.held))
          if in_flight is not None:
            _read_server(loop, *in_flight)
          in_flight = launched
      if batch is None:
        break
      behind = ahead
    if in_flight is not None:
      _read_server(loop, *in_flight)
  return _stacked(pipe.plan, loop.records), loop.counts


def _dispatch_edge(loop: _Loop, batch):
  """Puts an edge batch on the devices and runs the edge step -> what _read_edge needs."""
  pipe, plan = loop.pipe, loop.pipe.plan
  rows = dict(image=pipe.put(batch["image"]), index=pipe.put(batch["index"]))
  if plan.boxes:
    batch["on_item"] = input_pipeline.box_patches(batch["box"], plan.dataset.image_size,
                                                   plan.patch_size)
    rows["on_item"] = pipe.put(batch["on_item"])
  with timing.labelled("edge", rows["image"]):
    out = pipe.programs.edge(pipe.edge_params, rows["image"])
  rows.update(importance=out["importance"], tokens=out["tokens"], edge_pred=out["pred"])
  loop.counts["edge_batches"] += 1
  return batch, rows, out


def _read_edge(loop: _Loop, batch, rows, out):
  """The host's part of an edge batch: its records, then its offloaded rows to the buffer."""
  plan, records = loop.pipe.plan, loop.records
  with loop.timer("device_wait"):
    small = jax.device_get({k: out[k] for k in edge_step.SMALL})
  v = batch["valid"]
  _raise_if_not_finite(small["finite"][v], batch["index"][v], "the input or the edge output")
  off = v & (small["uncertainty"] > loop.threshold)
  for k, val in (("index", batch["index"]), ("label", batch["label"]),
                 ("edge_pred", small["pred"]), ("score", small["uncertainty"]),
                 ("offloaded", off), ("attn_entropy", small["attn_entropy"])):
    records[k].append(val[v])
  loop.on_images(int(v.sum() - off.sum()))
  if plan.boxes:
    records["item_patches"].append(batch["on_item"][off].sum(-1).astype(np.int32))
  if "edge_logp" in records:
    records["edge_logp"].append(log_softmax16(small["logits"][off]))
  if off.any():
    empty, append, _ = loop.regroup
    if loop.buffer is None:
      with timing.labelled("regroup empty", rows):
        loop.buffer = empty(rows)
    with timing.labelled("regroup append", loop.buffer, rows, off, loop.held):
      loop.buffer = append(loop.buffer, rows, loop.pipe.put(off), loop.held)
    loop.held += int(off.sum())
    loop.queue.append(batch["index"][off])
    take = np.flatnonzero(off)[:loop.map_left]
    records["map_image"].append(input_pipeline.to_uint8(batch["image"][take], plan.dataset))
    loop.map_left -= len(take)


def _dispatch_server(loop: _Loop, n_valid: int):
  """Runs every budget on the first server_batch_size rows held -> what _read_server needs."""
  pipe, s = loop.pipe, loop.pipe.plan.server_batch_size
  with timing.labelled("regroup pop", loop.buffer):
    batch, loop.buffer = loop.regroup[2](loop.buffer)
  valid = np.arange(s) < n_valid
  batch["valid"] = pipe.put(valid)
  queue = np.concatenate(loop.queue)
  loop.queue, loop.held = [queue[s:]], loop.held - min(s, loop.held)
  loop.counts["server_batches"] += 1
  outputs = server_step.run_budgets(pipe.programs, pipe.server_params, batch, pipe.plan.budgets)
  return outputs, queue[:n_valid], valid


def _read_server(loop: _Loop, outputs, idx, valid):
  """The host's part of a server batch: checks, counts and the offloaded images' records."""
  plan, records, counts = loop.pipe.plan, loop.records, loop.counts
  with loop.timer("device_wait"):
    ceiling, outs = jax.device_get(outputs)
  counts["server_calls"]["ceiling"] += 1
  for k, o in zip(plan.budgets, outs):
    counts["server_calls"][str(k)] += _server_calls(o["fresh"], loop.pipe.mesh.devices.size,
                                                    len(plan.uplink.conditions))
  counts["server_rows_run"] += sum(int(o["fresh"].sum()) for o in outs)
  counts["server_rows_all"] += (len(plan.uplink.conditions) * len(plan.rules)
                                * len(plan.budgets) * len(idx))
  _raise_if_not_finite(ceiling["finite"][valid], idx, "the server output (all patches)")
  for k, o in zip(plan.budgets, outs):
    _raise_if_not_finite(o["finite"][:, valid].all(0), idx, f"the server output (budget {k})")
  records["off_index"].append(idx)
  records["ceiling_pred"].append(ceiling["pred"][valid])
  for key in loop.per_off:  # [R, S] per budget -> [S, R, nB]
    records[key].append(np.stack([o[key] for o in outs], -1).transpose(1, 0, 2)[valid])
  if "server_logp" in records:  # [R_sig, S, C] per budget of the schedule -> [S, R_sig, nS, C]
    at = dict(zip(plan.budgets, outs))
    logits = np.stack([at[k]["server_logits"] for k in plan.report.progressive.schedule], 1)
    records["server_logp"].append(log_softmax16(logits.transpose(2, 0, 1, 3)[valid]))
  take = np.arange(len(idx))[:plan.report.map_examples - sum(map(len, records["map_keep_idx"]))]
  at_map = outs[plan.budgets.index(plan.report.map_budget)]
  records["map_keep_idx"].append(at_map["keep_idx"][:, take].transpose(1, 0, 2))
  records["map_keep_mask"].append(at_map["keep_mask"][:, take].transpose(1, 0, 2))
  loop.on_images(len(idx))


def _stacked(plan, records) -> dict:
  """Lists of per-batch arrays -> arrays (empty ones of the right shape and dtype)."""
  r, nb, k_map = len(plan.rules), len(plan.budgets), plan.report.map_budget
  ur = len(plan.uplink.conditions) * r
  hw, ch, c = plan.dataset.image_size, plan.dataset.channels, plan.dataset.num_classes
  prog = plan.report.progressive
  empty_shapes = dict(off_index=((0,), np.int32), ceiling_pred=((0,), np.int32),
                      server_logp=((0, len(prog.signal_rules), len(prog.schedule), c),
                                   np.float16),
                      edge_logp=((0, c), np.float16),
                      item_patches=((0,), np.int32),
                      coverage=((0, r, nb), np.float32), map_image=((0, hw, hw, ch), np.uint8),
                      server_pred=((0, ur, nb), np.int32), server_conf=((0, ur, nb), np.float32),
                      kl_full=((0, ur, nb), np.float32), units_sent=((0, r, nb), np.int16),
                      map_keep_idx=((0, r, k_map), np.int32),
                      map_keep_mask=((0, r, k_map), bool))
  for k, v in records.items():
    shape, dtype = empty_shapes.get(k, ((0, r, nb), np.int32))
    records[k] = np.concatenate(v) if v else np.zeros(shape, dtype)
  return records
