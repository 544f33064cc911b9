"""Training-free token selection rules from the 2025 literature (`divprune`, `vispruner`,
`cdpruner`, `dart`), restated for one ViT image: importance f32[N] (any importance score),
embeddings f32[N, D]. Same conventions as sage_jax/rules: static K, K distinct int32 indices,
ties to the lowest patch index jit and eager alike. Statements and every decision the papers
leave open: docs/field_rules.md.

Each rule is `common.fixed(<rule>_slots(..., budget, slots=budget))`. `<rule>_slots` returns
i32[slots] whose first `budget` entries are the picks; `budget` may be traced, so a test can
compile one program per N and run it at every K (tests/rules/test_field.py).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.rules import common


def slots_of(rule_slots):
  """A `<rule>_slots(importance, embeddings, budget, slots, **params)` in the registry's
  `Rule.slots` form (key unused; the picks' slots masked past the budget)."""
  def slots(importance, embeddings, key, budget, width, **params):
    del key
    idx = rule_slots(importance, embeddings, budget, width, **params)
    return common.fixed_slots(idx, budget, width)
  return slots


def divprune_slots(importance, embeddings, budget, slots):
  """DivPrune's picks, in order, in the first `budget` of i32[slots] (importance unused)."""
  del importance
  n = embeddings.shape[0]
  x = common.l2_normalize(jnp.asarray(embeddings))
  dist = 1.0 - common.same_is_one(x @ x.T)                             # f32[N, N]
  nearest = jnp.min(jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist), axis=1)  # N = 1: inf
  first = jnp.argmax(nearest).astype(jnp.int32)  # int32 picks also under jax_enable_x64

  def pick(i, carry):
    chosen, min_dist = carry
    j = jnp.argmax(min_dist).astype(jnp.int32)
    return chosen.at[i].set(j), jnp.minimum(min_dist, dist[j]).at[j].set(-jnp.inf)

  # A picked patch carries -inf so it is never picked again.
  carry = (jnp.zeros(slots, jnp.int32).at[0].set(first), dist[first].at[first].set(-jnp.inf))
  return jax.lax.fori_loop(1, budget, pick, carry)[0]


def divprune(importance, embeddings, key, budget):
  """DivPrune (Alvar et al., CVPR 2025): greedy max-min cosine distance over all N patches,
  seeded at the patch whose nearest other patch is farthest, so that the set covers the
  content's spread without any importance score (importance is not used). -> K in pick order.
  """
  del key
  common.check_budget(budget, importance.shape[0])
  return common.fixed(divprune_slots(importance, embeddings, budget, budget), budget)


def _vispruner_round(cos, lst, length, r):
  """One VisPruner round on the list lst[:length] (i32[S], padded): a = even positions, b =
  odd; drop the r a's whose largest cosine to any b is highest (ties: earlier position);
  return kept a's in descending score, then b, padded."""
  s = lst.shape[0]
  pos = jnp.arange(s)
  is_a = (pos < length) & (pos % 2 == 0)
  is_b = (pos < length) & (pos % 2 == 1)
  sim = cos[lst][:, lst]                                               # f32[S, S]
  # With no b (length 1) the lone a scores -inf and, at position 0, still ranks first.
  score = jnp.max(jnp.where(is_b[None, :], sim, -jnp.inf), axis=1)
  by_score = common.top(jnp.where(is_a, score, -jnp.inf), s)           # a's first
  kept_a = (length + 1) // 2 - r
  from_a = lst[by_score[jnp.minimum(pos + r, s - 1)]]
  from_b = lst[jnp.clip(2 * (pos - kept_a) + 1, 0, s - 1)]
  return jnp.where(pos < kept_a, from_a, from_b)


