"""Tests for sage_jax.rules.field against plain-numpy float64 references.

The references below are written from the rule statements (docs/field.md) with simple
loops; they share no code with sage_jax. Cosines within 8 float32 epsilons of 1 count as
exactly 1 (the package's documented convention), so duplicates tie exactly in both.

Every K from 1 to N: the rule's core `<rule>_slots` (the rule is `fixed(<rule>_slots(...,
budget, slots=budget))`) is compiled once per (rule, N, parameter) with K a traced scalar and
called for each K; eager runs (about 200 us per op here) or one jit per K would take minutes.
The rule itself, static K, is checked against the reference at a few K, jit and eager
(`jax.disable_jit`) alike, and vmapped over a batch.

Data are drawn with fixed seeds and checked to be well separated: each reference also returns
the smallest gap between a winning score and a different score it beat, and the tests assert
it is far above the rounding of the dtype compared (MARGINS) before comparing picks. Random
data at N = 196 have decisions 1e-7 apart, below float32 rounding, so every K there runs in
float64 (`jax.enable_x64`, the same code); every K at N = 49 runs in float32.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sage_jax.rules import field

SAME_TOL = 8 * np.finfo(np.float32).eps
SPANNED = 1e-4   # cdpruner: spanned when conditional variance <= SPANNED * L_jj


# ----------------------------------------------------------------------------
# numpy references (float64, from the statements)
# ----------------------------------------------------------------------------
def ref_cos(emb):
  """Cosine matrix; zero rows have cosine 0 with everything, themselves included. Read-only,
  kept for the next call on the same rows (a test asks for every K: half its time else)."""
  x = np.asarray(emb, np.float64)
  return _ref_cos(x.shape, x.tobytes())


@functools.lru_cache(maxsize=4)
def _ref_cos(shape, data):
  x = np.frombuffer(data, np.float64).reshape(shape)
  xn = x / np.maximum(np.sqrt((x * x).sum(1, keepdims=True)), 1e-12)
  cos = (xn[:, None, :] * xn[None, :, :]).sum(-1)  # identical rows give identical values
  cos = np.where(cos >= 1.0 - SAME_TOL, 1.0, cos)
  cos.setflags(write=False)
  return cos


def desc(values, among=None):
  """Indices (of `among`, default all) by descending value, ties to the lowest index."""
  among = range(len(values)) if among is None else among
  return sorted(among, key=lambda i: (-values[i], i))


def gap(values, among):
  """best - (best value different from best) over `among`; inf if all equal."""
  vals = sorted({float(values[i]) for i in among}, reverse=True)
  return vals[0] - vals[1] if len(vals) > 1 else np.inf


def min_step(values):
  """Smallest gap between two different values (inf if fewer than two)."""
  v = np.unique(np.asarray(values, np.float64))
  v = v[np.isfinite(v)]
  return float(np.diff(v).min()) if len(v) > 1 else np.inf


def ref_divprune(emb, K):
  """First: the patch whose nearest other patch (cosine distance) is farthest; then K - 1
  times the patch with the largest minimum distance to the picks. Ties lowest index."""
  d = 1.0 - ref_cos(emb)
  n = len(d)
  nearest = (d + np.diag(np.full(n, np.inf))).min(1)  # N = 1: inf
  picks, margin = [desc(nearest)[0]], gap(nearest, range(n))
  mind, avail = d[picks[0]].copy(), np.ones(n, bool)
  avail[picks[0]] = False
  while len(picks) < K:
    cand = np.flatnonzero(avail)
    best = mind[cand].max()
    picks.append(int(cand[mind[cand] == best][0]))  # the lowest index among the best
    margin = min(margin, gap(mind, cand))
    avail[picks[-1]] = False
    mind = np.minimum(mind, d[picks[-1]])
  return picks, margin


def ref_vispruner(imp, emb, K, ratio=0.5):
  """T = floor(ratio K) most important; the rest (descending importance) thinned by rounds:
  r = min(8, len - (K - T), len(a)); a = positions 0, 2, ..; b = 1, 3, ..; a's score = max
  cosine to a b (-inf if no b); drop the r highest (ties earlier position); kept a's in
  descending score (stable), then b. Sent: the T, then the list."""
  cos = ref_cos(emb)
  t = math.floor(ratio * K)
  order = desc(np.asarray(imp, np.float64))
  lst, margin = order[t:], np.inf
  while len(lst) > K - t:
    a, b = lst[0::2], lst[1::2]
    r = min(8, len(lst) - (K - t), len(a))
    score = cos[np.ix_(a, b)].max(1) if b else np.full(len(a), -np.inf)
    ranked = desc(score)
    margin = min(margin, min_step(score))
    lst = [a[k] for k in ranked[r:]] + b
  return order[:t] + lst, margin


def ref_quality(imp, theta):
  imp = np.asarray(imp, np.float64)
  span = imp.max() - imp.min()
  rel = (imp - imp.min()) / span if span > 0 else np.zeros_like(imp)
  return np.exp(theta / (2 * (1 - theta)) * rel)


def ref_cdpruner(imp, emb, K, theta=0.5):
  """L = diag(q) cos diag(q). Each step: among unpicked patches whose conditional variance
  given the greedy picks, v_j = L_jj - L_jS L_SS^-1 L_Sj, exceeds SPANNED * L_jj, the largest
  v_j (ties lowest); if none, the largest q (ties lowest). Returns picks, gap margin and the
  smallest |log10(s / SPANNED)|, s = v_j / L_jj, over each step's pick and largest s (how far
  the decisions are from the spanned threshold)."""
  q = ref_quality(imp, theta)
  L = q[:, None] * ref_cos(emb) * q[None, :]
  n = len(q)
  picks, greedy, margin, thr = [], [], np.inf, np.inf
  while len(picks) < K:
    cand = [j for j in range(n) if j not in picks]
    v = np.diag(L).copy()
    if greedy:
      sol = np.linalg.solve(L[np.ix_(greedy, greedy)], L[np.ix_(greedy, cand)])
      v[cand] -= (L[np.ix_(greedy, cand)] * sol).sum(0)
    open_ = [j for j in cand if v[j] > SPANNED * L[j, j]]
    s = {j: max(v[j], 1e-300) / L[j, j] for j in cand if L[j, j] > 0}
    if s:  # the decision "any open?" hangs on the largest s
      thr = min(thr, abs(np.log10(max(s.values()) / SPANNED)))
    if open_:
      picks.append(desc(v, open_)[0])
      thr = min(thr, abs(np.log10(s[picks[-1]] / SPANNED)))  # the pick must be clearly open
      greedy.append(picks[-1])
      margin = min(margin, gap(v, open_))
    else:
      picks += desc(q, cand)[:K - len(picks)]
  return picks, margin, thr


def ref_dart(imp, emb, K, pivots=4):
  """P = min(pivots, K) most important are pivots; M = K - P shared M // P each, one more
  for the first M % P; pivot by pivot (descending importance) its share of the unchosen
  patches by ascending cosine to it (ties lowest). Sent: pivots, then the picks in order."""
  cos = ref_cos(emb)
  p = min(pivots, K)
  m = K - p
  out = desc(np.asarray(imp, np.float64))[:p]
  margin = np.inf
  for i, pv in enumerate(list(out)):
    share = m // p + (i < m % p)
    cand = [c for c in range(len(cos)) if c not in out]
    ranked = desc(-cos[pv], cand)
    margin = min(margin, min_step(cos[pv, ranked[:share + 1]]))
    out += ranked[:share]
  return out, margin


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def softmax_importance(rng, n):
  z = rng.normal(size=n)
  w = np.exp(z - z.max())
  return (w / w.sum()).astype(np.float32)


def make_data(kind, n, d, seed):
  """(importance f32[N], embeddings f32[N, D]) of one kind, fixed seed."""
  rng = np.random.default_rng(seed)
  imp = softmax_importance(rng, n)
  if kind == "clustered":      # 6 centres, small noise
    centres = rng.normal(size=(6, d))
    emb = centres[rng.integers(0, 6, size=n)] + 0.3 * rng.normal(size=(n, d))
  elif kind == "duplicates":   # N // 4 distinct rows, the rest exact copies, one zero row
    base = rng.normal(size=(n // 4, d))
    emb = base[np.concatenate([np.arange(n // 4), rng.integers(0, n // 4, n - n // 4)])]
    emb[n // 2] = 0.0
  else:                        # gaussian; "constant": equal importance (all ties)
    emb = rng.normal(size=(n, d))
    if kind == "constant":
      imp = np.full(n, 1.0 / n, np.float32)
  return imp, emb.astype(np.float32)


KINDS = ("gaussian", "clustered", "duplicates", "constant")
SIZES = ((49, 16), (196, 32))

REFS = {"divprune": lambda i, e, k: ref_divprune(e, k),
        "vispruner": ref_vispruner, "cdpruner": ref_cdpruner, "dart": ref_dart}
# Parameter values run at N = 49 on top of the defaults (primary parameter of each rule).
EXTRA = {"vispruner": [{"ratio": 0.0}, {"ratio": 1.0}, {"ratio": 0.3}],
         "cdpruner": [{"theta": 0.0}, {"theta": 0.9}],
         "dart": [{"pivots": 1}, {"pivots": 9}]}
# Smallest allowed gap between a winning score and a different runner-up, per dtype: about
# 1e4 times the rounding of a cosine (float64 separates any random data; float32 needs it).
MARGINS = {np.float64: 1e-9, np.float32: 1e-6}

_CORES = {}


def x64():
  """float64 inside the block (jax >= 0.8: jax.enable_x64; 0.7: jax.experimental's)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=import-outside-toplevel
  return enable_x64()


def core(name, n, dtype, **kw):
  """jit `<name>_slots` with slots = N and K traced: one compile for every K."""
  key = (name, n, dtype, tuple(sorted(kw.items())))
  if key not in _CORES:
    fn = getattr(field, f"{name}_slots")
    _CORES[key] = jax.jit(lambda imp, emb, k: fn(imp, emb, k, n, **kw))
  return _CORES[key]


def reference(name, imp, emb, K, **kw):
  """(picks, margin) of the reference; for cdpruner also asserts the threshold distance."""
  out = REFS[name](imp, emb, K, **kw)
  if name == "cdpruner":
    assert out[2] > 1.0, f"a decision within 10x of the spanned threshold: {out}"
  return out[0], out[1]


# ----------------------------------------------------------------------------
# 1. every K, every data kind, against the references
# ----------------------------------------------------------------------------
def check_every_k(name, kind, n, d, dtype, seed=0, **kw):
  """The rule's core at every K against the reference, inputs and arithmetic in dtype."""
  imp, emb = make_data(kind, n, d, seed)
  greedy = name in ("divprune", "cdpruner")
  if greedy:  # the statement's picks for K are its first K steps, whatever K is
    full, margin = reference(name, imp, emb, n, **kw)
    assert margin > MARGINS[dtype], f"data not well separated: {margin}"
  fn = core(name, n, dtype, **kw)
  imp_j, emb_j = jnp.asarray(imp, dtype), jnp.asarray(emb, dtype)
  assert emb_j.dtype == dtype
  for K in range(1, n + 1):
    if greedy:
      want = full[:K]
    else:
      want, margin = reference(name, imp, emb, K, **kw)
      assert margin > MARGINS[dtype], f"K={K}: data not well separated: {margin}"
    got = np.asarray(fn(imp_j, emb_j, K))[:K]
    ctx = f"{name} {kw} {kind} N={n} K={K}: sets differ by {set(got) ^ set(want)}"
    assert len(set(got.tolist())) == K, ctx
    np.testing.assert_array_equal(got, want, err_msg=ctx)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(REFS))
