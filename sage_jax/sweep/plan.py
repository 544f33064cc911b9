"""The sweep's plan: the config resolved and checked once, before any model or data is loaded.

`make(config)` turns the ml_collections config into a frozen `Plan`. Every check of a
config value happens here, so a bad value is refused in a second, not after the sweep;
the pipeline, the sweep, the metrics and the report read the plan, never the raw config.
A rule to run is `name[@value][:importance]`: `sage@4` sets SAGE's primary parameter
(`rules.Rule.primary`), `topk:rollout` runs top-K on another importance score than
`config.importance` in the same sweep.
"""
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from sage_jax import importance
from sage_jax.models import vit
from sage_jax.report import link_cost
from sage_jax import rules
from sage_jax.sweep import checks
from sage_jax.sweep import offload
from sage_jax.sweep import stop_checks



@dataclasses.dataclass(frozen=True)
class RuleSpec:
  label: str        # as written in config.rules: the results' "method"
  name: str         # the rules.RULES entry
  params: tuple     # ((parameter, value), ...) in signature order
  importance: str   # the importance.IMPORTANCES entry it ranks patches by

  @property
  def kwargs(self) -> dict:
    return dict(self.params)


@dataclasses.dataclass(frozen=True)
class Gate:
  uncertainty: str  # offload.UNCERTAINTIES entry
  eta: float
  fraction: float   # for uncertainty "fraction"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  variant: str
  checkpoint: str


@dataclasses.dataclass(frozen=True)
class Idea:
  title: str
  labels: tuple     # rule labels of config.rules; the first leads (the verdict, the map)
  helped: str       # why it helped / did not: reasoning fixed on the development half
  not_helped: str


@dataclasses.dataclass(frozen=True)
class Beyond:
  """report.md's "Beyond the paper" section (configs/fmnist_beyond.py; report/beyond.py)."""
  frozen: str       # the rule label frozen on the development half
  half: str         # which half of the data this run is, in words
  ideas: tuple      # Idea, in the config's order
  goal: str = "Goal"  # the goal sentence's label in report.md


@dataclasses.dataclass(frozen=True)
class Progressive:
  """report.md's progressive offloading, evaluated from the records (report/progressive.py)."""
  schedule: tuple = ()     # budgets climbed in order: the sweep's, up to max_budget
  thresholds: tuple = ()   # server confidences (max softmax probability) to stop at
  rtt_ms: float = 0.0      # an assumed round trip per request
  goal_budget: int = 0     # the goal: the best fixed accuracy at this budget (0: no goal;
                           # one the sweep does not run: the report says so)
  goal_share: float = 0.6  # ... reached with at most this share of its mean units
  signal_rules: tuple = ()  # rules whose server log-probabilities the records keep
  stopping: stop_checks.Stopping = stop_checks.Stopping()


@dataclasses.dataclass(frozen=True)
class Uplink:
  erasure: tuple = (0.0,)  # loss rates: each sent unit lost independently with probability p
  pixel_bits: tuple = (8,)  # bits per pixel value of a sent patch
  unit_bits: tuple = ()    # bits per unit at each pixel_bits (() with the default)

  @property
  def conditions(self) -> tuple:
    """(rate, bits) of each condition, bits outer; the records' rule axis is condition-major."""
    return tuple((p, b) for b in self.pixel_bits for p in self.erasure)


@dataclasses.dataclass(frozen=True)
class Report:
  n_boot: int
  channel: str      # the latency plot's uplink, a key of rates
  rates: tuple      # ((channel, bits per second), ...)
  map_budget: int   # the sweep's budget nearest to report.map_budget
  map_examples: int
  moderate: tuple   # (lo, hi) budgets of the grid-vs-random claim
  compare_to: tuple = ("topk",)  # rule labels every rule is compared with (paired)
  beyond: Any = None             # Beyond, or None: no such section
  progressive: Progressive = Progressive()