def vispruner_slots(importance, embeddings, budget, slots, ratio=0.5):
  """VisPruner's K = budget picks in the first `budget` of i32[slots]: the T most important,
  then the surviving list. The rounds run in a while loop, as their count depends on K."""
  n = importance.shape[0]
  # T = floor(ratio * K) in float64 for every K <= slots: a static table, exact as math.floor.
  t = jnp.asarray(np.array([math.floor(ratio * k) for k in range(slots + 1)], np.int32))[budget]
  keep = budget - t
  order = common.top(jnp.asarray(importance), n)                       # i32[N], descending
  x = common.l2_normalize(jnp.asarray(embeddings))
  cos = common.same_is_one(x @ x.T)                                    # f32[N, N]
  pos = jnp.arange(n)
  lst = order[jnp.minimum(pos + t, n - 1)]                             # order[T:], padded

  def round_(carry):
    lst, length = carry
    r = jnp.minimum(jnp.minimum(8, length - keep), (length + 1) // 2)  # at most all the a's
    return _vispruner_round(cos, lst, length, r), length - r

  # keep = 0 (ratio 1 or K = T): nothing of the list is sent, so no round needs to run.
  lst = jax.lax.while_loop(lambda c: (c[1] > keep) & (keep > 0), round_, (lst, n - t))[0]
  sent = jnp.where(pos < t, order, lst[jnp.maximum(pos - t, 0)])
  return sent[:slots]


def vispruner(importance, embeddings, key, budget, ratio=0.5):
  """VisPruner (Zhang et al., ICCV 2025): the T = floor(ratio*K) most important patches, plus
  K - T of the rest kept by repeatedly dropping near-duplicates: the rest in descending
  importance, split by alternate positions into a, b; the min(8, excess, len(a)) a's most
  similar to some b go; kept a's in descending score, then b. -> K indices, T first."""
  del key
  common.check_budget(budget, importance.shape[0])
  if not 0 <= ratio <= 1:  # a Python number: T is a static count
    raise ValueError(f"ratio {ratio} is not allowed; it must be in [0, 1]")
  return common.fixed(vispruner_slots(importance, embeddings, budget, budget, ratio), budget)


# A patch whose remaining conditional variance is at most this fraction of its own kernel
# diagonal (squared sine of its angle to the span of the picks <= 1e-4, about 0.6 degrees)
# counts as spanned by the picks: past the kernel's rank (docs/field_rules.md).
CDPRUNER_SPANNED = 1e-4


def cdpruner_quality(importance, theta):
  """q = exp(alpha * relevance), alpha = theta / (2 (1 - theta)), relevance = importance
  min-max normalised per image (all 0 when constant): f32[N] -> f32[N], in [1, e^alpha]."""
  importance = jnp.asarray(importance)
  lo, span = importance.min(), importance.max() - importance.min()
  relevance = jnp.where(span > 0, (importance - lo) / jnp.where(span > 0, span, 1.0), 0.0)
  return jnp.exp(theta / (2.0 * (1.0 - theta)) * relevance)


def cdpruner_slots(importance, embeddings, budget, slots, theta=0.5):
  """CDPruner's picks, in order, in the first `budget` of i32[slots]: greedy MAP with the
  incremental Cholesky factor of relevance_diversity.dpp, then descending q past the rank."""
  n = importance.shape[0]
  q = cdpruner_quality(importance, theta)
  x = common.l2_normalize(jnp.asarray(embeddings))
  # Diagonal exactly 1 (0 for a zero embedding), as in relevance_diversity.dpp.
  gram = jnp.where(jnp.eye(n, dtype=bool), jnp.any(x != 0, axis=1)[:, None],
                   common.same_is_one(x @ x.T))
  kernel = q[:, None] * gram * q[None, :]                              # f32[N, N]
  diag = jnp.diag(kernel)

  def pick(k, carry):
    chosen, cis, d2, taken = carry
    open_ = ~taken & (d2 > CDPRUNER_SPANNED * diag)
    greedy = jnp.any(open_)
    j = jnp.where(greedy, jnp.argmax(jnp.where(open_, d2, -jnp.inf)),
                  jnp.argmax(jnp.where(taken, -jnp.inf, q))).astype(jnp.int32)
    e = (kernel[j] - cis.T @ cis[:, j]) / jnp.sqrt(jnp.maximum(d2[j], 1e-30))
    e = jnp.where(greedy, e, 0.0)  # past the rank the factor stays as it is
    return chosen.at[k].set(j), cis.at[k].set(e), d2 - e**2, taken.at[j].set(True)

  carry = (jnp.zeros(slots, jnp.int32), jnp.zeros((slots, n)), diag, jnp.zeros(n, bool))
  return jax.lax.fori_loop(0, budget, pick, carry)[0]


def cdpruner(importance, embeddings, key, budget, theta=0.5):
  """CDPruner (Zhang et al. 2025), for a classifier: greedy MAP (Chen et al. 2018) of the
  DPP kernel L_ij = q_i cos_ij q_j (`cdpruner_quality`), so picks are relevant yet spread.
  theta = 0: q = 1, pure diversity. Past the kernel's rank (every unpicked patch spanned,
  CDPRUNER_SPANNED) the remaining picks go by descending q, ties lowest index. -> K in order.
  """
  del key
  common.check_budget(budget, importance.shape[0])
  # A traced theta (a sweep over it under jit) is not checked.
  if isinstance(theta, (int, float)) and not 0 <= theta < 1:
    raise ValueError(f"theta {theta} is not allowed; it must be in [0, 1)")
  return common.fixed(cdpruner_slots(importance, embeddings, budget, budget, theta), budget)


def dart_slots(importance, embeddings, budget, slots, pivots=4):
  """DART's picks in the first `budget` of i32[slots]: P = min(pivots, K) pivots, then each
  pivot's share of the M = K - P others: M // P each, one more for the first M % P pivots."""
  n, pivots = importance.shape[0], int(pivots)
  p_max = min(pivots, slots)                                           # static
  p = jnp.minimum(pivots, budget)
  m = budget - p
  pivot_idx = common.top(jnp.asarray(importance), p_max)               # i32[P_max]
  x = common.l2_normalize(jnp.asarray(embeddings))
  neg_cos = -common.same_is_one(x[pivot_idx] @ x.T)                    # f32[P_max, N]
  base, extra = m // p, m % p
  big = extra * (base + 1)                        # picks made by the first `extra` pivots

  def pick(t, carry):
    chosen, taken = carry
    owner = jnp.where(t < big, t // (base + 1), extra + (t - big) // jnp.maximum(base, 1))
    j = jnp.argmax(jnp.where(taken, -jnp.inf, neg_cos[owner])).astype(jnp.int32)
    return chosen.at[p + t].set(j), taken.at[j].set(True)

  chosen = jnp.zeros(slots, jnp.int32).at[:p_max].set(pivot_idx)
  taken = jnp.zeros(n, bool).at[pivot_idx].set(jnp.arange(p_max) < p)
  return jax.lax.fori_loop(0, m, pick, (chosen, taken))[0]


def dart(importance, embeddings, key, budget, pivots=4):
  """DART (Wen et al., EMNLP 2025), for a classifier: the P = min(pivots, K) most important
  patches are pivots; pivot by pivot (descending importance), its share of the
  not-yet-chosen patches with the lowest cosine to it, lowest first (ties lowest index):
  duplicates of the pivots are what gets pruned. -> K: pivots, then each pivot's picks."""
  del key
  common.check_budget(budget, importance.shape[0])
  if isinstance(pivots, bool) or not isinstance(pivots, (int, np.integer)) or pivots < 1:
    raise ValueError(f"pivots {pivots} is not allowed; it must be an integer >= 1")
  return common.fixed(dart_slots(importance, embeddings, budget, budget, int(pivots)), budget)
