"""The selection-and-server step: the all-patch ceiling, then one jitted step per budget
(ascending) that selects with every rule and runs the server only on evidence sets not seen
yet for that image; coverage is computed with the selections (docs/choices.md).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import selection


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


def make_steps(plan, server, mesh=None) -> tuple:
  """-> (ceiling step, budget step), jitted for the plan's rules; the budget step compiles
  once per budget. `known` (sets, pred, finite; [1 + R, B, ...]: the ceiling, then every
  rule at the previous budget) goes through every step: a rule's row whose set equals a
  known one or an earlier rule's at the same budget takes that prediction instead of a
  server row (docs/choices.md). With a mesh each device does this for its own rows. At the
  map budget the step also returns every rule's selection (keep_idx, keep_mask).
  """
  n, r = server.num_patches, len(plan.rules)
  cells = jnp.asarray(coverage_cells(n, plan.coverage_grid))
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
               coverage=coverage(keep_idx, keep_mask, cells, n_cells), finite=finite,
               fresh=fresh)
    if "on_item" in batch:  # sent patches on the item's box (datasets with boxes)
      out["on_item"] = (sets & batch["on_item"][None]).sum(-1).astype(jnp.int32)
    if budget == plan.report.map_budget:
      out.update(keep_idx=keep_idx, keep_mask=keep_mask)
    keep = lambda old, new: jnp.concatenate([old[:1], new])
    return out, dict(sets=keep(known["sets"], sets), pred=keep(known["pred"], pred),
                     finite=keep(known["finite"], finite))

  step = budget_step if mesh is None else _per_device(budget_step, mesh, plan.report.map_budget)
  return ceiling_step, jax.jit(step, static_argnums=3)


def _per_device(budget_step, mesh, map_budget):
  """The budget step under shard_map: every device checks and runs its own rows of the
  batch; no row crosses devices."""
  P = jax.sharding.PartitionSpec
  rows = P(None, "batch")
  known_spec = dict(sets=rows, pred=rows, finite=rows)

  def step(params, batch, known, budget):
    names = ["server_pred", "units", "demand", "coverage", "finite", "fresh"]
    names += ["on_item"] if "on_item" in batch else []
    names += ["keep_idx", "keep_mask"] if budget == map_budget else []
    local = lambda p, b, kn: budget_step(p, b, kn, budget)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch"), known_spec),
                         out_specs=(dict.fromkeys(names, rows), known_spec),
                         check_vma=False)(params, batch, known)
  return step


def run_budgets(steps, server_params, batch, budgets):
  """Ceiling, then every budget in ascending order (so saturated rules repeat the previous
  budget's evidence), chaining what is known; no host round trip in between.
  -> (ceiling, outputs in the order of `budgets`), still on the devices."""
  ceiling, known = steps.ceiling(server_params, batch["image"])
  outs = {}
  for k in sorted(budgets):
    outs[k], known = steps.budget(server_params, batch, known, k)
  return ceiling, [outs[k] for k in budgets]