@dataclasses.dataclass(frozen=True)
class Plan:
  rules: tuple            # RuleSpec, in the config's order
  budgets: tuple          # patches per request, in the config's order
  bits_per_unit: int
  importance: str         # the default score (rules without ":score", attention entropy)
  gate: Gate
  edge: ModelSpec
  server: ModelSpec
  dataset: Any            # ml_collections.FrozenConfigDict, read by the data stage
  num_patches: int
  patch_size: int
  num_images: int         # -1: the whole split
  coverage_grid: int
  seed: int
  compute_dtype: str
  batch_size: int
  server_batch_size: int
  chunk_size: int
  report: Report
  config_json: str        # the resolved config (for the workdir's config.json and hash)
  boxes: bool = False     # the dataset gives each image its item's box (on-item columns)
  uplink: Uplink = Uplink()

  @property
  def condition_bits(self) -> tuple:
    """(loss rate, bits per pixel, bits per unit) of each uplink condition (`uplink.conditions`
    with what a unit costs)."""
    per_bits = dict(zip(self.uplink.pixel_bits, self.uplink.unit_bits or (self.bits_per_unit,)))
    return tuple((p, b, per_bits[b]) for p, b in self.uplink.conditions)

  @property
  def reference(self) -> int:
    """Index in `condition_bits` of the condition the report's main tables, claims and
    progressive section read, and the uplink section compares with: the most bits per pixel
    (8, full precision, when swept) at the lowest loss rate, wherever the lists put them."""
    return self.uplink.conditions.index((min(self.uplink.erasure), max(self.uplink.pixel_bits)))

  @property
  def labels(self) -> list:
    return [r.label for r in self.rules]

  @property
  def importances(self) -> tuple:
    """Every score the edge must compute, the default first."""
    return tuple(dict.fromkeys([self.importance] + [r.importance for r in self.rules]))


def parse_budgets(value, n: int, what="budgets") -> tuple:
  """'4,8,16' -> (4, 8, 16): whole numbers of patches in 1..n, each once."""
  out = []
  for item in checks.items(value, what):
    x = checks.number(item, what, value)
    if x != int(x):
      raise ValueError(f"{what} {value!r}: {item} is not a whole number of patches; "
                       "budgets count patches, e.g. 4,8,16")
    out.append(int(x))
  for b in checks.once(out, what, value):
    if not 1 <= b <= n:
      raise ValueError(f"budget {b} is out of range; allowed: 1..{n} (patches per image)")
  return tuple(out)


def _rule_params(config) -> dict:
  """config.rule_params -> {rule: {param: value}}, every name checked against the registry."""
  given = config.get("rule_params") or {}
  out = {}
  for rule in given:
    if rule not in rules.RULES:
      raise ValueError(f"rule_params.{rule}: unknown rule; allowed: {', '.join(rules.RULES)}")
  for name, entry in rules.RULES.items():
    params = entry.params()
    values = dict(given.get(name) or {})
    for p in values:
      if p not in params:
        raise ValueError(f"rule_params.{name}.{p}: unknown parameter of rule {name!r}; "
                         f"allowed: {', '.join(params) or 'none'}")
    out[name] = {p: values.get(p, default) for p, default in params.items()}
  return out


def parse_rule(spec: str, params: dict, default_importance: str) -> RuleSpec:
  """'name[@value][:importance]' -> RuleSpec with the rule's parameters from `params`."""
  body, _, score = spec.partition(":")
  name, _, value = body.partition("@")
  entry = rules.get_rule(name)
  kwargs = dict(params[name])
  if value:
    if entry.primary is None:
      takes = [f"{n}@{r.primary}" for n, r in rules.RULES.items() if r.primary]
      raise ValueError(f"rule {spec!r}: rule {name!r} takes no @value; rules that do: "
                       f"{', '.join(takes)}")
    x = checks.number(value, "rule", spec)
    if isinstance(kwargs[entry.primary], int) and not isinstance(kwargs[entry.primary], bool):
      if x != int(x):
        raise ValueError(f"rule {spec!r}: {entry.primary} is a whole number, not {value}")
      x = int(x)
    kwargs[entry.primary] = x
  score = score or default_importance
  importance.get(score)
  return RuleSpec(spec, name, tuple(kwargs.items()), score)


def _check_rule(rule: RuleSpec, budget: int, n: int, d: int):
  """Traces the rule once (no compute): its own checks refuse bad parameters here."""
  fn = rules.get_rule(rule.name).fn
  key = jax.random.PRNGKey(0)
  try:
    jax.eval_shape(lambda imp, emb: fn(imp, emb, key, budget, **rule.kwargs),
                   jax.ShapeDtypeStruct((n,), jnp.float32),
                   jax.ShapeDtypeStruct((n, d), jnp.float32))
  except ValueError as e:
    raise ValueError(f"rule {rule.label!r} ({', '.join(f'{k}={v}' for k, v in rule.params)}"
                     f"): {e}") from None


