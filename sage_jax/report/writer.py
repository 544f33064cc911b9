"""Results -> table on stdout; results.csv/.json, per_image.npz, plots and report.md."""
import csv
import importlib
import io
import json
import math
import os
import threading

from sage_jax import files
from sage_jax.report import against_field
from sage_jax.report import beyond as beyond_lib
from sage_jax.report import degraded
from sage_jax.report import figures
from sage_jax.report import link_cost
from sage_jax.report import metrics
from sage_jax.report.metrics import COLUMNS
from sage_jax.report import progressive
from sage_jax.report import tables
from sage_jax.report.tables import fixed
from sage_jax import timing


def prefetch() -> threading.Thread:
  """Imports what writing needs and the sweep does not (scipy.stats and scipy.optimize,
  matplotlib with its Agg backend: about 1 s on 2 cores) in a thread, so that the import
  overlaps the sweep instead of adding to setup or write (issue 38). An import the writer
  starts before this one ends waits for it (Python's module lock)."""
  def run():
    for name in ("scipy.stats", "scipy.optimize"):
      importlib.import_module(name)
    figures.pyplot()
  thread = threading.Thread(target=run, name="sage_jax prefetch")
  thread.start()
  return thread


def format_table(rows, columns=("method", "budget", "offloaded_acc", "pct_of_ceiling",
                                "overall_acc", "mean_units", "comm_cost", "coverage",
                                "diff_vs_topk", "p_vs_topk")) -> str:
  """The sweep's stdout: the run's head line, then the main columns of every row."""
  head = rows[0] if rows else {}
  nan = float("nan")
  return (f"edge_acc {fixed(head.get('edge_acc', nan))}  ceiling_acc (offloaded) "
          f"{fixed(head.get('ceiling_acc', nan))}  offload_rate "
          f"{fixed(head.get('offload_rate', nan))}  n_images {head.get('n_images', 0)}\n"
          + tables.text(columns, [[fixed(r[c]) for c in columns] for r in rows]))


def to_csv(rows) -> bytes:
  """Every number at full precision (Python's shortest round-trip form), so a McNemar p of
  4.5e-30 survives; undefined values are empty. Columns: COLUMNS first for summary rows, then
  the others the rows carry (uplink, agreement, `metrics.add_comparisons`), in their order."""
  head = rows[0] if rows else dict.fromkeys(COLUMNS)
  first = list(COLUMNS) if set(COLUMNS) <= set(head) else []
  columns = first + [k for k in head if k not in first]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
  w.writeheader()
  w.writerows({k: ("" if math.isnan(r[k]) else repr(r[k])) if isinstance(r[k], float) else r[k]
               for k in columns} for r in rows)
  return buf.getvalue().encode()


def to_json(rows) -> bytes:
  """Strict JSON (jq, JavaScript, Go parse it): undefined values are null, never NaN."""
  rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
          for r in rows]
  return (json.dumps(rows, indent=1, allow_nan=False) + "\n").encode()


def _pct(x):
  return f"{100 * x:.1f}%"


# Below this many offloaded images the report states the numbers but checks no claim: an
# accuracy then moves in steps of 5 points or more, and a 95% percentile-bootstrap interval
# over so few images undercovers.
MIN_OFFLOADED = 20


def nothing_offloaded(head, gate, uncertainty) -> str:
  """What a run that offloaded no image says instead of claims: the gate, and what to change."""
  lo, hi = float(uncertainty.min()), float(uncertainty.max())
  rule = {"min_entropy": f"min-entropy > {gate.eta:g} bits",
          "entropy": f"Shannon entropy > {gate.eta:g} bits",
          "margin": f"top-2 probability margin < {gate.eta:g}",
          "fraction": f"the least confident {gate.fraction:.3g} of the images"}[gate.uncertainty]
  if gate.uncertainty == "margin":
    spread, change = (f"margins from {-hi:.3g} to {-lo:.3g}",
                      f"raise gate.eta above {-hi:.3g}")
  elif gate.uncertainty == "fraction":
    spread, change = (f"min-entropies from {lo:.3g} to {hi:.3g} bits",
                      "raise gate.fraction so that it rounds to at least one image")
  else:
    spread, change = (f"{rule.split(' >')[0]} from {lo:.3g} to {hi:.3g} bits",
                      f"lower gate.eta below {hi:.3g}")
  return (f"No image was offloaded: the gate ({gate.uncertainty}: offload when {rule}) kept all "
          f"{head['n_images']} images on the edge (edge accuracy {_pct(head['edge_acc'])}; "
          f"{spread}), so there is nothing to compare and no claim is checked. To offload "
          f"some, {change}, or offload a fixed share with gate.uncertainty=fraction.")


