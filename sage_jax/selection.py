"""Selection rules: which K of N patches go up the link.

A rule is a pure function of ONE example, `rule(importance: f32[N], embeddings: f32[N, D],
key, budget, *, param=default) -> Selection`, with a static K so it jits and vmaps
(`select_batch`). Threshold rules fill K slots with a mask; `demand` > K means the cap bound.
Ties go to the lowest patch index, jit and eager alike (`_same_is_one`). A rule checks its
own parameters; adding one is a function plus an entry in RULES (README).
"""
import inspect
import math
from typing import Callable, NamedTuple, Optional

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
  """Content-blind, evenly spread indices over a gh x gw patch grid (numpy, static): rows
  as square as K allows, counts differing by at most one, at strip centres (docs/choices.md).
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


def grid(importance, embeddings, key, budget):
  """Fixed evenly spread grid over the square patch grid; ignores the content."""
  del embeddings, key
  return _fixed(jnp.asarray(grid_indices(importance.shape[0], budget)), budget)


def topk(importance, embeddings, key, budget):
  """The K most important patches ("attention prefix")."""
  del embeddings, key
  _check_budget(budget, importance.shape[0])
  return _fixed(_top(importance, budget), budget)


def threshold(importance, embeddings, key, budget, delta=None):
  """Im et al. 2024: every patch with importance >= delta (None: 1/N), capped at K (>= 1)."""
  del embeddings, key
  n = importance.shape[0]
  _check_budget(budget, n)
  delta = 1.0 / n if delta is None else delta
  importance = jnp.asarray(importance)
  idx = _top(importance, budget)
  mask = (importance[idx] >= delta).at[0].set(True)
  demand = jnp.maximum(1, jnp.sum(importance >= delta)).astype(jnp.int32)
  return Selection(idx.astype(jnp.int32), mask, demand)


def sum_threshold(importance, embeddings, key, budget, delta=0.9):
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


# Cosines this close to 1 are taken as exactly 1 (8 float32 epsilons, about 1e-6).
SAME_DIRECTION_TOL = 8 * float(np.finfo(np.float32).eps)


def _same_is_one(cos):
  """Cosines within SAME_DIRECTION_TOL of 1 set to exactly 1, so that patches pointing the
  same way tie exactly, jit and eager alike, and go to the lowest index (docs/choices.md)."""
  return jnp.where(cos >= 1.0 - SAME_DIRECTION_TOL, 1.0, cos)


def _greedy_maxmin(x, min_dist, count):
  """`count` more greedy max-min cosine picks on unit rows x: f32[P, D] -> i32[count];
  min_dist: f32[P], distance to the set so far (-inf: not pickable). Ties to the lowest."""
  def pick(i, carry):
    chosen, min_dist = carry
    j = jnp.argmax(min_dist)
    return chosen.at[i].set(j), jnp.minimum(min_dist, 1.0 - _same_is_one(x @ x[j])).at[j].set(
        -jnp.inf)

  chosen = jnp.zeros(count, jnp.int32)
  if count == 0:
    return chosen
  return jax.lax.fori_loop(0, count, pick, (chosen, min_dist))[0]


def _extend_maxmin(embeddings, kept, count):
  """kept (i32[M]) followed by `count` greedy max-min picks from outside it, each scored by
  its minimum cosine distance to every kept or already picked patch."""
  x = _l2_normalize(jnp.asarray(embeddings))
  min_dist = jnp.min(1.0 - _same_is_one(x @ x[kept].T), axis=1).at[kept].set(-jnp.inf)
  return jnp.concatenate([kept, _greedy_maxmin(x, min_dist, count)])


def farthest_point(embeddings, seed_pos, budget):
  """Greedy max-min cosine distance on f32[P, D] -> positions in pick order, seed first
  (ties to the lowest position: callers pass candidates in ascending patch order)."""
  x = _l2_normalize(embeddings)
  # The seed carries -inf so it is never picked again.
  min_dist = (1.0 - _same_is_one(x @ x[seed_pos])).at[seed_pos].set(-jnp.inf)
  rest = _greedy_maxmin(x, min_dist, budget - 1)
  return jnp.concatenate([jnp.reshape(seed_pos, (1,)).astype(jnp.int32), rest])


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


def sage_nested(importance, embeddings, key, budget, pool_frac=0.5):
  """SAGE with sets nested across K (progressive offloading pays only for new units): the
  first K picks of one max-min order over a fixed pool of ceil(pool_frac*N) (docs/choices.md).
  """
  del key
  n = importance.shape[0]
  _check_budget(budget, n)
  if not 0 < pool_frac <= 1:
    raise ValueError(f"pool_frac {pool_frac} is not allowed; it must be in (0, 1]")
  p = min(n, max(1, math.ceil(pool_frac * n)))
  pool = jnp.sort(_top(importance, p))
  first = pool[farthest_point(embeddings[pool], jnp.argmax(importance[pool]), min(budget, p))]
  if budget <= p:
    return _fixed(first, budget)
  return _fixed(_extend_maxmin(embeddings, first, budget - p), budget)


def _round_half_up(x: float) -> int:
  # Python's round() goes to even (round(2.5) == 2); a count that halves up reads plainer.
  return math.floor(x + 0.5)


def swap(importance, embeddings, key, budget, swap_frac=0.25):
  """The paper's swap experiment: topk with its s = round(swap_frac*K) least attended slots
  (at most K-1) given to max-min picks from outside the kept set (docs/choices.md)."""
  del key
  _check_budget(budget, importance.shape[0])
  if not 0 <= swap_frac <= 1:
    raise ValueError(f"swap_frac {swap_frac} is not allowed; it must be in [0, 1]")
  s = min(budget - 1, _round_half_up(swap_frac * budget))
  kept = _top(jnp.asarray(importance), budget - s)
  if s == 0:
    return _fixed(kept, budget)
  return _fixed(_extend_maxmin(embeddings, kept, s), budget)


def bat(importance, embeddings, key, budget, attentive_frac=0.5, iters=10):
  """BAT-style: the round(attentive_frac*K) most attended patches plus the most attended
  member of each spherical k-means cluster of the rest (docs/choices.md)."""
  del key
  n = importance.shape[0]
  _check_budget(budget, n)
  if not 0 <= attentive_frac <= 1:
    raise ValueError(f"attentive_frac {attentive_frac} is not allowed; it must be in [0, 1]")
  if int(iters) != iters or iters < 0:
    raise ValueError(f"iters {iters} is not allowed; it must be an integer >= 0")
  importance = jnp.asarray(importance)
  k_att = min(budget, max(1, _round_half_up(attentive_frac * budget)))
  m = budget - k_att
  order = _top(importance, n)
  if m == 0:
    return _fixed(order[:budget], budget)
  # Ascending patch order inside the pool makes every argmax tie go to the lowest patch.
  pool = jnp.sort(order[k_att:])                      # i32[P], P = N - k_att >= m
  imp = importance[pool]
  emb = jnp.asarray(embeddings)[pool]
  x = _l2_normalize(emb)
  centres = x[farthest_point(emb, jnp.argmax(imp), m)]  # f32[m, D]

  def members(centres):
    return jnp.argmax(_same_is_one(x @ centres.T), axis=1)[:, None] == jnp.arange(m)  # bool[P, m]

  def update(_, centres):
    member = members(centres)
    new = _l2_normalize(member.T.astype(x.dtype) @ x)
    return jnp.where(member.any(0)[:, None], new, centres)

  member = members(jax.lax.fori_loop(0, int(iters), update, centres))
  rep = jnp.argmax(jnp.where(member, imp[:, None], -jnp.inf), axis=0)  # i32[m] positions
  empty = ~member.any(0)
  # Clusters are disjoint, so the non-empty ones' representatives are distinct already.
  taken = jnp.zeros(pool.shape[0], jnp.int32).at[rep].add((~empty).astype(jnp.int32)) > 0
  spare = _top(jnp.where(taken, -jnp.inf, imp), m)
  rep = jnp.where(empty, spare[jnp.maximum(jnp.cumsum(empty) - 1, 0)], rep)
  reps = pool[rep]
  return _fixed(jnp.concatenate([order[:k_att], reps[_top(importance[reps], m)]]), budget)


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
  del key
  n = importance.shape[0]
  _check_budget(budget, n)
  importance = jnp.asarray(importance)
  sums = _l2_normalize(jnp.asarray(embeddings))  # f32[N, D]: row r sums the group rooted at r
  group = jnp.arange(n)                          # i32[N]: each patch's root
  alive = jnp.ones(n, bool)                      # bool[N]: which patches are roots
  for r in tome_schedule(n, budget):
    rank = jnp.cumsum(alive) - 1
    is_a, is_b = alive & (rank % 2 == 0), alive & (rank % 2 == 1)
    g = _l2_normalize(sums)
    # f32[N, N]: A rows x B columns
    sim = jnp.where(is_b[None, :], _same_is_one(g @ g.T), -jnp.inf)
    dst = jnp.argmax(sim, axis=1)
    src = _top(jnp.where(is_a, jnp.max(sim, axis=1), -jnp.inf), r)
    sums = sums.at[dst[src]].add(sums[src])
    alive = alive.at[src].set(False)
    group = jnp.arange(n).at[src].set(dst[src])[group]
  roots = jnp.nonzero(alive, size=budget)[0]
  member = group[None, :] == roots[:, None]      # bool[K, N]
  reps = jnp.argmax(jnp.where(member, importance[None, :], -jnp.inf), axis=1)
  return _fixed(reps[_top(importance[reps], budget)], budget)


class Rule(NamedTuple):
  """A registry entry: the rule's function and the parameter `rule@value` sets (if any)."""
  fn: Callable
  primary: Optional[str] = None

  def params(self) -> dict:
    """{name: default} of the keyword parameters after `budget`, from the signature."""
    sig = list(inspect.signature(self.fn).parameters.values())
    return {p.name: p.default for p in sig[4:]}


