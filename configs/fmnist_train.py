"""Trains an embedded model. Arg picks which: edge | server | server_plain (Fashion-MNIST,
28px, N = 49) or scenes_edge | scenes_server (Fashion-MNIST scenes, 56px, N = 196).

  python -m sage_jax.main --config=configs/fmnist_train.py:server --workdir=/tmp/train

writes /tmp/train/fmnist_server.msgpack and /tmp/train/fmnist_server.json (each
epoch's validation accuracy on train[50000:], held out of training; the epoch with the best
is kept and only it is scored on the test split, once). The shipped models in checkpoints/
change only when you copy a result over them: cp /tmp/train/fmnist_server.msgpack checkpoints/
"""
import ml_collections

from sage_jax import defaults

# role -> (dataset, variant, epochs, crop_pad, patch-drop keep buckets or None, output file
# name in the workdir).
# The edges are small and briefly trained with augmentation so that they are clearly
# weaker than the servers; the servers train on random patch subsets.
# The scenes' server is the Fashion-MNIST server fine-tuned on the scenes (position
# embeddings resized from 7x7 to 14x14) at peak lr 1e-3: chosen on validation among three
# candidates of 2 epochs each (configs/scenes_recipes.py; docs/models.md): from scratch
# 41.6%, fine-tuned at 5e-4 50.5%, at 1e-3 54.0% on train[50000:].
ROLES = {
    "edge": (defaults.fmnist_dataset, "fm-edge", 3, 2, None, "fmnist_edge.msgpack"),
    "server": (defaults.fmnist_dataset, "fm-server", 15, 0, (49, 36, 24, 16, 8),
               "fmnist_server.msgpack"),
    "server_plain": (defaults.fmnist_dataset, "fm-server", 15, 0, None,
                     "fmnist_server_plain.msgpack"),
    "scenes_edge": (defaults.scenes_dataset, "fm-edge", 4, 2, None, "scenes_edge.msgpack"),
    "scenes_server": (defaults.scenes_dataset, "fm-server", 6, 0,
                      (196, 128, 96, 64, 48, 32, 16, 8), "scenes_server.msgpack"),
}
# Per role, what differs from the defaults below.
OVERRIDES = {"scenes_server": dict(init_from="checkpoints/fmnist_server.msgpack", lr=1e-3,
                                   warmup_steps=200)}


def get_config(role="server"):
  if role not in ROLES:
    raise ValueError(f"unknown role {role!r}; allowed: {sorted(ROLES)}")
  dataset, variant, epochs, crop_pad, keep, output = ROLES[role]
  c = ml_collections.ConfigDict()
  c.mode = "train"
  c.dataset = dataset()
  c.train = ml_collections.ConfigDict(dict(
      variant=variant,
      epochs=epochs,
      batch_size=128,
      lr=2e-3,               # peak AdamW learning rate
      warmup_steps=500,
      weight_decay=0.05,
      label_smoothing=0.1,
      crop_pad=crop_pad,     # >0: random crop after padding by this many pixels, and flips
      patch_drop_keep=keep,  # kept-patch counts drawn uniformly per step; None = all
      seed=0,
      max_steps=-1,          # > 0: stop after this many steps (a quick check); -1: no limit
      train_split="train[:50000]",  # the images trained on (TFDS split slicing)
      val_split="train[50000:]",    # held out: each epoch scored here, the best one kept
      test_split="test",     # the kept epoch scored here once; "": not read (a recipe candidate)
      eval_images=-1,        # > 0: score the first N validation and test images only; -1: all
      output=output,         # file name, written into --workdir (with <name>.json: the log)
      init_from="",          # a checkpoint to start from (fine-tuning); "": random init
  ))
  c.train.update(OVERRIDES.get(role, {}))
  return c
