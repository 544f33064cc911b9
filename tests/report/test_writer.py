"""report.py: the paper's claims on constructed rows, strict outputs, and runs with too few
offloaded images to claim anything."""
import csv
import io
import json
import os

import numpy as np
import pytest

from sage_jax import defaults
from sage_jax.report import beyond
from sage_jax.report import metrics
from sage_jax.report import writer
from sage_jax.sweep import loop
from sage_jax.sweep import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _row(method, budget, acc, diff=0.0, p=1.0, pct=None):
  return dict(method=method, budget=budget, offloaded_acc=acc, diff_vs_topk=diff,
              diff_vs_topk_lo=diff - 0.01, diff_vs_topk_hi=diff + 0.01, p_vs_topk=p,
              pct_of_ceiling=100 * acc / 0.8 if pct is None else pct, ceiling_acc=0.8,
              offloaded_acc_lo=acc - 0.02, offloaded_acc_hi=acc + 0.02)


def test_claims_count_significant_wins_and_losses():
  rows = [_row("topk", 4, 0.5), _row("sage", 4, 0.6, 0.1, 1e-5),      # significant win
          _row("topk", 8, 0.6), _row("sage", 8, 0.5, -0.1, 1e-3),     # significant loss
          _row("topk", 16, 0.7), _row("sage", 16, 0.72, 0.02, 0.2)]   # not significant
  claims = writer.paper_claims(rows, 49)
  assert claims[0].startswith("SAGE vs top-K on offloaded images: SAGE significantly better "
                              "at 1, worse at 1 of 3 budgets. K=4: 60.0% vs 50.0% (diff +10.0 pts")
  assert "McNemar p=1e-05" in claims[0]
  assert claims[1] == ("SAGE does not reach 93% of the ceiling at any budget here (best 90.0% "
                       "at K=16).")


def test_claims_93_percent_reached_and_grid_vs_random():
  rows = [_row("topk", 12, 0.6), _row("sage", 12, 0.70, pct=87.5),
          _row("topk", 24, 0.7), _row("sage", 24, 0.76, pct=95.0),
          _row("grid", 12, 0.50), _row("random", 12, 0.55),
          _row("grid", 24, 0.80), _row("random", 24, 0.75)]
  claims = writer.paper_claims(rows, 49, moderate=(12, 24))
  assert claims[2] == ("SAGE reaches 93% of the server ceiling first at K=24 (95.0% of "
                       "ceiling, 95% CI 92.5-97.5%; 24/49 = 49% of the patches; the paper: "
                       "under half).")
  assert claims[3] == ("Content-blind grid at moderate budgets K=12..24: mean 65.0% vs random "
                       "65.0% and top-K 65.0%; grid beats random at 1 of 2 of these budgets.")


def test_claims_topk_vs_random_reads_randoms_paired_difference_the_other_way():
  # random's row holds random - top-K: -0.05 [-0.06, -0.04] at K=8 (top-K above), +0.03
  # [+0.02, +0.04] at K=16 (top-K below); K=49 = N is not a claim.
  rows = [_row("topk", 8, 0.6), _row("random", 8, 0.55, diff=-0.05),
          _row("topk", 16, 0.6), _row("random", 16, 0.63, diff=0.03),
          _row("topk", 49, 0.8), _row("random", 49, 0.8)]
  assert writer.paper_claims(rows, 49)[0] == (
      "Top-K vs random on offloaded images: top-K's paired 95% interval lies above 0 at 1 and "
      "below 0 at 1 of 2 budgets below N. K=8: 60.0% vs 55.0% (+5.0 pts, 95% CI [+4.0, +6.0]); "
      "K=16: 60.0% vs 63.0% (-3.0 pts, 95% CI [-4.0, -2.0]).")


def test_no_claims_without_sage_or_topk():
  assert writer.paper_claims([_row("random", 4, 0.5), _row("diversity", 4, 0.6)], 49) == []


def test_csv_keeps_small_p_values_and_json_is_strict():
  rows = [dict({c: 0.0 for c in metrics.COLUMNS}, method="sage", budget=4, n_images=1,
               n_offloaded=1, p_vs_topk=4.5e-30, diff_vs_topk=float("nan"))]
  got = list(csv.DictReader(io.StringIO(writer.to_csv(rows).decode())))[0]
  assert float(got["p_vs_topk"]) == 4.5e-30 and got["diff_vs_topk"] == ""
  strict = json.loads(writer.to_json(rows), parse_constant=lambda c: pytest.fail(c))
  assert strict[0]["diff_vs_topk"] is None and strict[0]["p_vs_topk"] == 4.5e-30