RULES = {
    "random": Rule(random),
    "grid": Rule(grid),
    "topk": Rule(topk),
    "threshold": Rule(threshold, primary="delta"),
    "sum_threshold": Rule(sum_threshold, primary="delta"),
    "diversity": Rule(diversity),
    "sage": Rule(sage, primary="pool_ratio"),
    "sage_nested": Rule(sage_nested, primary="pool_frac"),
    "swap": Rule(swap, primary="swap_frac"),
    "bat": Rule(bat, primary="attentive_frac"),
    "tome": Rule(tome),
}


def get_rule(name: str) -> Rule:
  if name not in RULES:
    raise ValueError(f"unknown selection rule {name!r}; allowed: {', '.join(RULES)}")
  return RULES[name]


def select_batch(name, importance, embeddings, image_index, budget, seed=0, **kwargs):
  """vmaps rule `name` over a batch; example b's key = fold_in(PRNGKey(seed), image_index[b])."""
  rule = get_rule(name).fn
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(image_index)
  return jax.vmap(lambda imp, emb, k: rule(imp, emb, k, budget, **kwargs))(
      importance, embeddings, keys)


# Registers mmr, sage_adaptive and dpp (after the rules above, in that order).
# pylint: disable-next=wrong-import-position,unused-import
from sage_jax import relevance_diversity  # noqa: E402,F401