def paper_claims(rows, num_patches: int, moderate=(12, 24)) -> list:
  """The paper's claims, checked on these rows; one sentence with the numbers each."""
  by = {(r["method"], r["budget"]): r for r in rows}
  budgets = sorted({r["budget"] for r in rows})
  out = [_topk_vs_random(by, budgets, num_patches)]
  out += _on_item_claim(by, budgets) if "sent_on_item" in rows[0] else []
  out = [c for c in out if c]
  if any(m == "sage" for m, _ in by) and any(m == "topk" for m, _ in by):
    parts, wins, losses = [], 0, 0
    for b in budgets:
      s, t = by.get(("sage", b)), by.get(("topk", b))
      if s and t:
        sig = s["p_vs_topk"] < 0.05
        wins += sig and s["diff_vs_topk"] > 0
        losses += sig and s["diff_vs_topk"] < 0
        parts.append(f"K={b}: {_pct(s['offloaded_acc'])} vs {_pct(t['offloaded_acc'])} "
                     f"(diff {100 * s['diff_vs_topk']:+.1f} pts, 95% CI "
                     f"[{100 * s['diff_vs_topk_lo']:+.1f}, {100 * s['diff_vs_topk_hi']:+.1f}], "
                     f"McNemar p={s['p_vs_topk']:.2g})")
    out.append(f"SAGE vs top-K on offloaded images: SAGE significantly better at {wins}, worse at "
               f"{losses} of {len(parts)} budgets. " + "; ".join(parts) + ".")
    reach = [b for b in budgets if ("sage", b) in by and by[("sage", b)]["pct_of_ceiling"] >= 93]
    if reach:
      b, r = reach[0], by[("sage", reach[0])]
      ceil = r["ceiling_acc"]  # the interval of SAGE's accuracy over the ceiling's point value
      out.append(f"SAGE reaches 93% of the server ceiling first at K={b} "
                 f"({r['pct_of_ceiling']:.1f}% of ceiling, 95% CI "
                 f"{100 * r['offloaded_acc_lo'] / ceil:.1f}-"
                 f"{100 * r['offloaded_acc_hi'] / ceil:.1f}%"
                 f"; {b}/{num_patches} = {100 * b / num_patches:.0f}% of the patches; the paper: "
                 "under half).")
    else:
      best = max((by[("sage", b)] for b in budgets if ("sage", b) in by),
                 key=lambda r: -1.0 if math.isnan(r["pct_of_ceiling"]) else r["pct_of_ceiling"])
      out.append(f"SAGE does not reach 93% of the ceiling at any budget here (best "
                 f"{best['pct_of_ceiling']:.1f}% at K={best['budget']}).")
  mod = [b for b in budgets if moderate[0] <= b <= moderate[1]]
  if mod and all(("grid", b) in by and ("random", b) in by for b in mod):
    g = [by[("grid", b)]["offloaded_acc"] for b in mod]
    rnd = [by[("random", b)]["offloaded_acc"] for b in mod]
    txt = (f"Content-blind grid at moderate budgets K={mod[0]}..{mod[-1]}: mean "
           f"{_pct(sum(g) / len(g))} vs random {_pct(sum(rnd) / len(rnd))}")
    if all(("topk", b) in by for b in mod):
      t = [by[("topk", b)]["offloaded_acc"] for b in mod]
      txt += f" and top-K {_pct(sum(t) / len(t))}"
    beats = sum(a > c for a, c in zip(g, rnd))
    txt += f"; grid beats random at {beats} of {len(mod)} of these budgets"
    if "diff_vs_random" in by[("grid", mod[0])]:  # paired, when the config compares with random
      txt += " (grid - random: " + "; ".join(
          f"K={b} {metrics.paired_text(by[('grid', b)], 'random')}" for b in mod) + ")"
    out.append(txt + ".")
  return out