def test_every_k_n49_float32(name, kind):
  """The production dtype at every K, N = 49, on data whose decisions are >= 1e-6 apart."""
  check_every_k(name, kind, *SIZES[0], np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(REFS))
def test_every_k_n196_float64(name, kind):
  """N = 196 in float64 arithmetic (the same code): random data there has decisions 1e-7
  apart, below float32 rounding, which float64 resolves exactly as the reference does."""
  with x64():
    check_every_k(name, kind, *SIZES[1], np.float64)


@pytest.mark.parametrize("name,kw", [(k, p) for k, ps in EXTRA.items() for p in ps])
@pytest.mark.parametrize("kind", ("gaussian", "duplicates", "constant"))
def test_every_k_other_parameters(name, kw, kind):
  with x64():
    check_every_k(name, kind, 49, 16, np.float64, seed=1, **kw)


# ----------------------------------------------------------------------------
# 2. the rules themselves: jit == eager == reference, vmap, invariants
# ----------------------------------------------------------------------------
RULES = {"divprune": field.divprune, "vispruner": field.vispruner,
         "cdpruner": field.cdpruner, "dart": field.dart}


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_jit_equals_eager_and_reference(name):
  n, d = 49, 16
  budgets = (1, 7, n // 2, n)
  # Every budget (each static) in one program: one program each takes twice the compile time.
  jitted_rule = jax.jit(lambda imp, emb: [RULES[name](imp, emb, None, K) for K in budgets])
  for kind in ("gaussian", "duplicates"):
    imp, emb = make_data(kind, n, d, 2)
    imp, emb = jnp.asarray(imp), jnp.asarray(emb)
    for K, jitted in zip(budgets, jitted_rule(imp, emb)):
      with jax.disable_jit():
        eager = RULES[name](imp, emb, None, K)
      idx = np.asarray(jitted.keep_idx)
      assert jitted.keep_idx.dtype == jnp.int32 and idx.shape == (K,)
      assert np.asarray(jitted.keep_mask).all() and int(jitted.demand) == K
      np.testing.assert_array_equal(np.asarray(eager.keep_idx), idx, err_msg=f"{kind} K={K}")
      want, margin = reference(name, imp, emb, K)
      assert margin > MARGINS[np.float32], f"{kind} K={K}: data not well separated"
      np.testing.assert_array_equal(idx, want, err_msg=f"{kind} K={K}")


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_vmaps(name):
  n, d, K = 49, 16, 11
  data = [make_data(kind, n, d, 3) for kind in KINDS]
  imps = jnp.asarray(np.stack([i for i, _ in data]))
  embs = jnp.asarray(np.stack([e for _, e in data]))
  sel = jax.jit(jax.vmap(lambda i, e: RULES[name](i, e, None, K)))(imps, embs)
  assert sel.keep_idx.shape == (len(KINDS), K)
  for b, (imp, emb) in enumerate(data):
    want, margin = reference(name, imp, emb, K)
    assert margin > MARGINS[np.float32], f"{KINDS[b]}: data not well separated"
    np.testing.assert_array_equal(np.asarray(sel.keep_idx[b]), want, err_msg=KINDS[b])


# ----------------------------------------------------------------------------
# 3. degenerate inputs and parameter errors
# ----------------------------------------------------------------------------
def test_cdpruner_past_rank():
  """K > D, duplicates, zero embeddings: once every unpicked patch is spanned by the picks,
  the rest go by descending q (= descending importance for theta > 0; index for theta = 0)."""
  rng = np.random.default_rng(5)
  n = 30
  imp = softmax_importance(rng, n)
  by_importance = desc(np.asarray(imp, np.float64))
  rule = jax.jit(field.cdpruner, static_argnames="budget")  # theta traced: one compile
  cases = {"width 4": (4, rng.normal(size=(n, 4))),
           # Scaled by powers of 2, so the unit vectors of a direction are bitwise equal.
           "3 directions": (3, rng.normal(size=(3, 4))[np.arange(n) % 3] * 2.0 ** rng.integers(
               -2, 3, size=(n, 1))),
           "all zero": (0, np.zeros((n, 4)))}
  for label, (rank, emb) in cases.items():
    emb = emb.astype(np.float32)
    for theta in (0.5, 0.0):
      sel = np.asarray(rule(jnp.asarray(imp), jnp.asarray(emb), None, budget=n,
                            theta=theta).keep_idx)
      head = sel[:rank].tolist()
      rest = [i for i in (by_importance if theta > 0 else range(n)) if i not in head]
      np.testing.assert_array_equal(sel[rank:], rest, err_msg=f"{label} theta={theta}")
      np.testing.assert_array_equal(sel, ref_cdpruner(imp, emb, n, theta)[0], err_msg=label)
  # Equal importance, theta > 0: relevance is all 0, so q = 1 and theta changes nothing.
  flat = np.full(n, 0.5, np.float32)
  emb = rng.normal(size=(n, 4)).astype(np.float32)
  runs = [rule(jnp.asarray(flat), jnp.asarray(emb), None, budget=n, theta=t).keep_idx
          for t in (0.0, 0.5, 0.9)]
  np.testing.assert_array_equal(runs[0], runs[1])
  np.testing.assert_array_equal(runs[0], runs[2])


def test_small_n_and_budget_edges():
  # Jitted (op by op, every op compiles for its shapes: 3 s against 0.5 s for two programs).
  ones = jax.jit(lambda imp, emb: {name: rule(imp, emb, None, 1).keep_idx
                                   for name, rule in RULES.items()})(jnp.ones(1), jnp.ones((1, 4)))
  assert sorted(ones) == sorted(RULES)
  for name, one in ones.items():
    np.testing.assert_array_equal(one, [0], err_msg=name)
  imp, emb = make_data("gaussian", 49, 16, 4)
  top = np.asarray(jax.lax.top_k(imp, 5)[1])
  # ratio 1: the K most important; pivots >= K: the K most important.
  edges = jax.jit(lambda imp, emb: (field.vispruner(imp, emb, None, 5, ratio=1.0).keep_idx,
                                    field.dart(imp, emb, None, 5, pivots=9).keep_idx))
  vis, dart = edges(imp, emb)
  np.testing.assert_array_equal(vis, top)
  np.testing.assert_array_equal(dart, top)


@pytest.mark.parametrize("name,kw,text", [
    ("vispruner", {"ratio": 1.5}, "ratio 1.5 is not allowed; it must be in [0, 1]"),
    ("vispruner", {"ratio": -0.1}, "ratio -0.1 is not allowed; it must be in [0, 1]"),
    ("cdpruner", {"theta": 1.0}, "theta 1.0 is not allowed; it must be in [0, 1)"),
    ("cdpruner", {"theta": -0.5}, "theta -0.5 is not allowed; it must be in [0, 1)"),
    ("dart", {"pivots": 0}, "pivots 0 is not allowed; it must be an integer >= 1"),
    ("dart", {"pivots": 2.5}, "pivots 2.5 is not allowed; it must be an integer >= 1"),
    ("dart", {"pivots": True}, "pivots True is not allowed; it must be an integer >= 1"),
])
def test_parameter_errors(name, kw, text):
  imp, emb = make_data("gaussian", 16, 4, 0)
  with pytest.raises(ValueError) as err:
    RULES[name](jnp.asarray(imp), jnp.asarray(emb), None, 4, **kw)
  assert str(err.value) == text and "\n" not in text


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("budget", [0, 17])
def test_budget_errors(name, budget):
  imp, emb = make_data("gaussian", 16, 4, 0)
  with pytest.raises(ValueError, match=f"budget {budget} is out of range; allowed: 1..16"):
    RULES[name](jnp.asarray(imp), jnp.asarray(emb), None, budget)
