"""Issue 37: progressive offloading with stop signals beyond the server's confidence, by the
honest protocol (as configs/fmnist_beyond.py).

  python -m sage_jax.main --config=configs/fmnist_progressive.py:dev --workdir=W  # development
  python -m sage_jax.main --config=configs/fmnist_progressive.py --workdir=W      # reporting

Both halves run every rule of the default job and sage_nested at the default budgets, and
keep every rule's server log-probabilities at the schedule's budgets (K = 4..24). `:dev` runs
Fashion-MNIST test images 0..4999: it fits the temperatures, chooses each stop signal's
setting, the risk-controlled thresholds and the pick (report.md's "Stop signals" section,
stop_choices.json). Those choices are frozen below as literals, committed before the
reporting half, images 5000..9999, is run; the reporting run only evaluates them.
"""
from sage_jax import defaults

# Every stop signal's thresholds: 0..1 in steps of 0.01, and 0.995, 0.999.
THRESHOLDS = ",".join(f"{t / 100:g}" for t in range(101)) + ",0.995,0.999"

# Frozen from the development run with the models retrained on 2026-12-07 (its report.md's
# literals; stop_choices.json).
TEMPERATURES = (
    ("diversity", (0.966, 0.924, 0.898, 0.861, 0.847, 0.821)),
    ("divprune", (0.97, 0.918, 0.883, 0.852, 0.839, 0.812)),
)
FROZEN = (  # the pick first
    ("edge", "cdpruner", 0.87),
    ("confidence", "cdpruner", 0.73),
    ("agree+confidence", "cdpruner", 0.68),
    ("cost", "diversity", 0.74),
    ("patience", "divprune", 2.0),
    ("product", "divprune", 0.96),
    ("kl", "cdpruner", 0.97),
    ("temperature", "divprune", 0.78),
    ("ltt@0.02", "diversity", 0.91),
    ("ltt@0.05", "diversity", 0.85),
)

HALVES = {
    None: ("test[5000:]", "frozen", "The reporting half, Fashion-MNIST test images 5000..9999 "
                                    "(nothing was chosen on it)"),
    "dev": ("test[:5000]", "fit", "The development half, Fashion-MNIST test images 0..4999 "
                                  "(every choice was made on it)"),
}


def progressive(c, arg, halves, temperatures, frozen):
  """Sets the stop-signal study on config c for half `arg` (None: reporting, dev)."""
  if arg not in halves:
    raise ValueError(f"config argument {arg!r} is not allowed; give none (reporting half) "
                     "or dev (development half)")
  split, mode, half = halves[arg]
  c.dataset.split = split
  c.rules += ",sage_nested"  # every rule of the default job, and the one nested in K
  p = c.report.progressive
  p.thresholds = THRESHOLDS
  p.signal_rules = "all"
  p.stopping.mode = mode
  p.stopping.half = half
  if mode == "frozen":
    p.stopping.temperatures = temperatures
    p.stopping.frozen = frozen
  return c


def get_config(arg=None):
  return progressive(defaults.sweep_config(), arg, HALVES, TEMPERATURES, FROZEN)