def _topk_vs_random(by, budgets, num_patches) -> str:
  """Does the edge's attention find the evidence? top-K - random, paired, below K = N."""
  below = [b for b in budgets if b < num_patches and ("topk", b) in by and ("random", b) in by]
  if not below:
    return ""
  parts, above, under = [], 0, 0
  for b in below:  # random's row holds random - top-K; the claim reads top-K - random
    r = by[("random", b)]
    diff, lo, hi = -r["diff_vs_topk"], -r["diff_vs_topk_hi"], -r["diff_vs_topk_lo"]
    above += lo > 0
    under += hi < 0
    parts.append(f"K={b}: {_pct(by[('topk', b)]['offloaded_acc'])} vs "
                 f"{_pct(r['offloaded_acc'])} ({metrics.format_points(diff)} pts, 95% CI "
                 f"[{metrics.format_points(lo)}, {metrics.format_points(hi)}])")
  return (f"Top-K vs random on offloaded images: top-K's paired 95% interval lies above 0 at "
          f"{above} and below 0 at {under} of {len(below)} budgets below N. "
          + "; ".join(parts) + ".")


def _on_item_claim(by, budgets) -> list:
  """Where the sent patches are: top-K's (and SAGE's, random's) share on the item's box."""
  rules = [m for m in ("topk", "sage", "random") if all((m, b) in by for b in budgets)]
  if not rules:
    return []
  share = by[(rules[0], budgets[0])]["item_share"]
  parts = [f"{m} " + ", ".join(f"K={b} {_pct(by[(m, b)]['sent_on_item'])}" for b in budgets
                               if b < max(budgets)) for m in rules]
  return [f"Sent patches on the item's box (the item covers {_pct(share)} of the patches on "
          "average): " + "; ".join(parts) + "."]


def _pivot(rows, budgets, column, fmt=lambda v: f"{100 * v:.1f}") -> str:
  """rule x budget table of one column, in % (or as fmt writes it)."""
  by = {(r["method"], r["budget"]): r for r in rows}
  methods = list(dict.fromkeys(r["method"] for r in rows))
  return tables.markdown(["rule"] + [f"K={b}" for b in budgets],
                         [[f"`{m}`"] + [fmt(by[(m, b)][column]) if (m, b) in by else ""
                                        for b in budgets] for m in methods])


def _on_item_section(rows, budgets) -> list:
  if "sent_on_item" not in rows[0]:
    return []
  return ["## Evidence on the item", "",
          f"The item's box covers {_pct(rows[0]['item_share'])} of the patches on average (a "
          "content-blind rule's expected share). Share of the sent patches that overlap the "
          "item's box (%):", "", _pivot(rows, budgets, "sent_on_item"), "",
          "Share of the item's patches that were sent (%):", "",
          _pivot(rows, budgets, "item_sent"), ""]


def _agreement_section(rows, budgets) -> list:
  """Agreement and KL; where units were lost, over the images the server answered, and the
  share it did not (no_arrival_rate) in its own table."""
  lost = any(r.get("no_arrival_rate", 0.0) > 0 for r in rows)
  over = ("offloaded images the server answered (at least one unit arrived)" if lost
          else "offloaded images")
  return ["## Agreement with the full view", "",
          f"Share of the {over} where the server's answer from the K units equals its "
          "answer from all patches (agree_full, %):", "", _pivot(rows, budgets, "agree_full"), "",
          "Mean KL divergence from the all-patch softmax to the K-unit softmax (kl_full, nats):",
          "", _pivot(rows, budgets, "kl_full", lambda v: f"{v:.3f}"), "",
          *(["Share of the offloaded images where no sent unit arrived and the edge's answer "
             "stands (no_arrival_rate, %):", "", _pivot(rows, budgets, "no_arrival_rate"), ""]
            if lost else [])]


