"""The stop rules (sage_jax/report/stopping.py) against plain computations written from each
rule's statement, image by image, on constructed records."""
import math

import numpy as np
import pytest

from sage_jax.report import stopping

S, I, C = 5, 300, 4


def _records(seed=0):
  """[step, image] answers with runs of repeats, log-softmaxes, edge log-softmax, units."""
  rng = np.random.RandomState(seed)
  pred = rng.randint(0, 3, (S, I))
  logits = rng.randn(S, I, C) * 2
  logits[np.arange(S)[:, None], np.arange(I)[None], pred] += 2.5  # the answer usually wins
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  edge = rng.randn(I, C)
  edge_logp = edge - np.log(np.exp(edge).sum(-1, keepdims=True))
  units = np.cumsum(rng.randint(0, 6, (S, I)), 0) + 4
  return dict(pred=pred, logp=logp, edge_logp=edge_logp, units=units,
              conf=np.exp(logp).max(-1), label=rng.randint(0, C, I))


def _first(reached_at):
  """The first step s (of S) at which reached_at(s) holds, else the last."""
  return next((s for s in range(S) if reached_at(s)), S - 1)


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_patience_stops_once_the_answer_held_for_t_steps(t):
  pred = _records()["pred"]
  want = [_first(lambda s: s >= t and all(pred[s - j, i] == pred[s, i] for j in range(1, t + 1)))
          for i in range(I)]
  np.testing.assert_array_equal(stopping.patience_stop(pred, t), want)


def test_patience_by_hand():
  pred = np.array([[1, 1, 2], [1, 2, 2], [3, 2, 2], [3, 2, 0]])
  np.testing.assert_array_equal(stopping.patience_stop(pred, 1), [1, 2, 1])
  np.testing.assert_array_equal(stopping.patience_stop(pred, 2), [3, 3, 2])


def _softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


@pytest.mark.parametrize("signal", ["temperature", "product", "edge", "kl", "cost"])
def test_scores_equal_their_statement(signal):
  r = _records(1)
  temps = np.array([0.5, 0.8, 1.0, 1.7, 3.0])
  want = np.zeros((S, I))
  for i in range(I):
    for s in range(S):
      p = np.exp(r["logp"][s, i])
      if signal == "temperature":  # max softmax of logp / T_s
        want[s, i] = _softmax(r["logp"][s, i] / temps[s]).max()
      elif signal == "product":    # product of the softmaxes of steps 0..s, at the answer
        q = np.prod([np.exp(r["logp"][j, i]) for j in range(s + 1)], axis=0)
        want[s, i] = q[r["pred"][s, i]] / q.sum()
      elif signal == "edge":       # edge softmax x server softmax, at the server's answer
        q = np.exp(r["edge_logp"][i]) * p
        want[s, i] = q[r["pred"][s, i]] / q.sum()
      elif signal == "kl":         # exp(-KL(p_s || p_{s-1})); 0 at the first step
        prev = np.exp(r["logp"][s - 1, i])
        want[s, i] = 0.0 if s == 0 else math.exp(-sum(p * np.log(p / prev)))
      else:                        # 1 - doubt * first units / next step's new units
        new = max(r["units"][s + 1, i] - r["units"][s, i], 1) if s < S - 1 else None
        want[s, i] = 1.0 if new is None else (
            1 - (1 - r["conf"][s, i]) * max(r["units"][0, i], 1) / new)
  got = stopping.scores(signal, r, temps)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("signal", ["confidence", "agree+confidence", "temperature", "product",
                                    "edge", "kl", "cost"])
@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_threshold_stops_at_the_first_step_reaching_it(signal, threshold):
  r = _records(2)
  temps = np.array([2.0, 1.5, 1.0, 0.7, 0.5])
  score = stopping.scores(signal, r, temps)
  agree = signal == "agree+confidence"
  want = [_first(lambda s: score[s, i] >= threshold
                 and (not agree or (s > 0 and r["pred"][s, i] == r["pred"][s - 1, i])))
          for i in range(I)]
  np.testing.assert_array_equal(stopping.stop_of(signal, r, threshold, temps), want)


