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

# title, rules (the first leads: the verdict sentence and the map column), then why it
# helped / did not, written on the development half before the reporting half was run.
IDEAS = {
    "mmr": dict(
        title="Maximal marginal relevance (the frozen rule)",
        rules=[FROZEN, "mmr@0.5"],
        dev=["mmr@0.3:cls_all", "mmr@0.7:cls_all", "mmr@0.5:rollout", "mmr@0.5:rollout_im"],
        helped="TODO",
        not_helped="TODO"),
    "sage_adaptive": dict(
        title="SAGE with a pool that follows the attention's perplexity",
        rules=["sage_adaptive:cls_all"],
        dev=["sage_adaptive", "sage_adaptive:rollout"],
        helped="TODO",
        not_helped="TODO"),
    "dpp": dict(
        title="Quality-diversity DPP (greedy MAP)",
        rules=["dpp@0.5:cls_all"],
        dev=["dpp@1:cls_all", "dpp@0", "dpp@1", "dpp@0.5:rollout", "dpp@1:rollout",
             "dpp@2:rollout"],
        helped="TODO",
        not_helped="TODO"),
    "scores": dict(
        title="Sink-aware importance under SAGE and top-K",
        rules=["sage:cls_all", "sage:norm_filtered", "sage:cls_specific", "topk:cls_all",
               "topk:norm_filtered", "topk:cls_specific"],
        dev=["diversity:cls_all"],
        helped="TODO",
        not_helped="TODO"),
    "rollout": dict(
        title="Attention rollout: Im et al.'s code (rollout_im) beside Abnar-Zuidema (rollout)",
        rules=["sage:rollout_im", "sage:rollout", "topk:rollout_im", "topk:rollout"],
        dev=["diversity:rollout"],
        helped="TODO",
        not_helped="TODO"),
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
  rules = BASELINES + [r for idea in IDEAS.values() for r in idea["rules"]]
  if arg == "dev":
    rules += [r for idea in IDEAS.values() for r in idea["dev"]]
  c.rules = ",".join(rules)
  c.budgets = "4,6,8,12,16,24,32"
  c.report.compare_to = "topk,sage,diversity"
  c.report.beyond.frozen = FROZEN
  c.report.beyond.half = half
  c.report.beyond.ideas = tuple(
      (idea["title"], ",".join(idea["rules"] + (idea["dev"] if arg == "dev" else [])),
       idea["helped"], idea["not_helped"]) for idea in IDEAS.values())
  return c
