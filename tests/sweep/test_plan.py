"""The plan: every config value checked once, up front; rules and their parameters resolved."""
import pytest

from sage_jax import defaults
from sage_jax import rules
from sage_jax.sweep import plan as plan_lib


def _make(**overrides):
  c = defaults.sweep_config()
  c.update(overrides)
  return plan_lib.make(c)


def test_default_plan():
  p = _make()
  assert p.labels == defaults.sweep_config().rules.split(",")
  assert p.budgets == (4, 6, 8, 12, 16, 24, 32, 49)
  assert (p.num_patches, p.patch_size, p.bits_per_unit) == (49, 4, 134)
  by = {r.label: r for r in p.rules}
  assert by["sage"].kwargs == dict(pool_ratio=2.0)
  assert by["swap@0.5"].kwargs == dict(swap_frac=0.5) and by["swap@0.5"].name == "swap"
  assert by["threshold"].kwargs == dict(delta=None)  # None: 1/N
  assert by["bat"].kwargs == dict(attentive_frac=0.5, iters=10)
  assert all(r.importance == "cls_attention" for r in p.rules)
  assert p.importances == ("cls_attention",) and p.report.map_budget == 8


def test_rule_specs():
  params = plan_lib._rule_params(defaults.sweep_config())
  parse = lambda s: plan_lib.parse_rule(s, params, "cls_attention")
  assert parse("sage@4") == plan_lib.RuleSpec("sage@4", "sage", (("pool_ratio", 4.0),),
                                              "cls_attention")
  assert parse("topk:rollout").importance == "rollout"
  assert parse("sage@3:rollout").kwargs == dict(pool_ratio=3.0)
  assert parse("bat@0.25").kwargs == dict(attentive_frac=0.25, iters=10)
  with pytest.raises(ValueError, match="rule 'tome' takes no @value; rules that do: "
                                       "threshold@delta"):
    parse("tome@3")
  with pytest.raises(ValueError, match="'x' is not a number"):
    parse("swap@x")
  with pytest.raises(ValueError, match="unknown importance 'magic'"):
    parse("topk:magic")
  with pytest.raises(ValueError, match="unknown selection rule 'magic'; allowed: random, grid"):
    parse("magic")


def test_rule_params_reach_every_parameter():
  c = defaults.sweep_config()
  assert set(c.rule_params) == set(rules.RULES)
  c.rule_params.sage.pool_ratio = 3.0
  c.rule_params.threshold.delta = 0.05
  c.rules = "sage,sage@5,threshold"
  p = plan_lib.make(c)
  assert [r.kwargs for r in p.rules] == [dict(pool_ratio=3.0), dict(pool_ratio=5.0),
                                         dict(delta=0.05)]


def test_importance_beside_the_default():
  p = _make(rules="topk,topk:rollout,sage")
  assert p.importances == ("cls_attention", "rollout")
  assert [r.importance for r in p.rules] == ["cls_attention", "rollout", "cls_attention"]


def test_budgets_from_bits():
  assert _make(budget_bits="536,1100,6566").budgets == (4, 8, 49)  # 134 bits per patch


@pytest.mark.parametrize("map_budget,want", [(8, 8), (10, 8), (11, 12), (100, 49), (0, 4)])
def test_map_budget_is_the_nearest_swept(map_budget, want):
  c = defaults.sweep_config()
  c.report.map_budget = map_budget
  assert plan_lib.make(c).report.map_budget == want