def test_product_keeps_the_confidence_of_an_answer_that_keeps_winning():
  # Two steps of the same softmax (0.6 on class 0): the product gives 0.36 / (0.36 + 3 * 0.0178)
  # ~ 0.87 at step 1, more than either step alone; a product that restarted would stay at 0.6.
  p = np.array([0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3])
  logp = np.log(np.tile(p, (2, 1, 1)))
  got = stopping.product_score(logp, np.zeros((2, 1), int))[:, 0]
  want1 = 0.36 / (0.36 + 3 * (0.4 / 3) ** 2)
  np.testing.assert_allclose(got, [0.6, want1])


def test_oracle_and_disagreement():
  pred = np.array([[1, 2, 3], [2, 2, 4], [2, 5, 4], [2, 2, 4]])
  np.testing.assert_array_equal(stopping.oracle_stop(pred), [1, 0, 1])
  np.testing.assert_array_equal(stopping.disagreement(np.array([0, 0, 0]), pred),
                                [True, False, True])


def test_temperatures_minimise_the_nll_per_step():
  rng = np.random.RandomState(3)  # logits favour the label 70% of the time, some other class else
  label = rng.randint(0, C, I)
  favoured = np.where(rng.rand(S, I) < 0.7, label, rng.randint(0, C, (S, I)))
  logits = rng.randn(S, I, C)
  logits[np.arange(S)[:, None], np.arange(I)[None], favoured] += 2.0
  logits *= np.array([0.4, 1.0, 2.5, 4.0, 1.0])[:, None, None]  # flattened / sharpened
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  got = stopping.fit_temperatures(logp, label)
  grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
  for s in range(S):
    def nll(t):  # mean -log softmax(logp / t)[label], from the statement
      return np.mean([-np.log(_softmax(logp[s, i] / t)[label[i]]) for i in range(I)])
    best = grid[np.argmin([nll(t) for t in grid[::40]]) * 40]
    fine = grid[max(0, np.searchsorted(grid, best) - 40):np.searchsorted(grid, best) + 40]
    want = fine[np.argmin([nll(t) for t in fine])]
    assert 0.1 < want < 10 and got[s] == pytest.approx(want, rel=5e-3), s
    assert nll(got[s]) <= nll(want) + 1e-7


def _binom_cdf(k, n, p):
  return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k + 1))


@pytest.mark.parametrize("k,n,delta", [(0, 50, 0.05), (3, 200, 0.05), (10, 200, 0.05),
                                       (7, 300, 0.02), (30, 300, 0.1)])
def test_binomial_p_value_is_the_lower_tail(k, n, delta):
  assert stopping.binomial_p_value(k, n, delta) == pytest.approx(_binom_cdf(k, n, delta),
                                                                 rel=1e-9)


@pytest.mark.parametrize("delta,epsilon", [(0.02, 0.1), (0.05, 0.1), (0.1, 0.05), (0.2, 0.1)])
def test_ltt_is_fixed_sequence_testing_from_the_highest_threshold(delta, epsilon):
  r = _records(4)
  score = stopping.max_prob(r["logp"])
  thresholds = [t / 20 for t in range(21)]
  chosen, tested = stopping.NEVER, []
  for t in sorted(thresholds, reverse=True):  # from the statement
    stop = [_first(lambda s: score[s, i] >= t) for i in range(I)]
    errors = sum(r["pred"][stop[i], i] != r["pred"][-1, i] for i in range(I))
    p = _binom_cdf(errors, I, delta)
    tested.append(p)
    if p > epsilon:
      break
    chosen = t
  got, got_tested = stopping.ltt_threshold(score, r["pred"], thresholds, delta, epsilon)
  assert got == chosen
  np.testing.assert_allclose([p for _, p in got_tested], tested, rtol=1e-8)
  assert len(tested) > 1


def test_clopper_pearson_upper_bound():
  # The bound b solves P(Binomial(n, b) <= k) = alpha.
  for k, n in ((0, 100), (4, 100), (20, 300)):
    b = stopping.clopper_pearson_upper(k, n, 0.1)
    assert _binom_cdf(k, n, b) == pytest.approx(0.1, rel=1e-6)
