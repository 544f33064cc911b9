"""The budget sweep: data -> edge -> gate -> importance -> selection -> server -> records.

Per edge batch the edge runs once (jitted). Offloaded images are gathered into
fixed-size server batches (padded + masked at the end), so the server only
ever sees offloaded images and every step has one static shape. For each
server batch the all-patch ceiling runs once, then one jitted step per budget
(ascending) selects with every rule and runs the server only on the evidence
sets it has not seen for that image yet (`make_server_steps`); each budget
compiles once and nothing returns to the host between budgets.

The sweep returns per-image records; `metrics.summarize` turns them into rows.
"""
import io
import math
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sage_jax import channel, checkpoints, data, importance, metrics, offload, report
from sage_jax import selection, vit
from sage_jax import workdir as workdir_lib


def parse_list(value, cast, what):
  """'a,b' / (a, b) -> list; rejects empty lists and repeats."""
  items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
  try:
    out = [cast(v) for v in items if v != ""]
  except ValueError:
    raise ValueError(f"could not parse {what} {value!r}; expected a comma-separated list") from None
  if not out:
    raise ValueError(f"{what} is empty; give at least one")
  repeated = sorted({v for v in out if out.count(v) > 1})
  if repeated:
    raise ValueError(f"{what} {value!r} repeats {repeated}; give each once")
  return out


def _require(ok: bool, name: str, value, allowed: str):
  if not ok:
    raise ValueError(f"{name} {value!r} is not allowed; {allowed}")


def validate(config) -> None:
  """Checks every config value the sweep uses, before any model or data is loaded."""
  for m in config_methods(config):
    method_spec(m, config)
  parse_list(config.budgets, int, "budgets")
  importance.get_score(config.importance)
  gate = config.gate
  offload.get_measure(gate.measure)
  if gate.measure == "margin":
    _require(0 <= gate.eta <= 1, "gate.eta", gate.eta, "a margin threshold is in [0, 1]")
  else:
    _require(gate.eta >= 0, "gate.eta", gate.eta, "it must be >= 0 (bits)")
  _require(0 <= gate.fraction <= 1, "gate.fraction", gate.fraction, "it must be in [0, 1]")
  _require(config.rules.pool_ratio > 0, "rules.pool_ratio", config.rules.pool_ratio,
           "it must be > 0")
  _require(config.rules.sum_threshold_delta > 0, "rules.sum_threshold_delta",
           config.rules.sum_threshold_delta, "it must be > 0")
  _require(config.num_images == -1 or config.num_images > 0, "num_images", config.num_images,
           "give a positive count or -1 (all)")
  for name in ("batch_size", "server_batch_size", "chunk_size"):
    _require(config[name] > 0, name, config[name], "it must be > 0")
  _require(config.compute_dtype in DTYPES, "compute_dtype", config.compute_dtype,
           f"allowed: {', '.join(DTYPES)}")
  rates = report.channel_rates(config.report.rates)
  _require(config.report.channel in rates, "report.channel", config.report.channel,
           f"allowed: {', '.join(rates)}")


# The parameter a method spec "rule@value" sets (e.g. "swap@0.5", "sage@4").
PRIMARY_PARAM = {"sage": "pool_ratio", "swap": "swap_frac", "bat": "attentive_frac",
                 "threshold": "delta", "sum_threshold": "delta"}


def method_spec(spec: str, config):
  """'rule' or 'rule@value' -> (rule name, keyword arguments from the config + value)."""
  name, _, value = spec.partition("@")
  selection.get_rule(name)
  r = config.rules
  kwargs = {"sage": dict(pool_ratio=r.pool_ratio),
            "threshold": dict(delta=r.threshold_delta),
            "sum_threshold": dict(delta=r.sum_threshold_delta),
            "swap": dict(swap_frac=r.swap_frac),
            "bat": dict(attentive_frac=r.bat_attentive_frac, iters=r.bat_iters)}.get(name, {})
  if value:
    if name not in PRIMARY_PARAM:
      raise ValueError(f"method {spec!r}: rule {name!r} takes no @value; rules that do: "
                       f"{', '.join(f'{k}@{v}' for k, v in PRIMARY_PARAM.items())}")
    try:
      kwargs[PRIMARY_PARAM[name]] = float(value)
    except ValueError:
      raise ValueError(f"method {spec!r}: {value!r} is not a number") from None
  return name, kwargs


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_model(model_cfg, ds_cfg, compute_dtype="float32"):
  model = vit.Model(ds_cfg.num_classes, model_cfg.variant, ds_cfg.image_size,
                    DTYPES[compute_dtype])
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
    finite = jnp.isfinite(images).all((1, 2, 3)) & jnp.isfinite(logits).all(-1)
    imp = score_fn(out["attns"])
    # Entropy of the importance distribution (bits): low = attention on few patches.
    attn_entropy = -(imp * jnp.log2(jnp.maximum(imp, 1e-30))).sum(-1)
    return dict(pred=logits.argmax(-1).astype(jnp.int32), score=measure(logits),
                importance=imp, tokens=out["tokens"], finite=finite, attn_entropy=attn_entropy)
  return edge_step