def _run(tmp_path, **overrides):
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(dict(rules="topk,sage", budgets="4,16", num_images=40), **overrides)
  workdir = str(tmp_path)
  rows = loop.run(c, workdir, progress=False).rows
  text = open(os.path.join(workdir, "report.md")).read()
  data = json.loads(open(os.path.join(workdir, "results.json")).read(),
                    parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
  return rows, text, data


@pytest.mark.slow
def test_nothing_offloaded_says_so_and_claims_nothing(tmp_path):
  rows, text, data = _run(tmp_path, gate=dict(eta=100.0))
  score = np.load(tmp_path / "per_image.npz")["score"]
  assert text == (
      "# sage_jax sweep report\n\nNo image was offloaded: the gate (min_entropy: offload when "
      "min-entropy > 100 bits) kept all 40 images on the edge (edge accuracy "
      f"{100 * rows[0]['edge_acc']:.1f}%; min-entropy from {score.min():.3g} to "
      f"{score.max():.3g} bits), so there is nothing to compare and no claim is checked. To "
      f"offload some, lower gate.eta below {score.max():.3g}, or offload a fixed share with "
      "gate.uncertainty=fraction.\n")
  for r in data:
    assert r["n_offloaded"] == 0 and r["offload_rate"] == 0.0
    for k in ("offloaded_acc", "ceiling_acc", "pct_of_ceiling", "diff_vs_topk", "p_vs_topk",
              "offloaded_acc_lo", "coverage", "mean_units"):
      assert r[k] is None, k
  assert not (tmp_path / "selection_map.png").exists()


@pytest.mark.slow
def test_one_offloaded_image_draws_no_conclusion(tmp_path):
  rows, text, data = _run(tmp_path, num_images=1)
  assert rows[0]["n_offloaded"] == 1
  assert ("- Only 1 image was offloaded, fewer than 20: the tables state the numbers, but no "
          "claim is checked") in text
  assert "SAGE vs top-K" not in text and "## All results" in text


@pytest.mark.slow
def test_run_without_topk_writes_strict_json(tmp_path):
  _, _, data = _run(tmp_path, rules="sage,random", budgets="8")
  assert [r["method"] for r in data] == ["sage", "random"]
  for r in data:  # nothing to compare with: null, not NaN (which strict parsers reject)
    assert r["diff_vs_topk"] is None and r["p_vs_topk"] is None
    assert 0.0 <= r["offloaded_acc"] <= 1.0


# ----------------------------------------------------------------- beyond the paper
def _goal_row(method, budget, acc, vs):
  """vs: {ref: (lo, hi)} paired intervals of this row against sage / diversity."""
  row = dict(method=method, budget=budget, offloaded_acc=acc)
  for ref in ("sage", "diversity", "topk"):
    lo, hi = vs.get(ref, (-0.01, 0.01))
    row.update({f"diff_vs_{ref}": (lo + hi) / 2, f"diff_vs_{ref}_lo": lo,
                f"diff_vs_{ref}_hi": hi, f"p_vs_{ref}": 0.5})
  return row


def _goal_rows(new_vs, sage_acc=0.6, div_acc=0.7):
  rows = []
  for b, vs in zip((4, 6, 8, 12, 16, 24, 32), new_vs):
    rows += [_goal_row("sage", b, sage_acc, {}), _goal_row("diversity", b, div_acc, {}),
             _goal_row("new", b, 0.71, vs)]
  return rows


WIN = {"sage": (0.01, 0.05), "diversity": (0.002, 0.04)}
TIE = {}


def test_goal_reached_at_four_of_five_small_budgets_without_a_loss():
  g = beyond.goal_check(_goal_rows([WIN, WIN, TIE, WIN, WIN, TIE, TIE]), "new")
  assert g["wins"] == [4, 6, 12, 16] and g["losses"] == [] and g["need"] == 4 and g["reached"]


def test_goal_not_reached_with_three_wins_or_one_loss():
  g = beyond.goal_check(_goal_rows([WIN, WIN, TIE, TIE, WIN, TIE, TIE]), "new")
  assert g["wins"] == [4, 6, 16] and not g["reached"]
  # Significantly worse than the better of the two (diversity here) at K=32: a loss.
  loss = {"diversity": (-0.03, -0.001)}
  g = beyond.goal_check(_goal_rows([WIN] * 5 + [TIE, loss]), "new")
  assert g["wins"] == [4, 6, 8, 12, 16] and g["losses"] == [32] and not g["reached"]
  # Worse than the weaker one (sage) only: not a loss.
  g = beyond.goal_check(_goal_rows([WIN] * 5 + [TIE, {"sage": (-0.03, -0.001)}]), "new")
  assert g["losses"] == [] and g["reached"]
  # Better than diversity but not than sage: not a win. Wins above K=16 do not count.
  half = {"sage": (-0.01, 0.03), "diversity": (0.01, 0.05)}
  g = beyond.goal_check(_goal_rows([half] * 5 + [WIN, WIN]), "new")
  assert g["wins"] == [] and not g["reached"]


def test_goal_tie_between_sage_and_diversity_counts_a_loss_against_either():
  g = beyond.goal_check(_goal_rows([TIE] * 6 + [{"sage": (-0.03, -0.001)}], 0.7, 0.7), "new")
  assert g["losses"] == [32]


def test_add_comparisons_pairs_each_rule_with_each_reference():
  records = dict(offloaded=np.array([1, 1, 1, 1, 0], bool), label=np.array([0, 1, 2, 3, 4]),
                 server_pred=np.array([[[0], [9], [0]], [[1], [1], [9]], [[9], [2], [2]],
                                       [[3], [3], [3]]]))  # [m=4, rules=3, budgets=1]
  rows = [dict(method=m, budget=8) for m in ("a", "b", "c")]
  metrics.add_comparisons(rows, records, ["a", "b", "c"], [8], ["topk", "b", "c"], n_boot=200)
  # a is right on 0, 1, 3; b on 1, 2, 3; c on 0, 2, 3.
  assert rows[0]["diff_vs_b"] == 0.0 and rows[0]["p_vs_b"] == 1.0
  assert rows[1]["diff_vs_b"] == 0.0 and rows[1]["diff_vs_b_lo"] == 0.0
  assert list(rows[0])[2:] == ["diff_vs_b", "diff_vs_b_lo", "diff_vs_b_hi", "p_vs_b",
                               "diff_vs_c", "diff_vs_c_lo", "diff_vs_c_hi", "p_vs_c"]
  assert "diff_vs_topk" not in rows[0]  # topk's columns come from summarize
  records["server_pred"][:, 0] = np.array([[0], [1], [2], [3]])  # a always right
  metrics.add_comparisons(rows, records, ["a", "b", "c"], [8], ["c"], n_boot=200)
  assert rows[0]["diff_vs_c"] == 0.25 and rows[0]["p_vs_c"] == 1.0  # one discordant image


def test_compare_to_and_beyond_are_checked():
  from sage_jax.sweep import plan as plan_lib
  c = defaults.sweep_config()
  c.rules, c.report.compare_to = "topk,sage", "topk,diversity"
  with pytest.raises(ValueError, match="report.compare_to 'diversity' is not allowed"):
    plan_lib.make(c)
  c.rules, c.report.compare_to = "topk,sage,diversity,mmr", "topk,sage,diversity"
  c.report.beyond.frozen = "mmr:cls_all"
  with pytest.raises(ValueError, match=r"add \['mmr:cls_all'\] to rules"):
    plan_lib.make(c)
  c.report.beyond.frozen = "mmr"
  c.report.beyond.ideas = (("MMR", "mmr,dpp", "yes", "no"),)
  with pytest.raises(ValueError, match="rule 'dpp' is not allowed"):
    plan_lib.make(c)
  c.report.beyond.ideas = (("MMR", "mmr", "yes", "no"),)
  c.report.compare_to = "topk,sage"
  with pytest.raises(ValueError, match="needs sage and diversity"):
    plan_lib.make(c)
  c.report.compare_to = "sage,diversity"
  b = plan_lib.make(c).report.beyond
  assert (b.frozen, b.ideas[0].labels) == ("mmr", ("mmr",))


def test_beyond_config_halves():
  import importlib.util
  spec = importlib.util.spec_from_file_location("fmnist_beyond",
                                                os.path.join(ROOT, "configs", "fmnist_beyond.py"))
  cfg = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cfg)
  from sage_jax.sweep import plan as plan_lib
  report_half, dev = plan_lib.make(cfg.get_config()), plan_lib.make(cfg.get_config("dev"))
  assert report_half.dataset.split == "test[5000:]" and dev.dataset.split == "test[:5000]"
  assert report_half.budgets == dev.budgets == (4, 6, 8, 12, 16, 24, 32)
  assert set(report_half.labels) < set(dev.labels)  # dev: the same plus every variant tried
  for p in (report_half, dev):
    assert p.report.beyond.frozen == cfg.FROZEN and cfg.FROZEN in p.labels
    assert {"topk", "random", "sage", "diversity"} <= set(p.labels)
    assert set(p.report.compare_to) == {"topk", "sage", "diversity"}
  with pytest.raises(ValueError, match="config argument 'x'"):
    cfg.get_config("x")