def _swap_table(rows, budgets) -> str:
  """Accuracy vs swapped fraction f (topk: f = 0; swap@f)."""
  fracs = [("topk", "0")] + sorted(
      ((r["method"], r["method"].split("@")[1]) for r in rows
       if r["method"].startswith("swap@") and r["budget"] == budgets[0]), key=lambda x: float(x[1]))
  if len(fracs) < 2:
    return "(no swap@f methods in this run)"
  by = {(r["method"], r["budget"]): r for r in rows}
  return tables.markdown(["f"] + [f"K={b}" for b in budgets],
                         [[f] + [fixed(by[(m, b)]["offloaded_acc"]) if (m, b) in by else ""
                                 for b in budgets] for m, f in fracs])


def report_md(rows, claims, channel_rows, map_budget, channel_name, beyond="",
              studies=(), reference="", field="") -> str:
  head = rows[0]
  budgets = sorted({r["budget"] for r in rows})
  cols = ("method", "budget", "offloaded_acc", "offloaded_acc_lo", "offloaded_acc_hi",
          "pct_of_ceiling", "overall_acc", "mean_units", "comm_cost", "diff_vs_topk", "p_vs_topk")
  ch_cols = ["budget", "bits"] + [k for k in channel_rows[0] if k.startswith("latency_ms_")]
  return "\n".join([
      "# sage_jax sweep report", "",
      f"{head['n_images']} images; edge accuracy {_pct(head['edge_acc'])}; "
      f"{head['n_offloaded']} offloaded ({_pct(head['offload_rate'])}); server ceiling on them "
      f"{_pct(head['ceiling_acc'])} (95% CI {_pct(head['ceiling_acc_lo'])}-"
      f"{_pct(head['ceiling_acc_hi'])}). Intervals: percentile bootstrap over images; "
      "p: exact McNemar test against top-K on the same images.", "",
      *([reference, ""] if reference else []),
      "## The paper's claims on this run", "", *[f"- {c}" for c in claims], "",
      *([beyond, ""] if beyond else []),
      *([field, ""] if field else []),
      "## Accuracy vs budget", "", "![accuracy vs budget](curves.png)", "",
      "## Accuracy vs bits and latency", "",
      "![accuracy vs bits](acc_vs_bits.png)", "",
      "![accuracy vs latency](acc_vs_latency.png)", "",
      f"Transmission time per request (serialisation only; latency plot: {channel_name}):", "",
      tables.markdown_rows(channel_rows, ch_cols), "",
      f"## What each rule sends (K={map_budget})", "", "![selection map](selection_map.png)", "",
      "## Swap experiment: top-K with its lowest-ranked fraction f replaced by max-min picks", "",
      _swap_table(rows, budgets), "",
      *_on_item_section(rows, budgets),
      *_agreement_section(rows, budgets),
      *[f"{s}\n" for s in studies if s],
      "## Spatial coverage and attention entropy", "",
      tables.markdown_rows(rows, ("method", "budget", "coverage", "acc_low_attn_entropy",
                                  "acc_high_attn_entropy")), "",
      "## All results", "", tables.markdown_rows(rows, cols), ""])


def main_rows(rows, plan) -> list:
  """The rows of the reference uplink condition (`plan.reference`; the whole sweep with the
  default uplink)."""
  ref = plan.condition_bits[plan.reference][:2]
  return [r for r in rows if (r.get("erasure", 0.0), r.get("pixel_bits", 8)) == ref]


def reference_text(plan) -> str:
  """Which uplink condition the report's tables read, where the sweep has another one or
  that one is not the perfect 8-bit channel; "" otherwise."""
  rate, bits, _ = plan.condition_bits[plan.reference]
  rates, depths = len(plan.uplink.erasure), len(plan.uplink.pixel_bits)
  if rates * depths == 1 and (rate, bits) == (0.0, 8):
    return ""
  count = lambda n, what: f"{n} {what}{'s' if n != 1 else ''}"
  return (f"Uplink conditions: {count(rates, 'loss rate')} x {count(depths, 'bit depth')}; the "
          f"tables and claims below read the {bits}-bit condition at loss rate {rate:g}"
          + (" (no 8-bit one was swept)" if bits != 8 else "")
          + (", the uplink section all of them." if rates * depths > 1 else "."))


