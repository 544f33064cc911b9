"""Every rule's traced-budget form (`Rule.slots`) against the rule at a static K.

The sweep compiles one selection program for every budget from `Rule.slots`
(`rules.select_batch_slots`), so a rule's slots at width W and budget K must pick exactly
what the rule picks at a static K: the same indices in the same order, the same mask and
demand, at every K <= W. The rule at a static K is, for the paper's rules, the form first
written per K (tests/rules/static_paper.py: the library keeps only the slots form, and its
rule at K is that form at width K, checked here too); for the field's rules, the rule
itself (tests/rules/test_field.py checks its core against numpy references). Checked under
jit (one program per rule, K traced, as the sweep runs it) against the reference jitted at
each static K, on a batch of random, clustered and duplicate-row data with many ties of
importance, at the budgets in BUDGETS.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax import rules
from tests.rules import static_paper

N, D, B = 49, 16, 6
WIDTH = 24  # below N: slots past the width are never asked for
# Budgets checked: the smallest ones (where pools, splits and schedules change most from one
# K to the next), a few between, and the width itself.
BUDGETS = (1, 2, 3, 5, 8, 13, 24)
QUICK = (1, 4, 24)  # the inner loop's budgets (pytest -m "not slow"), default parameters
PARAMS = {"threshold": [{}, {"delta": 0.03}], "sum_threshold": [{}, {"delta": 0.5}],
          "sage": [{}, {"pool_ratio": 1.5}, {"pool_ratio": 3.0}],
          "swap": [{"swap_frac": 0.25}, {"swap_frac": 0.5}, {"swap_frac": 1.0}],
          "vispruner": [{}, {"ratio": 0.25}], "cdpruner": [{}, {"theta": 0.0}],
          "dart": [{}, {"pivots": 1}, {"pivots": 6}], "bat": [{}, {"attentive_frac": 0.25}]}
SLOTTED = [name for name, rule in rules.RULES.items() if rule.slots is not None]


def _batch():
  """[B, N] importances (softmax; rows 1 and 4 with exact ties) and [B, N, D] embeddings
  (random, clustered, and a row with duplicate patches and a zero patch)."""
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(B, N)) * 2
  logits[1] = np.round(logits[1])             # many equal importances
  logits[4] = 0.0                             # all equal
  imp = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  emb = rng.normal(size=(B, N, D))
  centres = rng.normal(size=(5, D))
  emb[2] = centres[rng.integers(0, 5, N)] + 0.01 * rng.normal(size=(N, D))
  emb[3, 10:20] = emb[3, 10]                  # duplicates
  emb[3, 30] = 0.0                            # a zero patch
  return jnp.asarray(imp, jnp.float32), jnp.asarray(emb, jnp.float32), jnp.arange(B) + 100


def _cases(full):
  return [(name, params) for name in SLOTTED for params in
          (PARAMS.get(name, [{}]) if full else [{}])]


def _reference_batch(name, imp, emb, index, k, seed, **params):
  """The static-K reference of rule `name`, vmapped as `rules.select_batch` vmaps the rule."""
  fn = static_paper.STATIC.get(name, rules.RULES[name].fn)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(index)
  return jax.vmap(lambda a, b, c: fn(a, b, c, k, **params))(imp, emb, keys)


# Computed once per worker and shared by the tests that need them: the static picks per
# (K, default or other parameters), so the quick test's programs (default parameters at 1 and
# 24) serve the full test's at those budgets, and the traced programs per case.
_STATIC = {}
_TRACED = {}


def _static_picks(k, extra):
  """{(name, str(params)): (keep_idx, keep_mask, demand)} at a static K, of the quick test's
  cases (extra=False) or the full test's others (extra=True): each case's reference, in one
  program per K (as the sweep's per-budget steps held them); the library's rule at that K
  (`rules.select_batch`) must give the same."""
  if (k, extra) not in _STATIC:
    imp, emb, index = _batch()
    cases = ([c for c in _cases(full=True) if c not in _cases(full=False)] if extra
             else _cases(full=False))
    want, got = jax.device_get(jax.jit(lambda: [
        [tuple(f(name, imp, emb, index, k, 3, **params)) for name, params in cases]
        for f in (_reference_batch, rules.select_batch)])())
    for (name, params), w, g in zip(cases, want, got):
      for a, b in zip(w, g):
        np.testing.assert_array_equal(b, a, err_msg=f"rule {name} {params} at K={k}")
    _STATIC[k, extra] = dict(zip([(name, str(params)) for name, params in cases], want))
  return _STATIC[k, extra]


def _traced(name, params):
  """Rule `name`'s slots at width WIDTH over the batch, one program for every K (traced)."""
  if (name, str(params)) not in _TRACED:
    imp, emb, index = _batch()
    _TRACED[name, str(params)] = jax.jit(
        lambda k: rules.select_batch_slots(name, imp, emb, index, k, WIDTH, 3, **params))
  return _TRACED[name, str(params)]


def test_slots_pick_what_the_rule_picks():
  """Every slotted rule at QUICK, default parameters (one test: one worker computes the
  static picks)."""
  for k in QUICK:
    _compare(k, _cases(full=False))


@pytest.mark.slow
@pytest.mark.parametrize("k", BUDGETS)
def test_slots_pick_what_the_rule_picks_at_every_budget_and_parameter(k):
  """Every slotted rule at every parameter of PARAMS, at one budget of BUDGETS (a test per
  budget, not per rule: the workers share the static programs, one per budget, between
  them instead of each compiling all)."""
  _compare(k, _cases(full=True))


def _compare(k, cases):
  for name, params in cases:
    extra = (name, params) not in _cases(full=False)
    want_idx, want_mask, want_demand = _static_picks(k, extra)[name, str(params)]
    got = _traced(name, params)(jnp.int32(k))
    where = f"{name} {params} K={k}"
    np.testing.assert_array_equal(got.keep_idx[:, :k], want_idx, err_msg=where)
    np.testing.assert_array_equal(got.keep_mask[:, :k], want_mask, err_msg=where)
    assert not got.keep_mask[:, k:].any(), where
    np.testing.assert_array_equal(got.demand, want_demand, err_msg=where)


def test_the_rules_without_slots_are_the_ones_the_sweep_compiles_per_budget():
  """A rule without `slots` still runs (in the per-budget program); this list is what the
  docs say compiles per budget, so adding a slots form means updating them."""
  assert sorted(set(rules.RULES) - set(SLOTTED)) == [
      "dpp", "mmr", "sage_adaptive", "sage_nested"]