def _hand_goal(at, label):
  """Issue 14's goal as its text states it, apart from beyond.goal_check: a win at K <= 16
  when the paired interval's lower end is above 0 against SAGE and against diversity; a loss
  at any K when the upper end is below 0 against the more accurate of the two (either when
  tied). -> (wins, losses)."""
  wins, losses = [], []
  for k in (4, 8, 16, 24):
    r = at[(label, k)]
    if k <= 16 and r["diff_vs_sage_lo"] > 0 and r["diff_vs_diversity_lo"] > 0:
      wins.append(k)
    acc = {x: at[(x, k)]["offloaded_acc"] for x in ("sage", "diversity")}
    if any(r[f"diff_vs_{x}_hi"] < 0 for x in acc if acc[x] == max(acc.values())):
      losses.append(k)
  return wins, losses


@pytest.mark.slow
def test_beyond_section_on_a_development_run(tmp_path):
  """The section on a small development-half run: computed verdicts, the map, the columns."""
  c = defaults.sweep_config()
  c.edge.checkpoint = os.path.join(ROOT, c.edge.checkpoint)
  c.server.checkpoint = os.path.join(ROOT, c.server.checkpoint)
  c.update(dict(rules="topk,random,sage,diversity,mmr:cls_all,dpp", budgets="4,8,16,24",
                num_images=120))
  c.dataset.split = "test[:5000]"
  c.report.compare_to = "topk,sage,diversity"
  c.report.map_examples = 2
  c.report.beyond.update(dict(frozen="mmr:cls_all", half="a test", ideas=(
      ("MMR", "mmr:cls_all", "HELPED-MMR", "NOT-MMR"), ("DPP", "dpp", "HELPED-DPP", "NOT-DPP"))))
  rows = loop.run(c, str(tmp_path), progress=False).rows
  text = open(tmp_path / "report.md").read()
  header = open(tmp_path / "results.csv").readline().strip().split(",")
  assert header[:len(metrics.COLUMNS)] == list(metrics.COLUMNS)
  assert header[len(metrics.COLUMNS):] == ["erasure", "pixel_bits", "agree_full",
                                            "no_arrival_rate", "kl_full"] + [
      f"{k}_vs_{r}{s}" for r in ("sage", "diversity") for k, s in
      (("diff", ""), ("diff", "_lo"), ("diff", "_hi"), ("p", ""))]
  at = {(r["method"], r["budget"]): r for r in rows}
  assert at[("sage", 8)]["diff_vs_sage"] == 0.0 and at[("diversity", 4)]["p_vs_diversity"] == 1.0
  wins, losses = _hand_goal(at, "mmr:cls_all")
  verdict = "reached" if len(wins) >= 2 and not losses else "not reached"
  assert f"significantly better than both SAGE and diversity at {len(wins)} of the 3 " \
         f"budgets K <= 16" in text and f"the goal is {verdict}" in text
  for lead, name in (("mmr:cls_all", "MMR"), ("dpp", "DPP")):
    lead_wins, lead_losses = _hand_goal(at, lead)
    helped = bool(lead_wins) and not lead_losses
    assert (f"HELPED-{name}" in text) == helped and (f"NOT-{name}" in text) == (not helped)
  # The same rows with the frozen rule's intervals set by hand: a win needs both SAGE and
  # diversity beaten, so K=4 and K=16 (only SAGE beaten) are no wins, K=8 is; 1 win of the
  # 2 needed and no loss: not reached.
  hand = [dict(r) for r in rows]
  for r in hand:
    if r["method"] == "mmr:cls_all":
      both = r["budget"] == 8
      r.update(diff_vs_sage_lo=0.01, diff_vs_sage_hi=0.2, diff_vs_diversity_hi=0.2,
               diff_vs_diversity_lo=0.01 if both else -0.01)
  section = beyond.section(hand, plan_lib.make(c).report.beyond, 8)
  assert ("**`mmr:cls_all` is significantly better than both SAGE and diversity at 1 of the 3 "
          "budgets K <= 16 (K=8) and significantly worse than the better of the two at 0 of "
          "the 4 budgets: the goal is not reached.**") in section, section
  r = at[("mmr:cls_all", 8)]
  assert (f"| `mmr:cls_all` | 8 | {100 * r['offloaded_acc']:.1f} | {metrics.paired_text(r, 'sage')} |"
          in text)
  assert (tmp_path / "beyond_map.png").exists() and "(beyond_map.png)" in text
  assert text.index("## Beyond the paper") < text.index("## Accuracy vs budget")


