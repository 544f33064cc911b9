"""The budget sweep: the chunk loop, resuming, and gathering over processes.

`run(config, workdir)` is the main job: the config becomes a checked plan (`plan.make`),
the images go through the jitted pipeline (`pipeline.evaluate`) in chunks of
`chunk_size`, each finished chunk is saved in the workdir (a killed run redoes at most
one), and process 0 writes the results, the plots and report.md.
"""
import time

from absl import logging
import jax
import numpy as np
from tqdm import tqdm

from sage_jax import data, distributed, metrics, offload, pipeline, report
from sage_jax import plan as plan_lib
from sage_jax import workdir as workdir_lib


def evaluate(plan, models, workdir=None, progress=False) -> dict:
  """Runs the sweep; returns per-image records (numpy arrays, dataset order).

  Records as `pipeline.evaluate`'s, over every chunk, plus the gate's threshold. With a
  workdir each finished chunk is saved and skipped when the run is started again. With
  several processes, process p takes the chunks c with c % process_count == p and every
  process ends with all records.
  """
  pipe = pipeline.build(plan, models)
  ds, bs = plan.dataset, pipe.plan.batch_size
  n_images = data.num_examples(ds, plan.num_images)
  threshold = offload.threshold(plan.gate, lambda: pipeline.uncertainties(
      pipe, data.eval_batches(ds, bs, 0, n_images)))
  starts = list(range(0, n_images, plan.chunk_size))
  ranges = [(s, min(s + plan.chunk_size, n_images)) for s in starts]
  mine = [c for c in range(len(ranges)) if distributed.owns(c)]
  own, rows_run, rows_all = {}, 0, 0
  total = sum(ranges[c][1] - ranges[c][0] for c in mine)
  with tqdm(total=total, disable=not progress, desc="sweep", unit="img") as bar:
    for c in mine:
      start, stop = ranges[c]
      recs = workdir_lib.load_chunk(workdir, start, stop) if workdir else None
      if recs is None:
        recs, (run, every) = pipeline.evaluate(pipe, data.eval_batches(ds, bs, start, stop),
                                               threshold, bar.update)
        rows_run, rows_all = rows_run + run, rows_all + every
        if workdir:
          workdir_lib.save_chunk(workdir, start, stop, recs)
      else:
        bar.update(stop - start)
      own[c] = recs
  if rows_all:
    logging.info("server ran on %d of %d (rule, budget, image) rows; the rest repeat evidence "
                 "it had already seen", rows_run, rows_all)
  parts = distributed.gather_chunks(own)
  records = {k: np.concatenate([parts[c][k] for c in range(len(ranges))]) for k in parts[0]}
  records["threshold"] = np.float64(threshold)
  return records


def run(config, workdir: str, new_subdir: bool = False, progress: bool = True) -> list:
  """Main job: sweep every (rule, budget); write results, plots and report.md.

  Resumes from the workdir's finished chunks when started again with the same config,
  checkpoints and dataset. The workdir may be local or on any filesystem TensorFlow's
  gfile knows (gs://...).
  """
  t0 = time.time()
  plan = plan_lib.make(config)
  workdir = workdir_lib.open_workdir(workdir, plan.config_json, new_subdir,
                                     workdir_lib.run_inputs(plan))
  records = evaluate(plan, pipeline.load_models(plan), workdir, progress)
  if jax.process_index() != 0:  # every process holds every record; process 0 writes
    return []
  examples = {k: records.pop(k)[:plan.report.map_examples] for k in pipeline.MAP_KEYS}
  rows = metrics.summarize(records, plan.labels, list(plan.budgets), plan.num_patches,
                           plan.bits_per_unit, plan.report.n_boot)
  report.write_all(rows, workdir, records, plan, examples)
  logging.info("sweep finished in %.1f s", time.time() - t0)
  print(report.format_table(rows))
  print(f"wrote results.csv, results.json, per_image.npz, report.md and plots to {workdir} "
        f"({time.time() - t0:.1f} s)")
  return rows