def coverage_cells(num_patches: int, coarse: int) -> np.ndarray:
  """i32[N]: the cell of a coarse x coarse grid that each patch of the square patch grid lies in."""
  g = math.isqrt(num_patches)
  r, c = np.divmod(np.arange(num_patches), g)
  return (r * coarse // g * coarse + c * coarse // g).astype(np.int32)


def coverage(keep_idx, keep_mask, cells, n_cells: int):
  """Share of coarse cells holding a sent patch. keep_idx i32[..., K], keep_mask bool[..., K],
  cells i32[N] (coverage_cells) -> f32[...]."""
  hit = (jax.nn.one_hot(cells[keep_idx], n_cells) * keep_mask[..., None]).max(-2)
  return hit.sum(-1) / n_cells


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


def make_server_steps(model, methods, config, mesh=None):
  """-> (ceiling_step, budget_step), jitted; budget_step compiles once per budget.

  The server sees each distinct evidence set of an image once. `known` (sets, pred, finite;
  [1 + R, B, ...]: the all-patch ceiling, then every rule at the previous budget) goes from
  ceiling_step into each budget_step and out of it; a rule's row whose set equals a known
  one or an earlier rule's row at the same budget (a saturated threshold rule, top-K =
  threshold below the threshold's demand, any rule at K = N) takes that prediction instead
  of running the server. Only padding rows and the order of the patches differ in those
  repeats, so this changes nothing but the last bits of the logits. With a mesh each device
  does this for its own slice of the batch (shard_map), so no rows cross devices.
  """
  specs = [method_spec(m, config) for m in methods]
  n, r = model.num_patches, len(specs)
  cells = jnp.asarray(coverage_cells(n, config.coverage_grid))
  n_cells = config.coverage_grid ** 2

  @jax.jit
  def ceiling_step(params, images):
    logits = model.apply({"params": params}, images, logits_only=True)[0]
    pred, finite = logits.argmax(-1).astype(jnp.int32), jnp.isfinite(logits).all(-1)
    b = images.shape[0]
    known = dict(sets=jnp.zeros((1 + r, b, n), bool).at[0].set(True),
                 pred=jnp.zeros((1 + r, b), jnp.int32).at[0].set(pred),
                 finite=jnp.ones((1 + r, b), bool).at[0].set(finite))
    return dict(pred=pred, finite=finite), known

  def budget_step(params, batch, known, budget):
    sels = [selection.select_batch(name, batch["importance"], batch["tokens"], batch["index"],
                                   budget, config.seed, **kw) for name, kw in specs]
    keep_idx = jnp.stack([s.keep_idx for s in sels])                    # [R, B, K]
    keep_mask = jnp.stack([s.keep_mask for s in sels])
    sets = evidence_sets(keep_idx, keep_mask, n)
    source, fresh = _first_match(sets, known["sets"])
    fresh &= batch["valid"][None]  # padding rows of the last server batch: never run
    forward = lambda x, idx, mask: model.apply({"params": params}, x, idx, mask, True)[0]
    pred, finite = _forward_fresh(forward, batch["image"], keep_idx, keep_mask, fresh)
    pick = lambda old, new: jnp.take_along_axis(jnp.concatenate([old, new]), source, 0)
    pred, finite = pick(known["pred"], pred), pick(known["finite"], finite)
    out = dict(server_pred=pred, units=keep_mask.sum(-1).astype(jnp.int32),
               demand=jnp.stack([s.demand for s in sels]).astype(jnp.int32),
               coverage=coverage(keep_idx, keep_mask, cells, n_cells), finite=finite,
               fresh=fresh)
    keep = lambda old, new: jnp.concatenate([old[:1], new])
    return out, dict(sets=keep(known["sets"], sets), pred=keep(known["pred"], pred),
                     finite=keep(known["finite"], finite))

  step = budget_step
  if mesh is not None:  # every device checks and runs its own rows; no row crosses devices
    P = jax.sharding.PartitionSpec
    rows = P(None, "batch")
    known_spec = dict(sets=rows, pred=rows, finite=rows)
    out_spec = dict.fromkeys(("server_pred", "units", "demand", "coverage", "finite", "fresh"),
                             rows)

    def step(params, batch, known, budget):
      local = lambda p, b, kn: budget_step(p, b, kn, budget)
      return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch"), known_spec),
                           out_specs=(out_spec, known_spec), check_vma=False)(params, batch, known)

  return ceiling_step, jax.jit(step, static_argnums=3)


