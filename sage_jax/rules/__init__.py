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
  """A registry entry: the rule's function and the parameter `rule@value` sets (if any)."""
  fn: Callable
  primary: Optional[str] = None

  def params(self) -> dict:
    """{name: default} of the keyword parameters after `budget`, from the signature."""
    sig = list(inspect.signature(self.fn).parameters.values())
    return {p.name: p.default for p in sig[4:]}


RULES = {
    # The paper's rules and baselines (paper.py).
    "random": Rule(paper.random),
    "grid": Rule(paper.grid),
    "topk": Rule(paper.topk),
    "threshold": Rule(paper.threshold, primary="delta"),
    "sum_threshold": Rule(paper.sum_threshold, primary="delta"),
    "diversity": Rule(paper.diversity),
    "sage": Rule(paper.sage, primary="pool_ratio"),
    "sage_nested": Rule(paper.sage_nested, primary="pool_frac"),
    "swap": Rule(paper.swap, primary="swap_frac"),
    "bat": Rule(paper.bat, primary="attentive_frac"),
    "tome": Rule(paper.tome),
    # Beyond the paper: relevance against diversity per image (relevance_diversity.py).
    "mmr": Rule(relevance_diversity.mmr, primary="relevance_weight"),
    "sage_adaptive": Rule(relevance_diversity.sage_adaptive, primary="perplexity_ratio"),
    "dpp": Rule(relevance_diversity.dpp, primary="quality_exponent"),
    # The field's training-free token selection rules of 2025 (field.py).
    "divprune": Rule(field.divprune),
    "vispruner": Rule(field.vispruner, primary="ratio"),
    "cdpruner": Rule(field.cdpruner, primary="theta"),
    "dart": Rule(field.dart, primary="pivots"),
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