def _beyond(cfg, labels, compare_to):
  """config.report.beyond -> Beyond, or None when no rule is frozen (no section)."""
  if cfg is None or not cfg.get("frozen"):
    return None
  need = ("topk", "sage", "diversity", cfg.frozen)
  missing = [x for x in need if x not in labels]
  checks.require(not missing, "report.beyond.frozen", cfg.frozen,
           f"the section compares it with topk, sage and diversity; add {missing} to rules")
  for ref in ("sage", "diversity"):
    checks.require(ref in compare_to, "report.compare_to", ",".join(compare_to),
             "the beyond section needs sage and diversity in it")
  ideas = []
  for idea in cfg.get("ideas") or ():
    checks.require(len(idea) == 4, "report.beyond.ideas entry", idea,
             "give (title, 'rule,rule,...', why it helped, why it did not)")
    title, members, helped, not_helped = idea
    members = tuple(checks.items(members, f"report.beyond.ideas {title!r}"))
    for label in members:
      checks.require(label in labels, f"report.beyond.ideas {title!r}: rule", label,
               f"name rules this sweep runs: {', '.join(labels)}")
    ideas.append(Idea(title, members, helped, not_helped))
  return Beyond(cfg.frozen, cfg.half, tuple(ideas), cfg.get("goal") or "Goal")


