"""The selection-and-server step: the all-patch ceiling, then one jitted step per budget
(ascending) that selects with every rule and, for each uplink condition (loss rate, bits per
pixel), runs the server only on evidence sets not seen yet for that image; coverage is
computed with the selections (docs/choices.md).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import rules
from sage_jax.sweep import uplink
from sage_jax import timing


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


def _forward_fresh(forward, images, keep_idx, keep_mask, fresh, num_classes: int):
  """Server logits for the rows marked fresh only: [R, B] rows are compacted (fresh
  first) and run B at a time, as many chunks as there are fresh rows.

  -> f32[R, B, num_classes]; rows not fresh hold junk."""
  r, b = fresh.shape
  flat = lambda x: x.reshape((r * b,) + x.shape[2:])
  keep_idx, keep_mask, order = flat(keep_idx), flat(keep_mask), jnp.argsort(~fresh.ravel(),
                                                                             stable=True)

  def chunk(i, acc):
    rows = jax.lax.dynamic_slice_in_dim(order, i * b, b)
    logits = forward(images[rows % b], keep_idx[rows], keep_mask[rows])
    return acc.at[rows].set(logits.astype(jnp.float32))

  n_chunks = (fresh.sum() + b - 1) // b
  logits = jax.lax.fori_loop(0, n_chunks, chunk, jnp.zeros((r * b, num_classes), jnp.float32))
  return logits.reshape(r, b, num_classes)


def answers(logits, full_logits):
  """What the records keep of server logits [..., C]: the prediction, whether every logit
  is finite, the confidence (max softmax probability) and KL(full || this) in nats, the
  divergence of this softmax from the all-patch one (full_logits, broadcast)."""
  logp, full = jax.nn.log_softmax(logits), jax.nn.log_softmax(full_logits)
  return dict(pred=logits.argmax(-1).astype(jnp.int32), finite=jnp.isfinite(logits).all(-1),
              conf=jnp.exp(logp.max(-1)),  # KL >= 0; float rounding could give -1e-9
              kl=jnp.maximum((jnp.exp(full) * (full - logp)).sum(-1), 0.0))


def make_server_steps(plan, server, mesh=None) -> tuple:
  """-> (ceiling, budget, select step), jitted for the plan's rules; the budget step compiles
  once per budget; the select step (None without slotted rules) picks with the rules'
  traced-budget forms at every budget in one program, passed on as `pre`. `known` goes
  through every step: per uplink condition the evidence sets and server logits [U, 1 + R,
  B, ...] (the ceiling, then every rule at the previous budget), and the units each rule
  has sent so far [R, B, N]. A rule's row whose set equals a known one or an earlier rule's
  at the same budget takes those logits instead of a server row (docs/choices.md). With a
  mesh each device does this for its own rows. At the map budget the step also returns
  every rule's selection (keep_idx, keep_mask); at the progressive schedule's budgets the
  reference condition's server logits of the signal rules (server_logits f32[R_sig, B, C],
  for the stop signals). Outputs of the server are [U * R, B], condition-major; those of
  the selection [R, B].
  """
  n, r = server.num_patches, len(plan.rules)
  conditions = plan.uplink.conditions
  prog = plan.report.progressive
  sig = jnp.asarray([plan.labels.index(label) for label in prog.signal_rules], jnp.int32)
  logit_budgets = frozenset(prog.schedule if prog.signal_rules else ())
  cells = jnp.asarray(coverage_cells(n, plan.coverage_grid))
  n_cells = plan.coverage_grid ** 2

  @jax.jit
  def ceiling_step(params, images):
    logits = server.apply({"params": params}, images, logits_only=True)[0].astype(jnp.float32)
    b, u = images.shape[0], len(conditions)
    # A coarser condition never takes the exact ceiling's answer: its all-patch set is unknown.
    exact = jnp.asarray([bits == 8 for _, bits in conditions])[:, None, None]
    known = dict(sets=jnp.zeros((u, 1 + r, b, n), bool).at[:, 0].set(exact),
                 logits=jnp.zeros((u, 1 + r) + logits.shape, jnp.float32).at[:, 0].set(logits),
                 sent=jnp.zeros((r, b, n), bool))
    return dict(pred=logits.argmax(-1).astype(jnp.int32),
                finite=jnp.isfinite(logits).all(-1)), known

  def budget_step(params, batch, known, budget, pre=None):
    """Select K patches with every rule (pre: the slotted rules' picks, `select_slots`),
    classify each new evidence set on the server under every uplink condition, compare with
    the all-patch answer."""
    if pre is not None:  # [budgets, S, B, ...] -> this budget's
      pre = jax.tree.map(lambda x: x[sorted(plan.budgets).index(budget)], pre)
    keep_idx, keep_mask, demand = select_all(plan, batch, budget, pre)   # [R, B, K]
    sets = evidence_sets(keep_idx, keep_mask, n)                         # bool[R, B, N]
    classify = lambda images, idx, mask: server.apply({"params": params}, images, idx, mask,
                                                      True)[0]
    uniforms = (uplink.unit_uniforms(plan.seed, batch["index"], n)
                if any(p > 0 for p, _ in conditions) else None)
    per_condition = [_condition(classify, batch, keep_idx, keep_mask, sets,
                                {k: known[k][u] for k in ("sets", "logits")}, rate, bits,
                                uniforms, plan.dataset)
                     for u, (rate, bits) in enumerate(conditions)]
    sent = known["sent"] | sets
    out = dict(_selection_records(keep_idx, keep_mask, demand, sets, sent, batch, cells, n_cells),
               **_condition_major([ans for ans, _ in per_condition]))
    if budget == plan.report.map_budget:
      out.update(keep_idx=keep_idx, keep_mask=keep_mask)
    if budget in logit_budgets:
      out["server_logits"] = per_condition[plan.reference][0]["logits"][sig]
    stack = lambda key: jnp.stack([kn[key] for _, kn in per_condition])
    return out, dict(sets=stack("sets"), logits=stack("logits"), sent=sent)

  step = (budget_step if mesh is None else
          _per_device(budget_step, mesh, plan.report.map_budget, logit_budgets))
  return ceiling_step, jax.jit(step, static_argnums=3), _select_step(plan, mesh)


def slotted(plan) -> tuple:
  """Positions in plan.rules of the rules with a traced-budget form (`rules.Rule.slots`)."""
  return tuple(i for i, rule in enumerate(plan.rules) if rules.get_rule(rule.name).slots)


def select_slots(plan, rows, budget):
  """The slotted rules' selections at a traced budget, width max(budgets) ->
  (keep_idx i32[S, B, W], keep_mask bool[S, B, W], demand i32[S, B]). rows: importance,
  tokens, index."""
  width = max(plan.budgets)
  sels = [rules.select_batch_slots(rule.name, rows["importance"][rule.importance],
                                   rows["tokens"], rows["index"], budget, width, plan.seed,
                                   **rule.kwargs)
          for rule in (plan.rules[i] for i in slotted(plan))]
  return (jnp.stack([s.keep_idx for s in sels]), jnp.stack([s.keep_mask for s in sels]),
          jnp.stack([s.demand for s in sels]).astype(jnp.int32))


def _select_step(plan, mesh):
  """rows -> select_slots at every budget of the plan, ascending, stacked: [budgets, S, B, ..]
  (one program, its loop body compiled once; per device on a mesh); None without slotted
  rules."""
  if not slotted(plan):
    return None
  budgets = np.asarray(sorted(plan.budgets), np.int32)
  every = lambda rows: jax.lax.map(lambda k: select_slots(plan, rows, k), budgets)
  if mesh is None:
    return jax.jit(every)
  P = jax.sharding.PartitionSpec
  return jax.jit(jax.shard_map(every, mesh=mesh, in_specs=P("batch"),
                               out_specs=(P(None, None, "batch"),) * 3, check_vma=False))


def select_all(plan, batch, budget, pre=None):
  """Every rule's selection at `budget`, each on its own importance score; the slotted
  rules' from `pre` (select_slots' output) when given ->
  (keep_idx i32[R, B, K], keep_mask bool[R, B, K], demand i32[R, B])."""
  row = {i: j for j, i in enumerate(slotted(plan))} if pre is not None else {}
  sels = [rules.Selection(pre[0][row[i], :, :budget], pre[1][row[i], :, :budget], pre[2][row[i]])
          if i in row else
          rules.select_batch(rule.name, batch["importance"][rule.importance], batch["tokens"],
                             batch["index"], budget, plan.seed, **rule.kwargs)
          for i, rule in enumerate(plan.rules)]
  return (jnp.stack([s.keep_idx for s in sels]), jnp.stack([s.keep_mask for s in sels]),
          jnp.stack([s.demand for s in sels]).astype(jnp.int32))


def _selection_records(keep_idx, keep_mask, demand, sets, sent, batch, cells, n_cells):
  """What the records keep of the selections [R, B]: units sent, units wanted, coverage, the
  units sent so far at this and smaller budgets, and (datasets with boxes) those on the item."""
  out = dict(units=keep_mask.sum(-1).astype(jnp.int32), demand=demand,
             coverage=coverage(keep_idx, keep_mask, cells, n_cells),
             units_sent=sent.sum(-1).astype(jnp.int16))
  if "on_item" in batch:
    out["on_item"] = (sets & batch["on_item"][None]).sum(-1).astype(jnp.int32)
  return out


def _condition_major(per_condition):
  """The server's answers of every condition, [U * R, B], condition-major."""
  return {name: jnp.concatenate([c[key] for c in per_condition])
          for key, name in (("pred", "server_pred"), ("conf", "server_conf"), ("kl", "kl_full"),
                            ("finite", "finite"), ("fresh", "fresh"))}