def _rebatch(parts, size):
  """Concatenates row dicts and cuts them into full batches of `size` (the last padded).

  Yields (batch, valid bool[size]).
  """
  merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  n = len(merged["index"])
  for lo in range(0, n, size):
    take = min(size, n - lo)
    batch = {k: v[lo:lo + take] for k, v in merged.items()}
    if take < size:
      batch = {k: np.concatenate([v, np.zeros((size - take,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    yield batch, np.arange(size) < take


def data_parallel(config):
  """Data parallelism over the local devices: a 1-d mesh ("batch"), batches split along it,
  params replicated; batch sizes rounded up to a multiple of the device count (results do
  not depend on batch sizes). -> (config with those sizes, put_batch, put_params, mesh)."""
  devices = jax.local_devices()
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
  config = config.copy_and_resolve_references()
  for name in ("batch_size", "server_batch_size"):
    config[name] = -(-config[name] // len(devices)) * len(devices)
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return (config, lambda tree: jax.device_put(tree, split),
          lambda tree: jax.device_put(tree, replicated), mesh)


def run_budgets(ceiling_step, budget_step, server_params, batch, budgets):
  """Ceiling, then every budget in ascending order (so saturated rules repeat the previous
  budget's evidence), chaining what is known; no host round trip in between.
  -> (ceiling, outputs in the order of `budgets`), still on the devices."""
  ceiling, known = ceiling_step(server_params, batch["image"])
  outs = {}
  for k in sorted(budgets):
    outs[k], known = budget_step(server_params, batch, known, k)
  return ceiling, [outs[k] for k in budgets]


def _raise_if_not_finite(finite, index, where):
  if not finite.all():
    bad = index[~finite]
    raise ValueError(f"NaN/Inf in {where} for image index {int(bad[0])}"
                     f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")


def gate_threshold(config, edge_step, edge_params, n_images, put=lambda x: x) -> float:
  gate = config.gate
  if gate.measure != "fraction":
    return offload.threshold_for(gate)
  # Offloading a fixed share needs every image's score first: one extra edge pass.
  scores = []
  for batch in data.eval_batches(config.dataset, config.batch_size, 0, n_images):
    s = np.asarray(edge_step(edge_params, put(batch["image"]))["score"])
    scores.append(s[batch["valid"]])
  return offload.calibrate_fraction(np.concatenate(scores), gate.fraction)


def _evaluate_range(start, stop, steps, params, thr, config, methods, budgets, on_batch, put,
                    server_rows):
  """Per-image records for images [start, stop) of the split. server_rows: [rows the server
  ran on, (rule, budget, image) rows], added to."""
  edge_step, ceiling_step, budget_step = steps
  edge_params, server_params = params
  per_image = {k: [] for k in ("index", "label", "edge_pred", "score", "offloaded",
                                "attn_entropy")}
  pending = []
  for batch in data.eval_batches(config.dataset, config.batch_size, start, stop):
    out = jax.device_get(edge_step(edge_params, put(batch["image"])))
    v = batch["valid"]
    _raise_if_not_finite(out["finite"][v], batch["index"][v], "the input or the edge output")
    off = v & (out["score"] > thr)
    for k, val in (("index", batch["index"]), ("label", batch["label"]),
                   ("edge_pred", out["pred"]), ("score", out["score"]), ("offloaded", off),
                   ("attn_entropy", out["attn_entropy"])):
      per_image[k].append(val[v])
    pending.append(dict(image=batch["image"][off], index=batch["index"][off],
                        importance=out["importance"][off], tokens=out["tokens"][off]))
    on_batch(int(v.sum()))
  records = {k: np.concatenate(v) for k, v in per_image.items()}

  per_off = {k: [] for k in ("off_index", "ceiling_pred", "server_pred", "units", "demand",
                             "coverage")}
  if records["offloaded"].any():
    for sb, valid in _rebatch(pending, config.server_batch_size):
      sb["valid"] = valid
      ceiling, outs = jax.device_get(run_budgets(ceiling_step, budget_step, server_params,
                                                 put(sb), budgets))
      server_rows[0] += sum(int(o["fresh"].sum()) for o in outs)
      server_rows[1] += len(methods) * len(budgets) * int(valid.sum())
      idx = sb["index"][valid]
      _raise_if_not_finite(ceiling["finite"][valid], idx, "the server output (all patches)")
      for k, o in zip(budgets, outs):
        _raise_if_not_finite(o["finite"][:, valid].all(0), idx, f"the server output (budget {k})")
      per_off["off_index"].append(idx)
      per_off["ceiling_pred"].append(ceiling["pred"][valid])
      for key in ("server_pred", "units", "demand", "coverage"):  # [R, S] per budget -> [S, R, nB]
        per_off[key].append(np.stack([o[key] for o in outs], -1).transpose(1, 0, 2)[valid])
  empty = dict(off_index=(0,), ceiling_pred=(0,))
  for k, v in per_off.items():
    records[k] = (np.concatenate(v) if v else np.zeros(
        empty.get(k, (0, len(methods), len(budgets))), np.float32 if k == "coverage" else np.int32))
  return records


def gather_chunks(own: dict) -> dict:
  """{chunk id: records} of this process -> those of every process, on every process.

  Records travel as npz bytes through JAX's own collectives (process_allgather), so
  hosts need no shared filesystem.
  """
  if jax.process_count() == 1:
    return own
  from jax.experimental import multihost_utils
  blob = np.frombuffer(workdir_lib.npz_bytes(
      {f"{c}.{k}": v for c, recs in own.items() for k, v in recs.items()}), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([blob.size]))).ravel()
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  out = {}
  for row, size in zip(np.asarray(multihost_utils.process_allgather(padded)), sizes):
    with np.load(io.BytesIO(row[:size].tobytes())) as z:
      for name in z.files:
        c, k = name.split(".", 1)
        out.setdefault(int(c), {})[k] = z[name]
  return out


def evaluate(config, edge, server, methods, budgets, progress=True, workdir=None) -> dict:
  """Runs the sweep; returns per-image records (numpy arrays, dataset order).

  edge/server: (model, params). Records: index, label, edge_pred, score,
  offloaded, attn_entropy for every image; off_index, ceiling_pred, and
  server_pred / units / demand / coverage [m, R, nB] for the m offloaded images; threshold.
  Images go in chunks of config.chunk_size; with a workdir each finished chunk
  is saved and skipped when the run is started again. Batches are split over all
  local devices (`data_parallel`); with several processes, process p takes the
  chunks c with c % process_count == p and every process ends with all records.
  """
  config, put, put_params, mesh = data_parallel(config)
  (edge_model, edge_params), (server_model, server_params) = edge, server
  edge_params, server_params = put_params(edge_params), put_params(server_params)
  n_images = data.num_examples(config.dataset, config.num_images)
  edge_step = make_edge_step(edge_model, config.importance, config.gate.measure)
  steps = (edge_step,) + make_server_steps(server_model, methods, config, mesh)
  thr = gate_threshold(config, edge_step, edge_params, n_images, put)
  starts = list(range(0, n_images, config.chunk_size))
  mine = [c for c in range(len(starts)) if c % jax.process_count() == jax.process_index()]
  own, server_rows = {}, [0, 0]
  total = sum(min(starts[c] + config.chunk_size, n_images) - starts[c] for c in mine)
  with tqdm(total=total, disable=not progress, desc="sweep", unit="img") as bar:
    for c in mine:
      start, stop = starts[c], min(starts[c] + config.chunk_size, n_images)
      recs = workdir_lib.load_chunk(workdir, start, stop) if workdir else None
      if recs is None:
        recs = _evaluate_range(start, stop, steps, (edge_params, server_params), thr, config,
                               methods, budgets, bar.update, put, server_rows)
        if workdir:
          workdir_lib.save_chunk(workdir, start, stop, recs)
      else:
        bar.update(stop - start)
      own[c] = recs
  if server_rows[1]:
    logging.info("server ran on %d of %d (rule, budget, image) rows; the rest repeat evidence "
                 "it had already seen", *server_rows)
  parts = gather_chunks(own)
  records = {k: np.concatenate([parts[c][k] for c in range(len(starts))]) for k in parts[0]}
  records["threshold"] = np.float64(thr)
  return records


def config_methods(config) -> list:
  return parse_list(config.methods, str, "methods")


def prepare(config):
  """Validates the config against the models -> (methods, budgets, edge, server, bits_per_unit)."""
  validate(config)
  methods = config_methods(config)
  ds = config.dataset
  edge = load_model(config.edge, ds, config.compute_dtype)[:2]
  server = load_model(config.server, ds, config.compute_dtype)[:2]
  n = edge[0].num_patches
  if server[0].num_patches != n:
    raise ValueError(f"edge has {n} patches per image, server {server[0].num_patches}")
  bits = config.bits_per_unit
  if bits < 0:  # raw 8-bit pixels of one patch + its index
    bits = channel.bits_per_unit(edge[0].patch_size, ds.channels, 8, n)
  if config.budget_bits:
    budgets = [channel.units_for_bits(b, bits)
               for b in parse_list(config.budget_bits, float, "budget_bits")]
    parse_list(budgets, int, f"budgets from budget_bits {config.budget_bits!r} ({bits} bits/unit)")
  else:
    budgets = parse_list(config.budgets, int, "budgets")
  for b in budgets:
    if not 1 <= b <= n:
      raise ValueError(f"budget {b} is out of range; allowed: 1..{n} (patches per image)")
  return methods, budgets, edge, server, bits


def evaluate_config(config, progress=False) -> dict:
  """Per-image records for a config (validation + models + sweep)."""
  methods, budgets, edge, server, _ = prepare(config)
  return evaluate(config, edge, server, methods, budgets, progress)


def example_selections(config, edge, methods, records, budget, n_examples):
  """What each rule sends for the first offloaded images -> figures.selection_map inputs."""
  want = records["off_index"][:n_examples]
  if not len(want):
    return None
  model, params = edge
  step = make_edge_step(model, config.importance, config.gate.measure)
  got = {}
  for batch in data.eval_batches(config.dataset, config.batch_size, 0, int(want.max()) + 1):
    for row in np.flatnonzero(np.isin(batch["index"], want) & batch["valid"]):
      got[int(batch["index"][row])] = batch["image"][row]
  images = np.stack([got[int(i)] for i in want])
  out = step(params, images)
  sels = [selection.select_batch(name, out["importance"], out["tokens"], jnp.asarray(want),
                                 budget, config.seed, **kw)
          for name, kw in (method_spec(m, config) for m in methods)]
  ds = config.dataset
  display = np.clip(images * np.asarray(ds.std) + np.asarray(ds.mean), 0.0, 1.0)
  keep_idx = np.stack([np.asarray(s.keep_idx) for s in sels], 1)   # [R, M, K]
  keep_mask = np.stack([np.asarray(s.keep_mask) for s in sels], 1)
  return display, keep_idx, keep_mask, list(methods), model.patch_size


def run(config, workdir: str, new_subdir: bool = False, progress: bool = True) -> list:
  """Main job: sweep every (rule, budget); write results, plots and report.md.

  Resumes from the workdir's finished chunks when started again with the same config.
  """
  t0 = time.time()
  methods, budgets, edge, server, bits = prepare(config)
  workdir = workdir_lib.open_workdir(workdir, config, new_subdir)
  records = evaluate(config, edge, server, methods, budgets, progress, workdir)
  if jax.process_index() != 0:  # every process holds every record; process 0 writes
    return []
  n = edge[0].num_patches
  rows = metrics.summarize(records, methods, budgets, n, bits, config.report.n_boot)
  map_budget = min(max(1, config.report.map_budget), n)
  examples = example_selections(config, edge, methods, records, map_budget,
                                config.report.map_examples)
  report.write_all(rows, workdir, records, num_patches=n, bits_per_unit=bits,
                   report_cfg=config.report, examples=examples)
  logging.info("sweep finished in %.1f s", time.time() - t0)
  print(report.format_table(rows))
  print(f"wrote results.csv, results.json, per_image.npz, report.md and plots to {workdir} "
        f"({time.time() - t0:.1f} s)")
  return rows
