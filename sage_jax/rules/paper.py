"""The paper's rules and its baselines: `random`, `grid`, `topk`, the Im et al. threshold
rules, `diversity`, `sage` (and `sage_nested` for progressive offloading), the swap
experiment, and the BAT- and ToMe-style token-reduction baselines (docs/choices.md).

One implementation per rule: its `<rule>_slots` form, whose budget may be traced (the sweep
compiles one selection program for every K from it); the rule at a static K is that form at
width K, after checking its arguments. tests/rules/static_paper.py states each rule per
static K, as first written, and is the reference the forms here are checked against."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.rules import common


def random(importance, embeddings, key, budget):
  """K distinct patches uniformly at random; the key comes from the image index."""
  common.check_budget(budget, importance.shape[0])
  return random_slots(importance, embeddings, key, budget, budget)


def random_slots(importance, embeddings, key, budget, width):
  del embeddings
  return common.fixed_slots(jax.random.permutation(key, importance.shape[0])[:width], budget,
                            width)


def grid_indices(n: int, budget: int, grid_hw=None) -> np.ndarray:
  """Content-blind, evenly spread indices over a gh x gw patch grid (numpy, static): rows
  as square as K allows, counts differing by at most one, at strip centres (docs/choices.md).
  """
  common.check_budget(budget, n)
  gh, gw = grid_hw or (math.isqrt(n),) * 2
  if gh * gw != n:
    raise ValueError(f"grid {gh}x{gw} does not have {n} patches")
  rows = min(gh, budget, max(-(-budget // gw), round(math.sqrt(budget * gh / gw))))
  counts = [budget // rows + (i < budget % rows) for i in range(rows)]
  # Put the longer rows alternately at the top and bottom, keeping the pattern centred.
  order = sorted(range(rows), key=lambda i: (abs(2 * i - rows + 1), i))
  counts = [counts[order.index(i)] for i in range(rows)]
  idx = [int((i + 0.5) * gh / rows) * gw + int((j + 0.5) * gw / c)
         for i, c in enumerate(counts) for j in range(c)]
  return np.asarray(idx, np.int32)


def grid(importance, embeddings, key, budget):
  """Fixed evenly spread grid over the square patch grid; ignores the content."""
  common.check_budget(budget, importance.shape[0])
  return grid_slots(importance, embeddings, key, budget, budget)


def grid_slots(importance, embeddings, key, budget, width):
  del embeddings, key
  n = importance.shape[0]
  table = np.zeros((width + 1, width), np.int32)  # row k: grid_indices(n, k), padded
  for k in range(1, width + 1):
    table[k, :k] = grid_indices(n, k)
  return common.fixed_slots(jnp.asarray(table)[budget], budget, width)


def topk(importance, embeddings, key, budget):
  """The K most important patches ("attention prefix")."""
  common.check_budget(budget, importance.shape[0])
  return topk_slots(importance, embeddings, key, budget, budget)


def topk_slots(importance, embeddings, key, budget, width):
  del embeddings, key
  return common.fixed_slots(common.top(importance, width), budget, width)


def threshold(importance, embeddings, key, budget, delta=None):
  """Im et al. 2024: every patch with importance >= delta (None: 1/N), capped at K (>= 1)."""
  common.check_budget(budget, importance.shape[0])
  return threshold_slots(importance, embeddings, key, budget, budget, delta)


def threshold_slots(importance, embeddings, key, budget, width, delta=None):
  del embeddings, key
  delta = 1.0 / importance.shape[0] if delta is None else delta
  importance = jnp.asarray(importance)
  idx = common.top(importance, width)
  mask = (importance[idx] >= delta).at[0].set(True) & (jnp.arange(width) < budget)
  demand = jnp.maximum(1, jnp.sum(importance >= delta)).astype(jnp.int32)
  return common.Selection(idx.astype(jnp.int32), mask, demand)


def sum_threshold(importance, embeddings, key, budget, delta=0.9):
  """Im et al. 2024: most important first while the cumulative sum <= delta, capped at K."""
  common.check_budget(budget, importance.shape[0])
  return sum_threshold_slots(importance, embeddings, key, budget, budget, delta)


def sum_threshold_slots(importance, embeddings, key, budget, width, delta=0.9):
  del embeddings, key
  importance = jnp.asarray(importance)
  order = common.top(importance, importance.shape[0])
  inside = jnp.cumsum(importance[order]) <= delta
  mask = inside[:width].at[0].set(True) & (jnp.arange(width) < budget)
  demand = jnp.maximum(1, jnp.sum(inside)).astype(jnp.int32)
  return common.Selection(order[:width].astype(jnp.int32), mask, demand)


def diversity(importance, embeddings, key, budget):
  """Max-min cosine over all N patches, seeded at the most-attended patch."""
  common.check_budget(budget, importance.shape[0])
  return diversity_slots(importance, embeddings, key, budget, budget)


def diversity_slots(importance, embeddings, key, budget, width):
  del key
  return common.fixed_slots(
      common.farthest_point(embeddings, jnp.argmax(importance), budget, width), budget, width)


def sage(importance, embeddings, key, budget, pool_ratio=2.0):
  """SAGE: pool = top ceil(pool_ratio*K) by importance (clamped to [K, N]); max-min inside."""
  common.check_budget(budget, importance.shape[0])
  if not pool_ratio > 0:
    raise ValueError(f"pool_ratio {pool_ratio} is not allowed; it must be > 0")
  return sage_slots(importance, embeddings, key, budget, budget, pool_ratio)


def sage_slots(importance, embeddings, key, budget, width, pool_ratio=2.0):
  """`sage` at a traced budget: the pool as a mask over all N patches (the same picks: ties
  go to the lowest patch either way)."""
  del key
  n = importance.shape[0]
  pool_size = common.budget_table([min(n, max(k, math.ceil(pool_ratio * k)))
                                   for k in range(width + 1)])[budget]
  rank = jnp.zeros(n, jnp.int32).at[common.top(importance, n)].set(jnp.arange(n))
  in_pool = rank < pool_size
  seed = jnp.argmax(jnp.where(in_pool, importance, -jnp.inf))
  return common.fixed_slots(common.farthest_point(embeddings, seed, budget, width, in_pool),
                            budget, width)


def sage_nested(importance, embeddings, key, budget, pool_frac=0.5):
  """SAGE with sets nested across K (progressive offloading pays only for new units): the
  first K picks of one max-min order over a fixed pool of ceil(pool_frac*N) (docs/choices.md).
  """
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  if not 0 < pool_frac <= 1:
    raise ValueError(f"pool_frac {pool_frac} is not allowed; it must be in (0, 1]")
  p = min(n, max(1, math.ceil(pool_frac * n)))
  pool = jnp.sort(common.top(importance, p))
  first = pool[common.farthest_point(embeddings[pool], jnp.argmax(importance[pool]),
                                     min(budget, p))]
  if budget <= p:
    return common.fixed(first, budget)
  return common.fixed(common.extend_maxmin(embeddings, first, budget - p), budget)


def swap(importance, embeddings, key, budget, swap_frac=0.25):
  """The paper's swap experiment: topk with its s = round(swap_frac*K) least attended slots
  (at most K-1) given to max-min picks from outside the kept set (docs/choices.md)."""
  common.check_budget(budget, importance.shape[0])
  if not 0 <= swap_frac <= 1:
    raise ValueError(f"swap_frac {swap_frac} is not allowed; it must be in [0, 1]")
  return swap_slots(importance, embeddings, key, budget, budget, swap_frac)


def swap_slots(importance, embeddings, key, budget, width, swap_frac=0.25):
  """`swap` at a traced budget: the kept slots first, then the max-min picks."""
  del key
  s = common.budget_table([min(k - 1, common.round_half_up(swap_frac * k)) if k else 0
                           for k in range(width + 1)])[budget]
  kept = jnp.arange(width) < budget - s
  order = common.top(jnp.asarray(importance), width)
  x = common.l2_normalize(jnp.asarray(embeddings))
  dist = jnp.where(kept[None, :], 1.0 - common.same_is_one(x @ x[order].T), jnp.inf)
  min_dist = jnp.min(dist, axis=1)
  min_dist = min_dist.at[order].set(jnp.where(kept, -jnp.inf, min_dist[order]))
  picks = common.greedy_maxmin(x, min_dist, s, width)
  idx = jnp.where(kept, order, picks[jnp.maximum(jnp.arange(width) - (budget - s), 0)])
  return common.fixed_slots(idx, budget, width)


def bat(importance, embeddings, key, budget, attentive_frac=0.5, iters=10):
  """BAT-style: the round(attentive_frac*K) most attended patches plus the most attended
  member of each spherical k-means cluster of the rest (docs/choices.md)."""
  common.check_budget(budget, importance.shape[0])
  if not 0 <= attentive_frac <= 1:
    raise ValueError(f"attentive_frac {attentive_frac} is not allowed; it must be in [0, 1]")
  if int(iters) != iters or iters < 0:
    raise ValueError(f"iters {iters} is not allowed; it must be an integer >= 0")
  return bat_slots(importance, embeddings, key, budget, budget, attentive_frac, iters)


def bat_slots(importance, embeddings, key, budget, width, attentive_frac=0.5, iters=10):
  """`bat` at a traced budget: the pool compacted to the front of N rows (ascending patch
  order, as in `bat`), m = K - k_att of `width` cluster slots used."""
  del key
  n = importance.shape[0]
  importance = jnp.asarray(importance)
  atts = [min(k, max(1, common.round_half_up(attentive_frac * k))) for k in range(width + 1)]
  k_att = common.budget_table(atts)[budget]
  m = budget - k_att
  clusters = max(1, max(k - a for k, a in enumerate(atts)))  # static: the most any K needs
  order = common.top(importance, n)
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n))
  pool = jnp.sort(jnp.where(rank >= k_att, jnp.arange(n), n))        # the pool, then n's
  row_ok, slot_ok = jnp.arange(n) < n - k_att, jnp.arange(clusters) < m
  pool = jnp.minimum(pool, n - 1)
  imp = jnp.where(row_ok, importance[pool], -jnp.inf)
  emb = jnp.asarray(embeddings)[pool]
  x = common.l2_normalize(emb)
  centres = x[common.farthest_point(emb, jnp.argmax(imp), m, clusters, row_ok)]  # f32[C, D]

  def members(centres):
    # bool[N, C]
    cos = jnp.where(slot_ok[None, :], common.same_is_one(x @ centres.T), -jnp.inf)
    return (jnp.argmax(cos, axis=1)[:, None] == jnp.arange(clusters)) & row_ok[:, None]

  def update(_, centres):
    member = members(centres)
    new = common.l2_normalize(member.T.astype(x.dtype) @ x)
    return jnp.where(member.any(0)[:, None], new, centres)

  member = members(jax.lax.fori_loop(0, int(iters), update, centres))
  rep = jnp.argmax(jnp.where(member, imp[:, None], -jnp.inf), axis=0)  # i32[C] positions
  empty = ~member.any(0) & slot_ok
  taken = jnp.zeros(n, jnp.int32).at[rep].add((~empty & slot_ok).astype(jnp.int32)) > 0
  spare = common.top(jnp.where(taken, -jnp.inf, imp), clusters)
  rep = jnp.where(empty, spare[jnp.maximum(jnp.cumsum(empty) - 1, 0)], rep)
  reps = pool[rep]
  reps = reps[common.top(jnp.where(slot_ok, importance[reps], -jnp.inf), clusters)]
  slot = jnp.arange(width)
  return common.fixed_slots(jnp.where(slot < k_att, order[:width],
                                      reps[jnp.clip(slot - k_att, 0, clusters - 1)]),
                            budget, width)


def tome_schedule(n: int, budget: int) -> list:
  """Merges per ToMe round, static: r = min(count - K, count // 2) until K groups remain."""
  rs, count = [], n
  while count > budget:
    rs.append(min(count - budget, count // 2))
    count -= rs[-1]
  return rs


def tome(importance, embeddings, key, budget):
  """ToMe-style bipartite soft matching of the patches into K groups, each sending its most
  attended patch, most attended first (docs/choices.md)."""
  common.check_budget(budget, importance.shape[0])
  return tome_slots(importance, embeddings, key, budget, budget)


def tome_slots(importance, embeddings, key, budget, width):
  """`tome` at a traced budget: the rounds K needs in one loop, round t merging r[K, t]
  pairs, each round's r picks masked from the same top order."""
  del key
  n = importance.shape[0]
  schedules = [tome_schedule(n, k) if k else [] for k in range(width + 1)]
  table = np.zeros((width + 1, max(1, max(map(len, schedules)))), np.int32)
  for k, rs in enumerate(schedules):
    table[k, :len(rs)] = rs
  rs = common.budget_table(table)[budget]
  importance = jnp.asarray(importance)

  def round_(carry):
    t, sums, group, alive = carry
    rank = jnp.cumsum(alive) - 1
    is_a, is_b = alive & (rank % 2 == 0), alive & (rank % 2 == 1)
    g = common.l2_normalize(sums)
    sim = jnp.where(is_b[None, :], common.same_is_one(g @ g.T), -jnp.inf)
    dst = jnp.argmax(sim, axis=1)
    src = common.top(jnp.where(is_a, jnp.max(sim, axis=1), -jnp.inf), n)
    used = jnp.arange(n) < rs[t]
    to = jnp.where(used, dst[src], n)                                   # n: dropped
    sums = sums.at[to].add(sums[src], mode="drop")
    alive = alive.at[jnp.where(used, src, n)].set(False, mode="drop")
    group = jnp.arange(n).at[jnp.where(used, src, n)].set(dst[src], mode="drop")[group]
    return t + 1, sums, group, alive

  carry = (0, common.l2_normalize(jnp.asarray(embeddings)), jnp.arange(n), jnp.ones(n, bool))
  rounds = common.budget_table([len(r) for r in schedules])[budget]
  _, _, group, alive = jax.lax.while_loop(lambda c: c[0] < rounds, round_, carry)
  roots = jnp.nonzero(alive, size=width)[0]
  member = group[None, :] == roots[:, None]      # bool[W, N]
  reps = jnp.argmax(jnp.where(member, importance[None, :], -jnp.inf), axis=1)
  slot_ok = jnp.arange(width) < budget
  return common.fixed_slots(reps[common.top(jnp.where(slot_ok, importance[reps], -jnp.inf),
                                            width)], budget, width)


