"""The checks of report.progressive's stop signals (`signal_rules`, `stopping.*`), part of the
plan (sweep/plan.py): each bad value is refused in one line before any model is loaded."""
import dataclasses

from sage_jax.report import stopping as stop_lib
from sage_jax.sweep import checks

# signal_rules="auto": these, where the sweep runs them (the rules the progressive section
# shows; few, so the default job's records stay small).
AUTO_RULES = ("topk", "sage", "diversity", "sage_nested")
MODES = ("", "fit", "frozen")


@dataclasses.dataclass(frozen=True)
class Stopping:
  """The stop signals beyond the server's confidence (report/stopping.py, report/stop_study.py):
  fitted and chosen on this run (mode "fit": the development half), or frozen (the reporting
  half), or neither (""): the fronts of the signals that need no calibration."""
  mode: str = ""
  half: str = ""                 # which half of the data this run is, in words
  patience: tuple = (1, 2, 3)    # patience t of the grid
  deltas: tuple = (0.02, 0.05)   # risk-controlled: promised share of changed answers
  epsilon: float = 0.1           # ... held with probability at least 1 - epsilon
  temperatures: tuple = ()       # frozen: ((rule, (T per step of the schedule)), ...)
  frozen: tuple = ()             # frozen: ((signal, rule, setting), ...), the pick first

  @property
  def temperature_of(self) -> dict:
    return {rule: temps for rule, temps in self.temperatures}


def signal_rules(value, labels) -> tuple:
  """'auto' | 'all' | '' | 'rule,...' -> the rule labels whose log-probabilities are kept."""
  if value == "auto":
    return tuple(r for r in AUTO_RULES if r in labels)
  if value == "all":
    return tuple(labels)
  if not value:
    return ()
  out = tuple(checks.once(checks.items(value, "report.progressive.signal_rules"),
                          "report.progressive.signal_rules", value))
  for rule in out:
    checks.require(rule in labels, "report.progressive.signal_rules", rule,
                   f"name rules this sweep runs ({', '.join(labels)}), auto, all or ''")
  return out


def signals(cfg, labels, schedule) -> tuple:
  """config.report.progressive -> (signal rules, Stopping), every value checked."""
  rules = signal_rules(cfg.get("signal_rules", "auto"), labels)
  s = cfg.get("stopping")
  if s is None:
    return rules, Stopping()
  checks.require(s.mode in MODES, "report.progressive.stopping.mode", s.mode,
                 "give '' (fronts only), fit (development half) or frozen (reporting half)")
  patience = tuple(checks.numbers(s.patience, "report.progressive.stopping.patience"))
  for t in patience:
    checks.require(t == int(t) and t >= 1, "report.progressive.stopping.patience", t,
                   "a patience is a whole number of steps >= 1")
  deltas = tuple(checks.numbers(s.deltas, "report.progressive.stopping.deltas"))
  for d in deltas:
    checks.require(0 < d < 1, "report.progressive.stopping.deltas", d, "a risk is in (0, 1)")
  checks.require(0 < s.epsilon < 1, "report.progressive.stopping.epsilon", s.epsilon,
                 "it must be in (0, 1)")
  temps = _temperatures(s.temperatures, rules, len(schedule))
  out = Stopping(s.mode, s.half, tuple(int(t) for t in patience), deltas, float(s.epsilon),
                 temps, _frozen(s.frozen, rules, labels, dict(temps)))
  if s.mode:
    checks.require(cfg.goal_budget in schedule, "report.progressive.goal_budget",
                   cfg.goal_budget, f"mode {s.mode} needs a goal on the schedule "
                   f"({', '.join(map(str, schedule))})")
    checks.require(bool(rules), "report.progressive.signal_rules", cfg.get("signal_rules"),
                   f"mode {s.mode} needs rules whose log-probabilities are kept")
  checks.require(s.mode != "frozen" or out.frozen, "report.progressive.stopping.frozen",
                 s.frozen, "mode frozen needs the choices made on the development half")
  return rules, out


def _temperatures(value, rules, steps: int) -> tuple:
  out = []
  for entry in value or ():
    checks.require(len(entry) == 2 and entry[0] in rules,
                   "report.progressive.stopping.temperatures entry", entry,
                   f"give (rule, (T per step)) for a rule of signal_rules ({', '.join(rules)})")
    temps = tuple(float(t) for t in entry[1])
    checks.require(len(temps) == steps and all(t > 0 for t in temps),
                   "report.progressive.stopping.temperatures entry", entry,
                   f"give {steps} temperatures > 0, one per step of the schedule")
    out.append((entry[0], temps))
  return tuple(out)


def _frozen(value, rules, labels, temps) -> tuple:
  """((signal, rule, setting), ...): known signals on rules that have what they need."""
  out = []
  for entry in value or ():
    name = "report.progressive.stopping.frozen entry"
    checks.require(len(entry) == 3, name, entry, "give (signal, rule, setting)")
    signal, rule, setting = entry
    base, _, delta = str(signal).partition("@")
    known = base in stop_lib.SIGNALS or (base == stop_lib.RISK and delta)
    checks.require(known, name, entry, f"signals: {', '.join(stop_lib.SIGNALS)}, "
                   f"{stop_lib.RISK}@delta")
    if delta:
      checks.number(delta, name, entry)
    checks.require(rule in labels, name, entry, f"rules: {', '.join(labels)}")
    checks.require(base not in stop_lib.NEED_LOGP or rule in rules, name, entry,
                   "this signal reads the server's log-probabilities: add the rule to "
                   "signal_rules")
    checks.require(base not in stop_lib.NEED_TEMPERATURE or rule in temps, name, entry,
                   "this signal needs the rule's frozen temperatures")
    if base == "patience":
      checks.require(setting == int(setting) and setting >= 1, name, entry,
                     "a patience is a whole number of steps >= 1")
    else:
      checks.require(0 <= setting <= stop_lib.NEVER, name, entry,
                     f"a threshold is in [0, {stop_lib.NEVER}]")
    out.append((str(signal), rule, float(setting)))
  return tuple(out)
