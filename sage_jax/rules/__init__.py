"""Selection rules: which K of N patches go up the link.

A rule is a pure function of ONE example, `rule(importance: f32[N], embeddings: f32[N, D],
key, budget, *, param=default) -> Selection`, with a static K so it jits and vmaps
(`select_batch`). Threshold rules fill K slots with a mask; `demand` > K means the cap bound.
Ties go to the lowest patch index, jit and eager alike (`common.same_is_one`). A rule checks
its own parameters; adding one is a function plus an entry in RULES (README).

RULES is the one table of every rule; no module adds to it when imported.
"""
import inspect
from typing import Callable, NamedTuple, Optional

import jax

from sage_jax.rules.common import Selection  # noqa: F401  (rules.Selection: what a rule returns)
from sage_jax.rules import field, paper, relevance_diversity


class Rule(NamedTuple):
  """A registry entry: the rule's function, the parameter `rule@value` sets (if any), and
  its form at a traced budget (`slots`, or None): slots(importance, embeddings, key, budget,
  width, **params) -> Selection of i32[width] whose first K slots are fn's K picks, so one
  compiled program serves every K <= width (docs/choices.md, "The sweep's programs")."""
  fn: Callable
  primary: Optional[str] = None
  slots: Optional[Callable] = None

  def params(self) -> dict:
    """{name: default} of the keyword parameters after `budget`, from the signature."""
    sig = list(inspect.signature(self.fn).parameters.values())
    return {p.name: p.default for p in sig[4:]}


RULES = {
    # The paper's rules and baselines (paper.py).
    "random": Rule(paper.random, slots=paper.random_slots),
    "grid": Rule(paper.grid, slots=paper.grid_slots),
    "topk": Rule(paper.topk, slots=paper.topk_slots),
    "threshold": Rule(paper.threshold, primary="delta", slots=paper.threshold_slots),
    "sum_threshold": Rule(paper.sum_threshold, primary="delta", slots=paper.sum_threshold_slots),
    "diversity": Rule(paper.diversity, slots=paper.diversity_slots),
    "sage": Rule(paper.sage, primary="pool_ratio", slots=paper.sage_slots),
    "sage_nested": Rule(paper.sage_nested, primary="pool_frac"),
    "swap": Rule(paper.swap, primary="swap_frac", slots=paper.swap_slots),
    "bat": Rule(paper.bat, primary="attentive_frac", slots=paper.bat_slots),
    "tome": Rule(paper.tome, slots=paper.tome_slots),
    # Beyond the paper: relevance against diversity per image (relevance_diversity.py).
    "mmr": Rule(relevance_diversity.mmr, primary="relevance_weight"),
    "sage_adaptive": Rule(relevance_diversity.sage_adaptive, primary="perplexity_ratio"),
    "dpp": Rule(relevance_diversity.dpp, primary="quality_exponent"),
    # The field's training-free token selection rules of 2025 (field.py).
    "divprune": Rule(field.divprune, slots=field.slots_of(field.divprune_slots)),
    "vispruner": Rule(field.vispruner, primary="ratio",
                      slots=field.slots_of(field.vispruner_slots)),
    "cdpruner": Rule(field.cdpruner, primary="theta", slots=field.slots_of(field.cdpruner_slots)),
    "dart": Rule(field.dart, primary="pivots", slots=field.slots_of(field.dart_slots)),
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


def select_batch_slots(name, importance, embeddings, image_index, budget, width: int, seed=0,
                       **kwargs):
  """`select_batch` of a rule with `slots`, at a budget that may be traced (<= width; the
  plan checked it): Selections of i32[B, width], the first K slots of each the picks."""
  rule = get_rule(name).slots
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(image_index)
  return jax.vmap(lambda imp, emb, k: rule(imp, emb, k, budget, width, **kwargs))(
      importance, embeddings, keys)
