"""The paper's rules as first written: one function per static K, in the readable form
(Python loops over ToMe's rounds, pools gathered rather than masked). sage_jax/rules/paper.py
keeps one implementation per rule, its traced-budget `_slots` form (the rule is that form at
width K); these are the independent reference it is checked against, pick for pick, mask and
demand, at every budget and parameter of tests/rules/test_slots.py."""
import math

import jax
import jax.numpy as jnp

from sage_jax.rules import common
from sage_jax.rules.paper import grid_indices, tome_schedule


def random(importance, embeddings, key, budget):
  """K distinct patches uniformly at random; the key comes from the image index."""
  del embeddings
  common.check_budget(budget, importance.shape[0])
  return common.fixed(jax.random.permutation(key, importance.shape[0])[:budget], budget)


def grid(importance, embeddings, key, budget):
  """Fixed evenly spread grid over the square patch grid; ignores the content."""
  del embeddings, key
  return common.fixed(jnp.asarray(grid_indices(importance.shape[0], budget)), budget)


def topk(importance, embeddings, key, budget):
  """The K most important patches ("attention prefix")."""
  del embeddings, key
  common.check_budget(budget, importance.shape[0])
  return common.fixed(common.top(importance, budget), budget)


def threshold(importance, embeddings, key, budget, delta=None):
  """Im et al. 2024: every patch with importance >= delta (None: 1/N), capped at K (>= 1)."""
  del embeddings, key
  n = importance.shape[0]
  common.check_budget(budget, n)
  delta = 1.0 / n if delta is None else delta
  importance = jnp.asarray(importance)
  idx = common.top(importance, budget)
  mask = (importance[idx] >= delta).at[0].set(True)
  demand = jnp.maximum(1, jnp.sum(importance >= delta)).astype(jnp.int32)
  return common.Selection(idx.astype(jnp.int32), mask, demand)


def sum_threshold(importance, embeddings, key, budget, delta=0.9):
  """Im et al. 2024: most important first while the cumulative sum <= delta, capped at K."""
  del embeddings, key
  n = importance.shape[0]
  common.check_budget(budget, n)
  importance = jnp.asarray(importance)
  order = common.top(importance, n)
  inside = jnp.cumsum(importance[order]) <= delta
  mask = inside[:budget].at[0].set(True)
  demand = jnp.maximum(1, jnp.sum(inside)).astype(jnp.int32)
  return common.Selection(order[:budget].astype(jnp.int32), mask, demand)


def diversity(importance, embeddings, key, budget):
  """Max-min cosine over all N patches, seeded at the most-attended patch."""
  del key
  common.check_budget(budget, importance.shape[0])
  return common.fixed(common.farthest_point(embeddings, jnp.argmax(importance), budget), budget)


def sage(importance, embeddings, key, budget, pool_ratio=2.0):
  """SAGE: pool = top ceil(pool_ratio*K) by importance (clamped to [K, N]); max-min inside."""
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  if not pool_ratio > 0:
    raise ValueError(f"pool_ratio {pool_ratio} is not allowed; it must be > 0")
  pool_size = min(n, max(budget, math.ceil(pool_ratio * budget)))
  # Ascending patch order inside the pool makes argmax ties go to the lowest patch.
  pool = jnp.sort(common.top(importance, pool_size))
  seed_pos = jnp.argmax(importance[pool])
  return common.fixed(pool[common.farthest_point(embeddings[pool], seed_pos, budget)], budget)


def swap(importance, embeddings, key, budget, swap_frac=0.25):
  """The paper's swap experiment: topk with its s = round(swap_frac*K) least attended slots
  (at most K-1) given to max-min picks from outside the kept set (docs/choices.md)."""
  del key
  common.check_budget(budget, importance.shape[0])
  if not 0 <= swap_frac <= 1:
    raise ValueError(f"swap_frac {swap_frac} is not allowed; it must be in [0, 1]")
  s = min(budget - 1, common.round_half_up(swap_frac * budget))
  kept = common.top(jnp.asarray(importance), budget - s)
  if s == 0:
    return common.fixed(kept, budget)
  return common.fixed(common.extend_maxmin(embeddings, kept, s), budget)