def _condition(forward, batch, keep_idx, keep_mask, sets, known, rate, bits, uniforms, ds):
  """The server's answers for every rule under one uplink condition: the units that arrive
  at loss rate `rate`, their pixels on 2**bits levels. When none of the sent units arrives
  the answer is the edge's prediction (no confidence or KL). -> (answers [R, B], known)."""
  images = batch["image"]
  if bits != 8:
    images = uplink.requantise(images, bits, jnp.asarray(ds.mean), jnp.asarray(ds.std))
  if rate > 0:
    keep_mask = uplink.arrived(keep_idx, keep_mask, uniforms, rate)
    sets = evidence_sets(keep_idx, keep_mask, sets.shape[-1])
  source, fresh = _first_match(sets, known["sets"])
  fresh &= batch["valid"][None]  # padding rows of the last server batch: never run
  none = ~sets.any(-1) if rate > 0 else None
  if rate > 0:
    fresh &= ~none
  logits = _forward_fresh(forward, images, keep_idx, keep_mask, fresh,
                          known["logits"].shape[-1])
  logits = jnp.concatenate([known["logits"], logits])[source, jnp.arange(source.shape[1])]
  ans = dict(answers(logits, known["logits"][0]), fresh=fresh, logits=logits)
  if rate > 0:
    ans = dict(ans, pred=jnp.where(none, batch["edge_pred"][None], ans["pred"]),
               finite=ans["finite"] | none, conf=jnp.where(none, jnp.nan, ans["conf"]),
               kl=jnp.where(none, jnp.nan, ans["kl"]),
               logits=jnp.where(none[..., None], jnp.nan, logits))
  keep = lambda old, new: jnp.concatenate([old[:1], new])
  return ans, dict(sets=keep(known["sets"], sets), logits=keep(known["logits"], logits))


