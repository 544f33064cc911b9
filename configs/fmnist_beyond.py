"""Issue 14, "Beyond SAGE": the honest protocol in one command (docs/beyond.md).

  python -m sage_jax.main --config=configs/fmnist_beyond.py --workdir=W       # reporting half
  python -m sage_jax.main --config=configs/fmnist_beyond.py:dev --workdir=W   # development half

Every choice (the frozen rule, its score and parameters, the other ideas' parameters) was
made on the development half, Fashion-MNIST test images 0..4999, and committed before the
reporting half, 5000..9999, was run. The reporting run compares the frozen rule, the other
ideas at their frozen parameters, SAGE, diversity, top-K and random at K = 4..32 and writes
report.md with a "Beyond the paper" section. `:dev` reruns the same on the development
half together with every variant compared there, so the development tables in
docs/beyond.md come from one command.
"""
from sage_jax import defaults

FROZEN = "mmr@0.5:cls_all"  # the frozen rule: MMR, relevance weight 0.5, on the cls_all score

BASELINES = ["topk", "random", "sage", "diversity"]
# The field's 2025 rules at their defaults, comparators of the frozen rule only ("SAGE against
# the field" in report.md); added after the freeze, so nothing was chosen with them.
FIELD = list(defaults.FIELD_RULES)

# title, rules (the first leads: the verdict sentence and the map column), then why it
# helped / did not, written on the development half before the reporting half was run.
IDEAS = {
    "mmr": dict(
        title="Maximal marginal relevance (the frozen rule)",
        rules=[FROZEN, "mmr@0.5"],
        dev=["mmr@0.3:cls_all", "mmr@0.7:cls_all", "mmr@0.5:rollout", "mmr@0.5:rollout_im"],
        helped=(
            "its relevance term, on the block-averaged cls_all score, puts the first pick on "
            "a patch several blocks agree on, and its redundancy term spreads the rest like "
            "diversity; with few patches every pick is a large share of the evidence, so the "
            "better first picks show at the smallest budgets and fade as diversity's spread "
            "alone covers the centred garment"),
        not_helped=(
            "cls_all is nearly flat (perplexity about 40 of 49 patches on the development "
            "half), so the redundancy term decides most picks and MMR sends nearly what "
            "diversity sends; where the two differ, at the smallest budgets, the difference "
            "is within the noise of about 1,700 offloaded images")),
    "sage_adaptive": dict(
        title="SAGE with a pool that follows the attention's perplexity",
        rules=["sage_adaptive:cls_all"],
        dev=["sage_adaptive", "sage_adaptive:rollout"],
        helped=(
            "cls_all is so flat (perplexity about 40 of 49) that the pool widens to most of "
            "the image, so the rule keeps SAGE's max-min selection without SAGE's pool of the "
            "2K most attended patches, and its cls_all seed is a better first patch than "
            "diversity's"),
        not_helped=(
            "cls_all is so flat (perplexity about 40 of 49) that the pool widens to most of "
            "the image and the rule becomes diversity seeded at the cls_all maximum: it "
            "escapes SAGE's pool of the 2K most attended patches but adds nothing to "
            "diversity")),
    "dpp": dict(
        title="Quality-diversity DPP (greedy MAP)",
        rules=["dpp@0.5:cls_all"],
        dev=["dpp@1:cls_all", "dpp@0", "dpp@1", "dpp@0.5:rollout", "dpp@1:rollout",
             "dpp@2:rollout"],
        helped=(
            "the determinant rewards patches that are both attended and unlike those chosen, "
            "so like MMR it spends the first picks of a small budget on attended, dissimilar "
            "patches of the garment"),
        not_helped=(
            "with the quality (cls_all / max)^0.5 nearly flat, the determinant is dominated "
            "by the volume of the embeddings, i.e. by diversity, so the rule sends nearly what "
            "diversity sends")),
    "scores": dict(
        title="Sink-aware importance under SAGE and top-K",
        rules=["sage:cls_all", "sage:norm_filtered", "sage:cls_specific", "topk:cls_all",
               "topk:norm_filtered", "topk:cls_specific"],
        dev=["diversity:cls_all"],
        helped=(
            "averaging the CLS attention over the four blocks, rather than taking the last "
            "block's, keeps a patch high only when several blocks attend to it, so fewer "
            "blank background patches enter SAGE's pool of the 2K most important; dropping "
            "high-norm tokens (norm_filtered) changes little, and keeping only the "
            "CLS-specific excess (cls_specific) narrows the score to a few patches"),
        not_helped=(
            "averaging the CLS attention over blocks keeps fewer blank patches among the most "
            "important, but SAGE's pool of the 2K most important patches stays redundant "
            "(similar neighbouring patches, as in the map), which only a diversity term "
            "spreads out; dropping high-norm tokens (norm_filtered) changes little, and "
            "keeping only the CLS-specific excess (cls_specific) narrows the score to a few "
            "patches")),
    "rollout": dict(
        title="Attention rollout: Im et al.'s code (rollout_im) beside Abnar-Zuidema (rollout)",
        rules=["sage:rollout_im", "sage:rollout", "topk:rollout_im", "topk:rollout"],
        dev=["diversity:rollout"],
        helped=(
            "rolled out through every block and the residual path, no single block's sinks "
            "dominate the ranking, so SAGE's pool holds more of the garment; Im et al.'s "
            "per-head products and Abnar-Zuidema's head means rank the patches almost alike "
            "on this 4-block, 3-head edge"),
        not_helped=(
            "rollout is nearly uniform here (perplexity about 47 of 49 patches), so its "
            "ranking rests on small differences: SAGE on it escapes some of the last block's "
            "sinks but, with a pool of 2K patches, does not pass diversity; Im et al.'s "
            "per-head products and Abnar-Zuidema's head means rank the patches almost alike "
            "on this 4-block, 3-head edge")),
}

HALVES = {
    None: ("test[5000:]", "the reporting half, Fashion-MNIST test images 5000..9999 "
                          "(nothing was chosen on it)"),
    "dev": ("test[:5000]", "the development half, Fashion-MNIST test images 0..4999 "
                           "(every choice was made on it)"),
}


def get_config(arg=None):
  if arg not in HALVES:
    raise ValueError(f"config argument {arg!r} is not allowed; give none (reporting half) "
                     "or dev (development half)")
  split, half = HALVES[arg]
  c = defaults.sweep_config()
  c.dataset.split = split
  rules = BASELINES + [r for idea in IDEAS.values() for r in idea["rules"]] + FIELD
  if arg == "dev":
    rules += [r for idea in IDEAS.values() for r in idea["dev"]]
  c.rules = ",".join(rules)
  c.budgets = "4,6,8,12,16,24,32"
  c.report.compare_to = "topk,sage,diversity"
  c.report.beyond.frozen = FROZEN
  c.report.beyond.half = half
  c.report.beyond.goal = "Goal (issue 14)"
  c.report.beyond.ideas = tuple(
      (idea["title"], ",".join(idea["rules"] + (idea["dev"] if arg == "dev" else [])),
       idea["helped"], idea["not_helped"]) for idea in IDEAS.values())
  return c
