"""Stop rules of progressive offloading, from the records alone (no further server pass).

The edge climbs the schedule's budgets, one request each; a stop rule decides after each
answer whether to ask for the next budget's units. Every rule here is a score per step, the
image stopping at the first step whose score reaches a threshold (or at the last step), or,
for patience, a count. The answer is always the server's answer at the step it stops: a rule
decides when, never what. Arrays are [step, image] (S steps, I images); log-probabilities
`logp` are [step, image, class] (natural log, each row a log-softmax); `edge_logp` [image,
class]. Pure numpy, so each rule can be checked against a plain computation.
"""
import numpy as np

# Signals scored per step and stopped at a threshold; patience counts steps instead; the
# risk-controlled rule (`RISK`@delta) is a threshold on `temperature` chosen by Learn-then-Test.
SCORED = ("confidence", "agree+confidence", "temperature", "product", "edge", "kl", "cost")
SIGNALS = SCORED + ("patience",)
RISK = "ltt"
# Signals that read the server's log-probabilities (records["server_logp"]).
NEED_LOGP = ("temperature", "product", "edge", "kl", RISK)
# Signals whose threshold needs temperatures fitted on a calibration split.
NEED_TEMPERATURE = ("temperature", RISK)
# A threshold above every score: no image stops before the last step.
NEVER = 1.01


def first_stop(reached) -> np.ndarray:
  """i32[I]: the first step where reached bool[S, I] holds, else the last step."""
  reached = np.asarray(reached, bool)
  return np.where(reached.any(0), reached.argmax(0), reached.shape[0] - 1).astype(np.int32)


def patience_stop(pred, t: int) -> np.ndarray:
  """i32[I]: PABEE's patience: the first step whose answer equals that of each of the t steps
  before it (unchanged for t steps; the earliest such step is t), else the last step."""
  pred = np.asarray(pred)
  same = np.zeros(pred.shape, np.int64)  # how many steps before s in a row give pred[s]
  for s in range(1, pred.shape[0]):
    same[s] = np.where(pred[s] == pred[s - 1], same[s - 1] + 1, 0)
  return first_stop(same >= t)


def _softmax(logp, temperatures=None) -> np.ndarray:
  """f64[S, I, C]: softmax(logp / T_s) per step (T: f[S]; None: 1)."""
  z = np.asarray(logp, np.float64)
  if temperatures is not None:
    z = z / np.asarray(temperatures, np.float64)[:, None, None]
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def max_prob(logp, temperatures=None) -> np.ndarray:
  """f[S, I]: the max softmax probability, with one temperature per step when given (Guo et
  al. 2017: it moves confidences, never the answer)."""
  return _softmax(logp, temperatures).max(-1)


def product_score(logp, pred) -> np.ndarray:
  """f[S, I]: the probability of the step's answer pred[s] under the normalised product of the
  softmaxes of steps 0..s (Jazbec et al. 2023's anytime product): an answer that keeps
  winning can only gain."""
  summed = np.cumsum(np.asarray(logp, np.float64), axis=0)
  q = _softmax(summed)
  return np.take_along_axis(q, np.asarray(pred)[..., None], -1)[..., 0]


def edge_score(logp, edge_logp, pred) -> np.ndarray:
  """f[S, I]: the probability of the server's answer pred[s] under the normalised product of
  the edge's softmax and the server's at step s (two opinions of the same image)."""
  joint = np.asarray(logp, np.float64) + np.asarray(edge_logp, np.float64)[None]
  return np.take_along_axis(_softmax(joint), np.asarray(pred)[..., None], -1)[..., 0]


def kl_score(logp) -> np.ndarray:
  """f[S, I]: exp(-KL(p_s || p_{s-1})), 1 when a step's softmax equals the step before's; 0 at
  the first step (no step before: it cannot stop there)."""
  lp = np.asarray(logp, np.float64)
  kl = (np.exp(lp[1:]) * (lp[1:] - lp[:-1])).sum(-1)
  return np.concatenate([np.zeros((1,) + kl.shape[1:]), np.exp(-np.maximum(kl, 0.0))])


def cost_score(confidence, units) -> np.ndarray:
  """f[S, I]: 1 - (1 - confidence) * u_0 / new units of the next step (u_0: the first step's
  units, at least 1): the server's doubt per unit the next request would add, so a costly
  next step stops an image sooner. The last step scores 1 (it stops)."""
  conf, units = np.asarray(confidence, np.float64), np.asarray(units, np.float64)
  new = np.maximum(units[1:] - units[:-1], 1.0)
  first = np.maximum(units[:1], 1.0)
  return np.concatenate([1.0 - (1.0 - conf[:-1]) * first / new, np.ones_like(conf[:1])])


