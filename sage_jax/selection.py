"""Selection rules: which K of N patches go up the link.

Each rule is a pure function for ONE example,
  rule(importance: f32[N], embeddings: f32[N, D], key, budget: int, **kw) -> Selection,
with a static budget K so it jits and vmaps; `select_batch` vmaps it over a
batch. Rules with a variable count (threshold rules) return K slots plus a
validity mask; `demand` is how many units the rule wanted before the hard
budget capped it (demand > K means the cap bound). Ties break to the lowest
patch index everywhere. Adding a rule: one function plus one line in RULES.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Selection(NamedTuple):
  keep_idx: jax.Array   # i32[K] patch indices
  keep_mask: jax.Array  # bool[K] which slots are sent
  demand: jax.Array     # i32[] units wanted before the budget cap


def _fixed(idx, budget):
  return Selection(idx.astype(jnp.int32), jnp.ones(budget, bool), jnp.int32(budget))


def _check_budget(budget, n):
  if not 1 <= budget <= n:
    raise ValueError(f"budget {budget} is out of range; allowed: 1..{n} (number of patches)")


def _top(importance, k):
  """Indices of the k largest, descending; equal values keep ascending index order."""
  return jax.lax.top_k(importance, k)[1]


def random(importance, embeddings, key, budget):
  """K distinct patches uniformly at random; the key comes from the image index."""
  del embeddings
  _check_budget(budget, importance.shape[0])
  return _fixed(jax.random.permutation(key, importance.shape[0])[:budget], budget)


def grid_indices(n: int, budget: int, grid_hw=None) -> np.ndarray:
  """Content-blind, evenly spread indices over a gh x gw patch grid (numpy, static).

  r rows (as close to square spacing as the budget allows) at strip centres;
  the K points are split over them with counts differing by at most one, and
  each row's points sit at column-strip centres. K = m*m on a square grid gives
  the m x m lattice; K = N gives every patch.
  """
  _check_budget(budget, n)
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


def grid(importance, embeddings, key, budget, grid_hw=None):
  """Fixed evenly spread grid; ignores the content."""
  del embeddings, key
  return _fixed(jnp.asarray(grid_indices(importance.shape[0], budget, grid_hw)), budget)


def topk(importance, embeddings, key, budget):
  """The K most important patches ("attention prefix")."""
  del embeddings, key
  _check_budget(budget, importance.shape[0])
  return _fixed(_top(importance, budget), budget)


def threshold(importance, embeddings, key, budget, delta):
  """Im et al. 2024: every patch with importance >= delta, capped at K (at least one)."""
  del embeddings, key
  _check_budget(budget, importance.shape[0])
  importance = jnp.asarray(importance)
  idx = _top(importance, budget)
  mask = (importance[idx] >= delta).at[0].set(True)
  demand = jnp.maximum(1, jnp.sum(importance >= delta)).astype(jnp.int32)
  return Selection(idx.astype(jnp.int32), mask, demand)


def sum_threshold(importance, embeddings, key, budget, delta):
  """Im et al. 2024: most important first while the cumulative sum <= delta, capped at K."""
  del embeddings, key
  n = importance.shape[0]
  _check_budget(budget, n)
  importance = jnp.asarray(importance)
  order = _top(importance, n)
  inside = jnp.cumsum(importance[order]) <= delta
  mask = inside[:budget].at[0].set(True)
  demand = jnp.maximum(1, jnp.sum(inside)).astype(jnp.int32)
  return Selection(order[:budget].astype(jnp.int32), mask, demand)


def _l2_normalize(x):
  """Zero vectors stay zero, so their cosine with everything is 0 (defined, finite)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def farthest_point(embeddings, seed_pos, budget):
  """Greedy max-min cosine distance on f32[P, D]; positions in pick order, seed first.

  Ties go to the lowest position, so callers pass candidates in ascending patch order.
  """
  x = _l2_normalize(embeddings)

  def pick(i, carry):
    chosen, min_dist = carry
    j = jnp.argmax(min_dist)
    dist = 1.0 - x @ x[j]
    return chosen.at[i].set(j), jnp.minimum(min_dist, dist).at[j].set(-jnp.inf)

  # Chosen positions carry -inf so they are never picked again.
  min_dist = (1.0 - x @ x[seed_pos]).at[seed_pos].set(-jnp.inf)
  chosen = jnp.zeros(budget, jnp.int32).at[0].set(seed_pos)
  chosen, _ = jax.lax.fori_loop(1, budget, pick, (chosen, min_dist))
  return chosen


def diversity(importance, embeddings, key, budget):
  """Max-min cosine over all N patches, seeded at the most-attended patch."""
  del key
  _check_budget(budget, importance.shape[0])
  return _fixed(farthest_point(embeddings, jnp.argmax(importance), budget), budget)


def sage(importance, embeddings, key, budget, pool_ratio=2.0):
  """SAGE: pool = top ceil(pool_ratio*K) by importance (clamped to [K, N]); max-min inside."""
  del key
  n = importance.shape[0]
  _check_budget(budget, n)
  if not pool_ratio > 0:
    raise ValueError(f"pool_ratio {pool_ratio} is not allowed; it must be > 0")
  pool_size = min(n, max(budget, math.ceil(pool_ratio * budget)))
  # Ascending patch order inside the pool makes argmax ties go to the lowest patch.
  pool = jnp.sort(_top(importance, pool_size))
  seed_pos = jnp.argmax(importance[pool])
  return _fixed(pool[farthest_point(embeddings[pool], seed_pos, budget)], budget)


RULES = {
    "random": random,
    "grid": grid,
    "topk": topk,
    "threshold": threshold,
    "sum_threshold": sum_threshold,
    "diversity": diversity,
    "sage": sage,
}


def get_rule(name: str):
  if name not in RULES:
    raise ValueError(f"unknown selection rule {name!r}; allowed: {', '.join(RULES)}")
  return RULES[name]


def select_batch(name, importance, embeddings, image_index, budget, seed=0, **kwargs):
  """vmaps rule `name` over a batch; example b's key = fold_in(PRNGKey(seed), image_index[b])."""
  rule = get_rule(name)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(image_index)
  return jax.vmap(lambda imp, emb, k: rule(imp, emb, k, budget, **kwargs))(
      importance, embeddings, keys)
