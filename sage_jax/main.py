"""Entry point: `python -m sage_jax.main --config=configs/X.py --workdir=DIR`.

config.mode picks the job: "sweep" (budget sweep; the default configs) or
"train" (the embedded Fashion-MNIST models).
"""
from absl import app, flags, logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where results are written.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = FLAGS.config
  logging.info("JAX process %d/%d, devices %s", jax.process_index(), jax.process_count(),
               jax.devices())
  if config.mode == "train":
    from sage_jax import train
    train.train_and_save(config, FLAGS.workdir)
  elif config.mode == "sweep":
    from sage_jax import sweep
    sweep.run(config, FLAGS.workdir)
  else:
    raise ValueError(f"unknown mode {config.mode!r}; allowed: sweep, train")


if __name__ == "__main__":
  app.run(main)