def write_all(rows, workdir, records, plan, examples=None, timer=timing.NULL):
  """results.csv/.json, per_image.npz, the plots and report.md (progressive.csv too); the
  comparisons with report.compare_to are added to `rows` in place. examples: the selection
  map's rows (`pipeline.MAP_KEYS`), or None. The report reads the reference uplink
  condition's rows (`plan.reference`), each table at that condition's bits per unit; the
  uplink section all of them. timer: its write parts (`timing`)."""
  with timer("write", "comparisons"):
    metrics.add_comparisons(rows, records, plan.labels, plan.budgets, plan.report.compare_to,
                            plan.report.n_boot, plan.condition_bits)
  with timer("write", "results_files"):
    files.write(os.path.join(workdir, "results.csv"), to_csv(rows))
    files.write(os.path.join(workdir, "results.json"), to_json(rows))
    files.write(os.path.join(workdir, "per_image.npz"), files.npz_bytes(records))
  if rows[0]["n_offloaded"] == 0:  # no accuracy to plot or compare
    text = nothing_offloaded(rows[0], plan.gate, records["score"])
    files.write(os.path.join(workdir, "report.md"),
                f"# sage_jax sweep report\n\n{text}\n".encode())
    return
  cfg, main = plan.report, main_rows(rows, plan)
  _plots(main, workdir, plan, examples, timer)
  m = rows[0]["n_offloaded"]
  if m < MIN_OFFLOADED:
    claims = [f"Only {m} image{' was' if m == 1 else 's were'} offloaded, fewer than "
              f"{MIN_OFFLOADED}: the tables state "
              "the numbers, but no claim is checked (an accuracy over so few images moves in "
              "steps of 5 points or more, and its bootstrap interval is unreliable)."]
  else:
    claims = paper_claims(main, plan.num_patches, cfg.moderate)
  section, studies, field = "", (), ""
  if m >= MIN_OFFLOADED:
    field = against_field.write_section(main, records, plan)
  if cfg.beyond is not None:
    section = (beyond_lib.section(main, cfg.beyond, cfg.map_budget) if m >= MIN_OFFLOADED else
               "## Beyond the paper\n\nToo few offloaded images to check the goal.")
  if m >= MIN_OFFLOADED:
    text, points = progressive.section(records, plan, main, workdir)
    if points:
      files.write(os.path.join(workdir, "progressive.csv"), to_csv(points))
    studies = (text, degraded.section(records, plan, rows, workdir))
  unit_bits = plan.condition_bits[plan.reference][2]  # what the main rows' units cost
  md = report_md(main, claims,
                 link_cost.channel_table(sorted(plan.budgets), unit_bits, dict(cfg.rates)),
                 cfg.map_budget, cfg.channel, section, studies, reference_text(plan), field)
  files.write(os.path.join(workdir, "report.md"), md.encode())


def _plots(rows, workdir, plan, examples, timer=timing.NULL):
  """Accuracy vs budget, bits and latency; the selection maps (the beyond one too)."""
  cfg = plan.report
  with timer("write", "figures/curves.png"):
    figures.accuracy_plot(rows, os.path.join(workdir, "curves.png"))
  with timer("write", "figures/acc_vs_bits.png"):
    figures.accuracy_plot(rows, os.path.join(workdir, "acc_vs_bits.png"), x="bits_per_request")
  with timer("write", "figures/acc_vs_latency.png"):
    figures.accuracy_plot(rows, os.path.join(workdir, "acc_vs_latency.png"), x="latency_ms",
                          rate=dict(cfg.rates)[cfg.channel])
  if examples is None or not len(examples["map_image"]):
    return
  with timer("write", "figures/selection_map.png"):
    figures.selection_map(examples["map_image"] / 255.0, examples["map_keep_idx"],
                          examples["map_keep_mask"], plan.labels, plan.patch_size,
                          os.path.join(workdir, "selection_map.png"))
  if cfg.beyond is not None:
    cols = [plan.labels.index(m) for m in beyond_lib.map_columns(cfg.beyond)]
    with timer("write", "figures/beyond_map.png"):
      figures.selection_map(examples["map_image"] / 255.0, examples["map_keep_idx"][:, cols],
                            examples["map_keep_mask"][:, cols],
                            beyond_lib.map_columns(cfg.beyond), plan.patch_size,
                            os.path.join(workdir, "beyond_map.png"))