def bat(importance, embeddings, key, budget, attentive_frac=0.5, iters=10):
  """BAT-style: the round(attentive_frac*K) most attended patches plus the most attended
  member of each spherical k-means cluster of the rest (docs/choices.md)."""
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  if not 0 <= attentive_frac <= 1:
    raise ValueError(f"attentive_frac {attentive_frac} is not allowed; it must be in [0, 1]")
  if int(iters) != iters or iters < 0:
    raise ValueError(f"iters {iters} is not allowed; it must be an integer >= 0")
  importance = jnp.asarray(importance)
  k_att = min(budget, max(1, common.round_half_up(attentive_frac * budget)))
  m = budget - k_att
  order = common.top(importance, n)
  if m == 0:
    return common.fixed(order[:budget], budget)
  # Ascending patch order inside the pool makes every argmax tie go to the lowest patch.
  pool = jnp.sort(order[k_att:])                      # i32[P], P = N - k_att >= m
  imp = importance[pool]
  emb = jnp.asarray(embeddings)[pool]
  x = common.l2_normalize(emb)
  centres = x[common.farthest_point(emb, jnp.argmax(imp), m)]  # f32[m, D]

  def members(centres):
    # bool[P, m]
    return jnp.argmax(common.same_is_one(x @ centres.T), axis=1)[:, None] == jnp.arange(m)

  def update(_, centres):
    member = members(centres)
    new = common.l2_normalize(member.T.astype(x.dtype) @ x)
    return jnp.where(member.any(0)[:, None], new, centres)

  member = members(jax.lax.fori_loop(0, int(iters), update, centres))
  rep = jnp.argmax(jnp.where(member, imp[:, None], -jnp.inf), axis=0)  # i32[m] positions
  empty = ~member.any(0)
  # Clusters are disjoint, so the non-empty ones' representatives are distinct already.
  taken = jnp.zeros(pool.shape[0], jnp.int32).at[rep].add((~empty).astype(jnp.int32)) > 0
  spare = common.top(jnp.where(taken, -jnp.inf, imp), m)
  rep = jnp.where(empty, spare[jnp.maximum(jnp.cumsum(empty) - 1, 0)], rep)
  reps = pool[rep]
  return common.fixed(jnp.concatenate([order[:k_att], reps[common.top(importance[reps], m)]]),
                      budget)


def tome(importance, embeddings, key, budget):
  """ToMe-style bipartite soft matching of the patches into K groups, each sending its most
  attended patch, most attended first (docs/choices.md)."""
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  importance = jnp.asarray(importance)
  sums = common.l2_normalize(jnp.asarray(embeddings))  # f32[N, D]: row r sums the group rooted at r
  group = jnp.arange(n)                          # i32[N]: each patch's root
  alive = jnp.ones(n, bool)                      # bool[N]: which patches are roots
  for r in tome_schedule(n, budget):
    rank = jnp.cumsum(alive) - 1
    is_a, is_b = alive & (rank % 2 == 0), alive & (rank % 2 == 1)
    g = common.l2_normalize(sums)
    # f32[N, N]: A rows x B columns
    sim = jnp.where(is_b[None, :], common.same_is_one(g @ g.T), -jnp.inf)
    dst = jnp.argmax(sim, axis=1)
    src = common.top(jnp.where(is_a, jnp.max(sim, axis=1), -jnp.inf), r)
    sums = sums.at[dst[src]].add(sums[src])
    alive = alive.at[src].set(False)
    group = jnp.arange(n).at[src].set(dst[src])[group]
  roots = jnp.nonzero(alive, size=budget)[0]
  member = group[None, :] == roots[:, None]      # bool[K, N]
  reps = jnp.argmax(jnp.where(member, importance[None, :], -jnp.inf), axis=1)
  return common.fixed(reps[common.top(importance[reps], budget)], budget)


STATIC = {"random": random, "grid": grid, "topk": topk, "threshold": threshold,
          "sum_threshold": sum_threshold, "diversity": diversity, "sage": sage, "swap": swap,
          "bat": bat, "tome": tome}