def _patches(variant: str, image_size: int, role: str):
  v = vit.decode_variant(variant)
  p = v["patch_size"]
  if image_size % p:
    raise ValueError(f"image size {image_size} is not divisible by patch size {p} of the "
                     f"{role}'s variant {variant!r}")
  return (image_size // p) ** 2, p, v["width"]


def make(config) -> "Plan":
  """Checks every value of a sweep config -> Plan. Raises ValueError naming the bad value."""
  ds = config.dataset
  n, patch, width = _patches(config.edge.variant, ds.image_size, "edge")
  n_server = _patches(config.server.variant, ds.image_size, "server")[0]
  if n_server != n:
    raise ValueError(f"edge has {n} patches per image, server {n_server}; give both "
                     "variants the same patch size")
  importance.get(config.importance)
  bits, budgets = _bits_and_budgets(config, n, patch)

  params = _rule_params(config)
  specs = checks.once(checks.items(config.rules, "rules"), "rules", config.rules)
  rules = tuple(parse_rule(s, params, config.importance) for s in specs)
  for rule in rules:  # parameter checks do not depend on K; the largest traces fastest
    _check_rule(rule, max(budgets), n, width)

  g = config.gate
  _check_gate_and_sizes(config, n)
  return Plan(
      rules=rules, budgets=budgets, bits_per_unit=int(bits), importance=config.importance,
      gate=Gate(g.uncertainty, float(g.eta), float(g.fraction)),
      edge=ModelSpec(config.edge.variant, config.edge.checkpoint),
      server=ModelSpec(config.server.variant, config.server.checkpoint),
      dataset=ml_collections.FrozenConfigDict(ds), num_patches=n, patch_size=patch,
      num_images=int(config.num_images), coverage_grid=int(config.coverage_grid),
      seed=int(config.seed), compute_dtype=config.compute_dtype,
      batch_size=int(config.batch_size), server_batch_size=int(config.server_batch_size),
      chunk_size=int(config.chunk_size),
      report=_report(config.report, budgets, [rule.label for rule in rules], n),
      config_json=config.to_json(), uplink=_uplink(config, n, patch))


def _uplink(config, n: int, patch: int) -> Uplink:
  """config.uplink -> Uplink: loss rates in [0, 1), bits per pixel in 1..8, each once."""
  cfg = config.get("uplink")
  if cfg is None:
    return Uplink()
  rates = tuple(checks.numbers(cfg.erasure, "uplink.erasure"))
  for p in rates:
    checks.require(0 <= p < 1, "uplink.erasure rate", p, "a loss rate is in [0, 1)")
  bits = tuple(checks.numbers(cfg.pixel_bits, "uplink.pixel_bits"))
  for b in bits:
    checks.require(b == int(b) and 1 <= b <= 8, "uplink.pixel_bits", b, "bits per pixel are 1..8")
  bits = tuple(int(b) for b in bits)
  if bits == (8,):
    return Uplink(rates, bits)
  checks.require(config.bits_per_unit == -1, "bits_per_unit", config.bits_per_unit,
           "coarser units (uplink.pixel_bits) count their bits from the patch: give -1")
  return Uplink(rates, bits, tuple(link_cost.bits_per_unit(patch, config.dataset.channels, b, n)
                                   for b in bits))


def _bits_and_budgets(config, n: int, patch: int) -> tuple:
  """-> (bits per unit, budgets K): from `budgets`, or from `budget_bits` at those bits."""
  bits = config.bits_per_unit
  if bits == -1:  # raw 8-bit pixels of one patch + its index
    bits = link_cost.bits_per_unit(patch, config.dataset.channels, 8, n)
  checks.require(bits > 0, "bits_per_unit", bits, "give bits > 0, or -1 (8-bit pixels + index)")
  if config.budget_bits:
    units = [link_cost.units_for_bits(checks.number(b, "budget_bits", config.budget_bits), bits)
             for b in checks.items(config.budget_bits, "budget_bits")]
    return bits, parse_budgets(units, n, f"budgets from budget_bits {config.budget_bits!r} "
                                         f"({bits} bits/unit)")
  return bits, parse_budgets(config.budgets, n)


def _check_gate_and_sizes(config, n: int) -> None:
  """The gate's values, the image count, batch and chunk sizes, dtype and coverage grid."""
  g = config.gate
  offload.get_uncertainty(g.uncertainty)
  if g.uncertainty == "margin":
    checks.require(0 <= g.eta <= 1, "gate.eta", g.eta, "a margin threshold is in [0, 1]")
  else:
    checks.require(g.eta >= 0, "gate.eta", g.eta, "it must be >= 0 (bits)")
  checks.require(0 <= g.fraction <= 1, "gate.fraction", g.fraction, "it must be in [0, 1]")
  checks.require(config.num_images == -1 or config.num_images > 0, "num_images", config.num_images,
           "give a positive count or -1 (all)")
  for name in ("batch_size", "server_batch_size", "chunk_size"):
    checks.require(config[name] > 0, name, config[name], "it must be > 0")
  checks.require(config.compute_dtype in vit.COMPUTE_DTYPES, "compute_dtype", config.compute_dtype,
           f"allowed: {', '.join(vit.COMPUTE_DTYPES)}")
  side = math.isqrt(n)
  checks.require(1 <= config.coverage_grid <= side, "coverage_grid", config.coverage_grid,
           f"allowed: 1..{side} (the patch grid's side)")


def _progressive(cfg, budgets, labels, n: int) -> Progressive:
  """config.report.progressive -> Progressive (none configured: no section)."""
  if cfg is None:
    return Progressive()
  checks.require(cfg.max_budget >= 0, "report.progressive.max_budget", cfg.max_budget,
           "give 0 (N/2) or a budget >= 1")
  top = cfg.max_budget or n // 2
  schedule = tuple(sorted(b for b in budgets if b <= top))  # none: no section
  thresholds = tuple(sorted(checks.numbers(cfg.thresholds, "report.progressive.thresholds")))
  for t in thresholds:
    checks.require(0 <= t <= 1, "report.progressive.thresholds", t, "a confidence is in [0, 1]")
  checks.require(cfg.rtt_ms >= 0, "report.progressive.rtt_ms", cfg.rtt_ms, "it must be >= 0")
  checks.require(cfg.goal_budget >= 0, "report.progressive.goal_budget", cfg.goal_budget,
           "give 0 (no goal) or a budget")
  checks.require(0 < cfg.goal_share <= 1, "report.progressive.goal_share", cfg.goal_share,
           "it must be in (0, 1]")
  return Progressive(schedule, thresholds, float(cfg.rtt_ms), int(cfg.goal_budget),
                     float(cfg.goal_share), *stop_checks.signals(cfg, labels, schedule))


def _report(r, budgets, labels, n: int) -> "Report":
  """config.report checked -> Report; the map's budget is the nearest one the sweep runs."""
  checks.require(r.n_boot >= 1, "report.n_boot", r.n_boot, "it must be >= 1")
  rates = link_cost.parse_rates(r.rates)
  checks.require(r.channel in rates, "report.channel", r.channel, f"allowed: {', '.join(rates)}")
  checks.require(r.map_examples >= 0, "report.map_examples", r.map_examples, "it must be >= 0")
  moderate = tuple(r.moderate)
  checks.require(len(moderate) == 2 and moderate[0] <= moderate[1], "report.moderate", moderate,
           "give (lo, hi) with lo <= hi")
  # The map shows what the sweep sent, so its budget is one the sweep runs.
  map_budget = min(budgets, key=lambda b: (abs(b - r.map_budget), b))
  compare_to = tuple(checks.once(checks.items(r.get("compare_to", "topk"), "report.compare_to"),
                           "report.compare_to", r.get("compare_to")))
  for ref in compare_to:
    checks.require(ref in labels or ref == "topk", "report.compare_to", ref,
             f"compare with rules this sweep runs: {', '.join(labels)}")
  beyond = _beyond(r.get("beyond"), labels, compare_to)
  return Report(int(r.n_boot), r.channel, tuple(rates.items()), int(map_budget),
                int(r.map_examples), moderate, compare_to, beyond,
                _progressive(r.get("progressive"), budgets, labels, n))