# ----------------------------------------------------------------- the reference condition
@pytest.mark.slow
def test_the_report_reads_the_8_bit_condition_wherever_it_sits(tmp_path):
  """Issue 34: with uplink.pixel_bits="4,8" (and erasure="0.3,0") the report's main tables,
  its transmission table, the progressive points and the uplink section's baselines are
  the lossless 8-bit condition's, each with the bits of the condition it describes."""
  rows, text, _ = _run(tmp_path, num_images=90, uplink=dict(erasure="0.3,0", pixel_bits="4,8"),
                       report=dict(n_boot=20))
  by = {(r["pixel_bits"], r["method"], r["budget"]): r for r in rows if r["erasure"] == 0}
  assert by[(8, "topk", 4)]["bits_per_request"] == 4 * 134  # and 4 * 70 at 4 bits
  assert by[(4, "topk", 4)]["bits_per_request"] == 4 * 70
  assert "| 4 | 536 |" in text and "| 16 | 2144 |" in text  # the transmission table: 8-bit
  for k in (4, 16):  # the main table: the 8-bit rows
    r = by[(8, "sage", k)]
    assert (f"| sage | {k} | {r['offloaded_acc']:.4f} | {r['offloaded_acc_lo']:.4f} |"
            in text), text[text.index("## All results"):]
  with open(tmp_path / "progressive.csv") as f:
    points = list(csv.DictReader(f))
  assert points and all(float(p["mean_bits"]) == pytest.approx(134 * float(p["mean_units"]))
                        for p in points)
  assert "Coarser units against 8-bit ones" in text and "| topk | 536 | 4 |" in text
  assert "the 8-bit condition at loss rate 0," in text  # the report says which it read
  assert "% at p=0, " in text and "% at p=0.3. Its loss minus" in text  # from p=0 to 0.3


def test_without_8_bit_units_the_report_reads_the_finest_ones():
  """No 8-bit condition: the finest pixels at the lowest loss rate are the reference, and the
  report says so."""
  c = defaults.sweep_config()
  c.uplink.update(dict(erasure="0.3,0.1", pixel_bits="2,4"))
  plan = plan_lib.make(c)
  assert plan.condition_bits[plan.reference] == (0.1, 4, 70)
  assert writer.reference_text(plan) == (
      "Uplink conditions: 2 loss rates x 2 bit depths; the tables and claims below read the "
      "4-bit condition at loss rate 0.1 (no 8-bit one was swept), the uplink section all of "
      "them.")
  c.uplink.update(dict(erasure="0", pixel_bits="4"))
  plan = plan_lib.make(c)
  assert writer.reference_text(plan) == (
      "Uplink conditions: 1 loss rate x 1 bit depth; the tables and claims below read the "
      "4-bit condition at loss rate 0 (no 8-bit one was swept).")
  assert writer.reference_text(plan_lib.make(defaults.sweep_config())) == ""
