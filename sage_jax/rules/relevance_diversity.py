"""Relevance-diversity rules (`mmr`, `sage_adaptive`, `dpp`): each trades attention against
max-min spread per image, for an edge whose attention has sinks (docs/beyond.md).
"""
import math

import jax
import jax.numpy as jnp

from sage_jax.rules import common


def _check_range(name, value, lo, hi=math.inf):
  """Python numbers are checked; a traced value (a sweep over it under jit) is not."""
  if isinstance(value, (int, float)) and not lo <= value <= hi:
    allowed = f"in [{lo}, {hi}]" if hi < math.inf else f">= {lo}"
    raise ValueError(f"{name} {value} is not allowed; it must be {allowed}")


def mmr(importance, embeddings, key, budget, relevance_weight=0.5):
  """Maximal marginal relevance (Carbonell & Goldstein 1998): from the most important patch,
  each next pick maximises w * importance_i / max - (1 - w) * max cosine to the picks, w =
  relevance_weight (1: topk, 0: `diversity`; docs/choices.md)."""
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  _check_range("relevance_weight", relevance_weight, 0, 1)
  importance = jnp.asarray(importance)
  r = importance / jnp.maximum(importance.max(), 1e-12)
  x = common.l2_normalize(jnp.asarray(embeddings))
  sim = common.same_is_one(x @ x.T)
  seed = jnp.argmax(importance)

  def pick(i, carry):
    chosen, max_sim, taken = carry
    gain = relevance_weight * r - (1.0 - relevance_weight) * max_sim
    j = jnp.argmax(jnp.where(taken, -jnp.inf, gain))
    return chosen.at[i].set(j), jnp.maximum(max_sim, sim[j]), taken.at[j].set(True)

  carry = (jnp.zeros(budget, jnp.int32).at[0].set(seed), sim[seed],
           jnp.zeros(n, bool).at[seed].set(True))
  return common.fixed(jax.lax.fori_loop(1, budget, pick, carry)[0], budget)


def perplexity(importance):
  """exp(Shannon entropy) of importance / sum: the effective number of attended patches."""
  p = importance / jnp.maximum(jnp.sum(importance), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def sage_adaptive(importance, embeddings, key, budget, pool_ratio=2.0, perplexity_ratio=1.0):
  """SAGE whose pool follows how concentrated the image's importance is: P = clip(max(
  ceil(pool_ratio*K), ceil(perplexity_ratio*perplexity)), K, N) patches (docs/choices.md)."""
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  if not pool_ratio > 0:
    raise ValueError(f"pool_ratio {pool_ratio} is not allowed; it must be > 0")
  _check_range("perplexity_ratio", perplexity_ratio, 0)
  importance = jnp.asarray(importance)
  size = jnp.clip(jnp.maximum(math.ceil(pool_ratio * budget),
                              jnp.ceil(perplexity_ratio * perplexity(importance))), budget, n)
  in_pool = jnp.zeros(n, bool).at[common.top(importance, n)].set(jnp.arange(n) < size)
  x = common.l2_normalize(jnp.asarray(embeddings))
  seed = jnp.argmax(importance)
  min_dist = jnp.where(in_pool, 1.0 - common.same_is_one(x @ x[seed]), -jnp.inf)
  min_dist = min_dist.at[seed].set(-jnp.inf)
  rest = common.greedy_maxmin(x, min_dist, budget - 1)
  return common.fixed(jnp.concatenate([seed[None].astype(jnp.int32), rest]), budget)


def dpp(importance, embeddings, key, budget, quality_exponent=1.0, ridge=1e-3):
  """Greedy MAP of a quality-diversity DPP (Chen, Zhang & Zhou 2018): kernel diag(q) (X X^T +
  ridge I) diag(q), q = (importance / max)^quality_exponent (docs/choices.md)."""
  del key
  n = importance.shape[0]
  common.check_budget(budget, n)
  _check_range("quality_exponent", quality_exponent, 0)
  if isinstance(ridge, (int, float)) and not ridge > 0:
    raise ValueError(f"ridge {ridge} is not allowed; it must be > 0")
  importance = jnp.asarray(importance)
  q = (importance / jnp.maximum(importance.max(), 1e-12)) ** quality_exponent
  x = common.l2_normalize(jnp.asarray(embeddings))
  # The diagonal x_i . x_i is exactly 1 (0 for a zero embedding), not the computed product:
  # with equal importance the first pick is then an exact tie, given to the lowest index.
  gram = jnp.where(jnp.eye(n, dtype=bool), jnp.any(x != 0, axis=1)[:, None],
                   common.same_is_one(x @ x.T))
  kernel = q[:, None] * (gram + ridge * jnp.eye(n)) * q[None, :]

  def pick(k, carry):
    chosen, cis, d2, taken = carry
    j = jnp.argmax(jnp.where(taken, -jnp.inf, d2))
    e = (kernel[j] - cis.T @ cis[:, j]) / jnp.sqrt(jnp.maximum(d2[j], 1e-30))
    return chosen.at[k].set(j), cis.at[k].set(e), d2 - e**2, taken.at[j].set(True)

  carry = (jnp.zeros(budget, jnp.int32), jnp.zeros((budget, n)), jnp.diag(kernel),
           jnp.zeros(n, bool))
  return common.fixed(jax.lax.fori_loop(0, budget, pick, carry)[0], budget)