def scores(signal: str, arrays: dict, temperatures=None) -> np.ndarray:
  """f[S, I] of a scored signal from a rule's arrays (`conf`, `pred`, `units` [S, I], and
  `logp` [S, I, C], `edge_logp` [I, C] for the signals that need them)."""
  a = arrays
  if signal in ("confidence", "agree+confidence"):
    return np.asarray(a["conf"], np.float64)
  if signal in ("temperature", RISK):
    return max_prob(a["logp"], temperatures)
  if signal == "product":
    return product_score(a["logp"], a["pred"])
  if signal == "edge":
    return edge_score(a["logp"], a["edge_logp"], a["pred"])
  if signal == "kl":
    return kl_score(a["logp"])
  if signal == "cost":
    return cost_score(a["conf"], a["units"])
  raise ValueError(f"signal {signal!r} is not allowed; scored signals: {', '.join(SCORED)}")


def threshold_stop(score, threshold: float, pred=None) -> np.ndarray:
  """i32[I]: the first step whose score f[S, I] reaches the threshold (and, given pred, whose
  answer equals the step before's), else the last step."""
  reached = np.asarray(score) >= threshold
  if pred is not None:
    pred = np.asarray(pred)
    reached &= np.concatenate([np.zeros_like(reached[:1]), pred[1:] == pred[:-1]])
  return first_stop(reached)


def oracle_stop(pred) -> np.ndarray:
  """i32[I]: the first step whose answer is the last step's: no answer changed by stopping
  early; what a perfect stop signal would do."""
  pred = np.asarray(pred)
  return (pred == pred[-1:]).argmax(0).astype(np.int32)


def disagreement(stop, pred) -> np.ndarray:
  """bool[I]: the answer where the image stopped differs from its last step's answer (the
  risk a risk-controlled rule bounds)."""
  pred = np.asarray(pred)
  return pred[stop, np.arange(pred.shape[1])] != pred[-1]


def nll(logp, label, temperature: float) -> float:
  """Mean negative log-likelihood of the labels i[I] under softmax(logp f[I, C] / T)."""
  z = np.asarray(logp, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  logz = np.log(np.exp(z).sum(-1))
  return float((logz - z[np.arange(z.shape[0]), np.asarray(label)]).mean())


def fit_temperatures(logp, label, lo: float = 0.05, hi: float = 20.0) -> np.ndarray:
  """f64[S]: per step the temperature in [lo, hi] minimising the NLL of the labels (Guo et
  al. 2017), on a calibration split only. The NLL is convex in 1/T, so a bounded scalar
  search finds the minimum."""
  import scipy.optimize  # pylint: disable=import-outside-toplevel  (`writer.prefetch`)
  out = []
  for step in np.asarray(logp):
    res = scipy.optimize.minimize_scalar(lambda b: nll(step, label, 1.0 / b),
                                         bounds=(1.0 / hi, 1.0 / lo), method="bounded",
                                         options=dict(xatol=1e-6))
    out.append(1.0 / res.x)
  return np.asarray(out)


def binomial_p_value(errors: int, n: int, delta: float) -> float:
  """P(Binomial(n, delta) <= errors): the p-value of "risk > delta" after `errors` of n
  (Learn-then-Test's binomial tail for a 0/1 loss; small when errors are far below n*delta)."""
  import scipy.stats  # pylint: disable=import-outside-toplevel  (`writer.prefetch`)
  return float(scipy.stats.binom.cdf(errors, n, delta))


def ltt_threshold(score, pred, thresholds, delta: float, epsilon: float) -> tuple:
  """Learn-then-Test (Angelopoulos et al. 2021) as CALM (Schuster et al. 2022) uses it:
  thresholds are tested from the highest down (fixed-sequence), each rejecting "the share of
  images whose stopped answer differs from the last step's exceeds delta" when its binomial
  p-value is <= epsilon, until the first one that does not. -> (the lowest threshold
  rejected, or NEVER when none is; the p-values tested, highest threshold first)."""
  pred = np.asarray(pred)
  chosen, tested = NEVER, []
  for t in sorted(thresholds, reverse=True):
    errors = int(disagreement(threshold_stop(score, t), pred).sum())
    p = binomial_p_value(errors, pred.shape[1], delta)
    tested.append((float(t), p))
    if p > epsilon:
      break
    chosen = float(t)
  return chosen, tested


def clopper_pearson_upper(errors: int, n: int, alpha: float) -> float:
  """The one-sided (1 - alpha) upper bound on a rate after `errors` of n."""
  if errors >= n:
    return 1.0
  import scipy.stats  # pylint: disable=import-outside-toplevel  (`writer.prefetch`)
  return float(scipy.stats.beta.ppf(1 - alpha, errors + 1, n - errors))


def stop_of(signal: str, arrays: dict, setting: float, temperatures=None) -> np.ndarray:
  """i32[I]: where each image stops under (signal, setting): patience t, or a threshold on the
  signal's score (`RISK`@delta: on the temperature-scaled confidence)."""
  if signal == "patience":
    return patience_stop(arrays["pred"], int(setting))
  base = signal.partition("@")[0]
  pred = arrays["pred"] if base == "agree+confidence" else None
  return threshold_stop(scores(base, arrays, temperatures), setting, pred)
