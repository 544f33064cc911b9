"""Issue 34: the scenes server's recipe chosen on validation. Arg picks the candidate:
scratch | ft_5e-4 | ft_1e-3.

  python -m sage_jax.main --config=configs/scenes_recipes.py:scratch --workdir=/tmp/recipes

Each candidate trains the scenes server of configs/fmnist_train.py:scenes_server for the same
2 epochs (a full warmup-cosine schedule of 2 epochs) on train[:50000] and is scored on
train[50000:] only: the test split is not read (train.test_split ""). The candidates are the
three the shipped recipe was chosen among from test readings (docs/models.md, "History"):
  scratch   random init, the Fashion-MNIST server's recipe (peak lr 2e-3, 500 warmup steps)
  ft_5e-4   fine-tuned from checkpoints/fmnist_server.msgpack, peak lr 5e-4, 100 warmup steps
  ft_1e-3   fine-tuned likewise, peak lr 1e-3, 200 warmup steps (the shipped recipe's)
Rule, fixed before any candidate ran: the shipped recipe keeps the candidate with the best
validation accuracy after its 2 epochs; its length (6 epochs) is the compute spent on the
shipped model, and the epoch kept within it is chosen on validation as for every model.
"""
import os

from sage_jax import defaults

_TRAIN = defaults.load_config(os.path.join(os.path.dirname(__file__), "fmnist_train.py"))

CANDIDATES = {
    "scratch": dict(init_from="", lr=2e-3, warmup_steps=500),
    "ft_5e-4": dict(init_from="checkpoints/fmnist_server.msgpack", lr=5e-4, warmup_steps=100),
    "ft_1e-3": dict(init_from="checkpoints/fmnist_server.msgpack", lr=1e-3, warmup_steps=200),
}
EPOCHS = 2


def get_config(candidate="ft_1e-3"):
  if candidate not in CANDIDATES:
    raise ValueError(f"unknown candidate {candidate!r}; allowed: {sorted(CANDIDATES)}")
  c = _TRAIN.get_config("scenes_server")
  c.train.update(CANDIDATES[candidate], epochs=EPOCHS, test_split="",
                 output=f"scenes_server_{candidate}.msgpack")
  return c