BAD = {
    "budgets=4.5": (dict(budgets="4.5"), "budgets '4.5': 4.5 is not a whole number of patches"),
    "budgets=x": (dict(budgets="4,x"), "budgets '4,x': 'x' is not a number"),
    "budgets=": (dict(budgets=""), "budgets is empty; give at least one"),
    "budgets=4,4": (dict(budgets="4,4"), "budgets '4,4' repeats [4]"),
    "budgets=50": (dict(budgets="50"), "budget 50 is out of range; allowed: 1..49"),
    "rules=topk,topk": (dict(rules="topk,topk"), "rules 'topk,topk' repeats ['topk']"),
    "coverage_grid=0": (dict(coverage_grid=0),
                        "coverage_grid 0 is not allowed; allowed: 1..7 (the patch grid's side)"),
    "coverage_grid=8": (dict(coverage_grid=8), "coverage_grid 8 is not allowed"),
    "n_boot=0": (dict(report=dict(n_boot=0)), "report.n_boot 0 is not allowed; it must be >= 1"),
    "pool_ratio=0": (dict(rule_params=dict(sage=dict(pool_ratio=0.0))),
                     "rule 'sage' (pool_ratio=0.0): pool_ratio 0.0 is not allowed"),
    "swap@2": (dict(rules="swap@2"), "rule 'swap@2' (swap_frac=2.0): swap_frac 2.0 is not allowed"),
    "bat iters": (dict(rule_params=dict(bat=dict(iters=-1))), "iters -1 is not allowed"),
    "eta": (dict(gate=dict(eta=-1.0)), "gate.eta -1.0 is not allowed"),
    "dtype": (dict(compute_dtype="float16"), "compute_dtype 'float16' is not allowed"),
    "server patches": (dict(server=dict(variant="Ti/16", checkpoint="x")),
                       "image size 28 is not divisible by patch size 16 of the server's"),
    "erasure=1": (dict(uplink=dict(erasure="0,1")),
                  "uplink.erasure rate 1.0 is not allowed; a loss rate is in [0, 1)"),
    "erasure=0,0": (dict(uplink=dict(erasure="0,0.0")), "uplink.erasure '0,0.0' repeats [0.0]"),
    "pixel_bits=9": (dict(uplink=dict(pixel_bits="8,9")),
                     "uplink.pixel_bits 9.0 is not allowed; bits per pixel are 1..8"),
    "pixel_bits with bits": (dict(uplink=dict(pixel_bits="8,4"), bits_per_unit=100),
                             "bits_per_unit 100 is not allowed; coarser units"),
    "threshold=2": (dict(report=dict(progressive=dict(thresholds="0.5,2"))),
                    "report.progressive.thresholds 2.0 is not allowed; a confidence is in [0, 1]"),
    "max_budget=-3": (dict(report=dict(progressive=dict(max_budget=-3))),
                      "report.progressive.max_budget -3 is not allowed; give 0 (N/2) or a "
                      "budget >= 1"),
}


def test_uplink_conditions_and_their_bits():
  p = _make(uplink=dict(erasure="0,0.3", pixel_bits="8,2"))
  # Bits outer, rates inner: the records' rule axis is condition-major. A 2-bit unit of 4x4
  # pixels: 32 bits + 6 index bits.
  assert p.condition_bits == ((0.0, 8, 134), (0.3, 8, 134), (0.0, 2, 38), (0.3, 2, 38))
  assert _make().condition_bits == ((0.0, 8, 134),)
  assert _make(bits_per_unit=100).condition_bits == ((0.0, 8, 100),)


def test_progressive_schedule_is_the_budgets_up_to_half_of_n():
  assert _make().report.progressive.schedule == (4, 6, 8, 12, 16, 24)
  prog = _make(budgets="49,8,32", report=dict(progressive=dict(max_budget=32))).report.progressive
  assert prog.schedule == (8, 32)
  assert _make(budgets="32,49").report.progressive.schedule == ()  # no section


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_are_refused(case):
  overrides, message = BAD[case]
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[").replace("]", r"\]")):
    _make(**overrides)


def test_unknown_rule_params():
  c = defaults.sweep_config()
  c.rule_params.unlock()
  c.rule_params.magic = dict(x=1)
  with pytest.raises(ValueError, match="rule_params.magic: unknown rule; allowed: random"):
    plan_lib.make(c)
  c = defaults.sweep_config()
  c.rule_params.sage.unlock()
  c.rule_params.sage.pool = 3.0
  with pytest.raises(ValueError, match="rule_params.sage.pool: unknown parameter of rule "
                                       "'sage'; allowed: pool_ratio"):
    plan_lib.make(c)
