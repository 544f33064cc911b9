"""What the selection rules share: the Selection they return, budget checks, top-K with
ties to the lowest index, and greedy max-min cosine sampling (ties and jit == eager:
`same_is_one`)."""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Selection(NamedTuple):
  keep_idx: jax.Array   # i32[K] patch indices
  keep_mask: jax.Array  # bool[K] which slots are sent
  demand: jax.Array     # i32[] units wanted before the budget cap


def fixed(idx, budget):
  return Selection(idx.astype(jnp.int32), jnp.ones(budget, bool), jnp.int32(budget))


def fixed_slots(idx, budget, width: int):
  """`fixed` at a traced budget: i32[width] whose first `budget` slots are the picks."""
  return Selection(idx.astype(jnp.int32), jnp.arange(width) < budget,
                   jnp.asarray(budget, jnp.int32))


def budget_table(values) -> jax.Array:
  """A per-K count computed in Python (exact, as the static rule computes it), as a table a
  traced budget indexes: values[k] for k = 0..width."""
  return jnp.asarray(np.asarray(values, np.int32))


def check_budget(budget, n):
  if not 1 <= budget <= n:
    raise ValueError(f"budget {budget} is out of range; allowed: 1..{n} (number of patches)")


def top(importance, k):
  """Indices of the k largest, descending; equal values keep ascending index order."""
  return jax.lax.top_k(importance, k)[1]


def l2_normalize(x):
  """Zero vectors stay zero, so their cosine with everything is 0 (defined, finite)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# Cosines this close to 1 are taken as exactly 1 (8 float32 epsilons, about 1e-6).
SAME_DIRECTION_TOL = 8 * float(np.finfo(np.float32).eps)


def same_is_one(cos):
  """Cosines within SAME_DIRECTION_TOL of 1 set to exactly 1, so that patches pointing the
  same way tie exactly, jit and eager alike, and go to the lowest index (docs/choices.md)."""
  return jnp.where(cos >= 1.0 - SAME_DIRECTION_TOL, 1.0, cos)


def greedy_maxmin(x, min_dist, count, width=None):
  """`count` more greedy max-min cosine picks on unit rows x: f32[P, D] -> i32[count];
  min_dist: f32[P], distance to the set so far (-inf: not pickable). Ties to the lowest.
  width: a traced count's picks in the first `count` of i32[width]."""
  def pick(i, carry):
    chosen, min_dist = carry
    j = jnp.argmax(min_dist)
    return chosen.at[i].set(j), jnp.minimum(min_dist, 1.0 - same_is_one(x @ x[j])).at[j].set(
        -jnp.inf)

  chosen = jnp.zeros(count if width is None else width, jnp.int32)
  if chosen.shape[0] == 0:  # no slot to fill (K = 1: the seed alone)
    return chosen
  return jax.lax.fori_loop(0, count, pick, (chosen, min_dist))[0]


def extend_maxmin(embeddings, kept, count):
  """kept (i32[M]) followed by `count` greedy max-min picks from outside it, each scored by
  its minimum cosine distance to every kept or already picked patch."""
  x = l2_normalize(jnp.asarray(embeddings))
  min_dist = jnp.min(1.0 - same_is_one(x @ x[kept].T), axis=1).at[kept].set(-jnp.inf)
  return jnp.concatenate([kept, greedy_maxmin(x, min_dist, count)])


def farthest_point(embeddings, seed_pos, budget, width=None, pickable=None):
  """Greedy max-min cosine distance on f32[P, D] -> positions in pick order, seed first
  (ties to the lowest position: callers pass candidates in ascending patch order). width: a
  traced budget's picks in the first `budget` of i32[width]; pickable: bool[P], the rows
  that may be picked (all: None)."""
  x = l2_normalize(embeddings)
  # The seed carries -inf so it is never picked again.
  min_dist = 1.0 - same_is_one(x @ x[seed_pos])
  if pickable is not None:
    min_dist = jnp.where(pickable, min_dist, -jnp.inf)
  min_dist = min_dist.at[seed_pos].set(-jnp.inf)
  rest = greedy_maxmin(x, min_dist, budget - 1, None if width is None else width - 1)
  return jnp.concatenate([jnp.reshape(seed_pos, (1,)).astype(jnp.int32), rest])


def round_half_up(x: float) -> int:
  # Python's round() goes to even (round(2.5) == 2); a count that halves up reads plainer.
  return math.floor(x + 0.5)


