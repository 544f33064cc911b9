"""Entry point: `python -m sage_jax.main --config=configs/X.py --workdir=DIR`.

config.mode picks the job: "sweep", "train" or "measure" (`run.MEASURES`). Bad input
ends with one line naming the bad value and exit code 2; --verbose adds the traceback.
"""
import time

STARTED = time.perf_counter()  # before absl's and jax's imports: setup's "imports" (timing.json)

# pylint: disable=wrong-import-position
import sys
import traceback

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from sage_jax.sweep import compile_cache
from sage_jax.sweep import distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where results (and progress, for resuming) are written: a "
                    "local path or any filesystem TensorFlow's gfile knows (gs://...).")
flags.DEFINE_bool("new_subdir", False, "If the workdir holds another config's results, write "
                  "to workdir/<config hash> instead of refusing.")
flags.DEFINE_bool("verbose", False, "Show tracebacks for input errors.")
distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])

# What the code raises on purpose for bad input; anything else is a bug and keeps its
# traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, PermissionError)


def run_job(config, workdir: str, new_subdir: bool = False, compile_stats=None, started=()):
  """started: ((part, time.perf_counter() at its start), ...) before this call (`main`)."""
  if config.mode in ("train", "measure") and new_subdir:
    raise ValueError(f"conflicting flags: --new_subdir applies to sweeps, not to "
                     f"mode={config.mode}")
  if config.mode == "train":
    from sage_jax.models import train
    return train.train_and_save(config, workdir)
  if config.mode == "sweep":
    started = (*started, ("imports", time.perf_counter()))  # the sweep's own modules
    from sage_jax.sweep import loop
    return loop.run(config, workdir, new_subdir, compile_stats=compile_stats, started=started)
  if config.mode == "measure":
    from sage_jax.measure import run
    return run.run_measures(config, workdir)
  raise ValueError(f"unknown mode {config.mode!r}; allowed: sweep, train, measure")


def parse_flags(argv):
  """absl's flag parsing, a bad flag or config field ending in one line and exit code 2 too."""
  try:
    args = FLAGS(argv)
    FLAGS.config.get("mode")  # the config file loads lazily; load it here
    return args
  except flags.Error as e:
    message = " ".join(str(e).split())
  except (AttributeError, KeyError) as e:  # an override names a field the config lacks
    if "config_flags" not in "".join(traceback.format_tb(e.__traceback__)):
      raise
    while e.args and isinstance(e.args[0], Exception):
      e = e.args[0]
    field, _, hint = str(e.args[0] if e.args else e).strip('"').partition("\n")
    message = f"unknown config field {field}{f' ({hint})' if hint else ''}"
  except OSError as e:  # the config file itself
    message = f"could not load the config: {str(e).strip().splitlines()[-1].strip()}"
  print(f"error: {message} (see --helpfull)", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  distributed.initialize_from_flags()
  logging.info("JAX process %d/%d, devices %s", jax.process_index(), jax.process_count(),
               jax.devices())
  compile_stats = compile_cache.Stats()
  logging.info("compilation cache: %s", compile_cache.enable(compile_cache.FLAG.value) or "off")
  try:
    run_job(FLAGS.config, FLAGS.workdir, FLAGS.new_subdir, compile_stats,
            started=(("imports", STARTED), ("startup", IMPORTED)))
    logging.info("%s", compile_stats.summary())
  except INPUT_ERRORS as e:
    if FLAGS.verbose:
      traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


IMPORTED = time.perf_counter()  # then flags, the config, JAX's backend: setup's "startup"

if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