def _per_device(budget_step, mesh, map_budget, logit_budgets=frozenset()):
  """The budget step under shard_map: every device checks and runs its own rows of the
  batch; no row crosses devices."""
  P = jax.sharding.PartitionSpec
  rows = P(None, "batch")
  known_spec = dict(sets=P(None, None, "batch"), logits=P(None, None, "batch"), sent=rows)

  def step(params, batch, known, budget, pre=None):
    names = ["server_pred", "units", "demand", "coverage", "units_sent", "finite", "fresh",
             "server_conf", "kl_full"]
    names += ["on_item"] if "on_item" in batch else []
    names += ["keep_idx", "keep_mask"] if budget == map_budget else []
    names += ["server_logits"] if budget in logit_budgets else []
    local = lambda p, b, kn, *pr: budget_step(p, b, kn, budget, *pr)
    given = () if pre is None else (pre,)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch"), known_spec)
                         + ((P(None, None, "batch"),) * 3,) * len(given),
                         out_specs=(dict.fromkeys(names, rows), known_spec),
                         check_vma=False)(params, batch, known, *given)
  return step


def run_budgets(steps, server_params, batch, budgets):
  """Ceiling, then every budget in ascending order (so saturated rules repeat the previous
  budget's evidence), chaining what is known; no host round trip in between.
  -> (ceiling, outputs in the order of `budgets`), still on the devices."""
  with timing.labelled("ceiling", batch["image"]):
    ceiling, known = steps.ceiling(server_params, batch["image"])
  rows, pre, outs = {k: batch[k] for k in ("importance", "tokens", "index")}, None, {}
  if steps.select is not None:  # every budget's picks of the slotted rules
    with timing.labelled("select", rows):
      pre = steps.select(rows)
  for k in sorted(budgets):
    with timing.labelled(f"budget K={k}", batch, known, pre):
      outs[k], known = steps.budget(server_params, batch, known, k, pre)
  return ceiling, [outs[k] for k in budgets]
