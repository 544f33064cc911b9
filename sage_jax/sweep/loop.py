"""The budget sweep (`run`, the main job): the checked plan, the pipeline over chunks of
images, each chunk saved (resuming), gathered over processes; process 0 writes the files.
"""
import contextlib
import dataclasses
import itertools
import json
import os
import signal
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np
from tqdm import tqdm

from sage_jax.data import input_pipeline
from sage_jax import files
from sage_jax.models import vit
from sage_jax.report import metrics
from sage_jax.report import writer
from sage_jax.sweep import distributed
from sage_jax.sweep import offload
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib
from sage_jax.sweep import workdir as workdir_lib
from sage_jax import timing


def _runs(chunks):
  """Chunk ids -> lists of consecutive ids (each is read as one slice of the split)."""
  for _, run in itertools.groupby(enumerate(chunks), lambda ic: ic[1] - ic[0]):
    yield [c for _, c in run]


def chunk_ranges(n_images: int, size: int) -> list:
  """[(start, stop)] of the chunks of `size` images (the last may be shorter)."""
  return [(s, min(s + size, n_images)) for s in range(0, n_images, size)]


def sweep_chunks(plan, models, workdir=None, progress=False, timer=timing.NULL):
  """Runs the sweep -> (per-image records in dataset order, plus the gate's threshold;
  counts of the work done). With a workdir each finished chunk is saved and skipped when the
  run is started again; with several processes every process ends with all records."""
  with timer("setup", "steps_build"):
    pipe = pipeline.build(plan, models)
    pipeline.compile_ahead(pipe)
  if jax.process_index() == 0:  # the writer's imports, while the sweep computes (not
    writer.prefetch()           # while XLA compiles on both cores)
  ds, bs, size = plan.dataset, pipe.plan.batch_size, plan.chunk_size
  n_images, gate = input_pipeline.num_examples(ds, plan.num_images), {}

  def gate_uncertainties():  # the fraction gate's own edge pass over every image
    u, gate["gate_batches"] = pipeline.uncertainties(
        pipe, input_pipeline.eval_batches(ds, bs, 0, n_images), timer)
    return u

  with timer("host"):
    threshold = offload.gate_threshold(plan.gate, gate_uncertainties)
  ranges = chunk_ranges(n_images, size)
  own, todo = {}, []
  for c in distributed.my_chunks(len(ranges)):
    with timer("write", "chunk_load"):
      own[c] = workdir_lib.load_chunk(workdir, *ranges[c]) if workdir else None
    if own[c] is None:
      todo.append(c)
  counts, saved = {}, 0
  with tqdm(total=sum(ranges[c][1] - ranges[c][0] for c in todo), disable=not progress,
            desc="sweep", unit="img") as bar:
    for run in _runs(todo):
      stream = input_pipeline.eval_batches(ds, bs, ranges[run[0]][0], ranges[run[-1]][1], size)
      for c in run:
        start, stop = ranges[c]
        batches = itertools.islice(stream, -(-(stop - start) // bs))
        own[c], done = pipeline.evaluate(pipe, batches, threshold, bar.update, timer)
        counts = _add(counts, done)
        if workdir:
          with timer("write", "chunk_save"):
            workdir_lib.save_chunk(workdir, start, stop, own[c])
          saved += 1
          _test_hook_stop(saved)
  if counts:
    logging.info("server ran on %d of %d (rule, budget, image) rows; the rest repeat evidence "
                 "it had already seen", counts["server_rows_run"], counts["server_rows_all"])
  with timer("host"):
    parts = distributed.gather_chunks(own)
    records = {k: np.concatenate([parts[c][k] for c in range(len(ranges))]) for k in parts[0]}
  records["threshold"] = np.float64(threshold)
  return records, dict(counts, **gate, batch_size=bs,
                       server_batch_size=pipe.plan.server_batch_size)


def _test_hook_stop(saved: int):
  """Test hook (tests/sweep/test_resume.py): with SAGE_JAX_TEST_STOP="N:SIGNAL" (e.g. "2:SIGKILL")
  the process sends itself SIGNAL once this run has saved N chunks, so a test kills a sweep
  at a known point instead of racing it."""
  n, _, sig = os.environ.get("SAGE_JAX_TEST_STOP", "").partition(":")
  if n and saved == int(n):
    os.kill(os.getpid(), getattr(signal, sig))


def _add(a: dict, b: dict) -> dict:
  """Sums two (nested) dicts of counts."""
  return {k: _add(a.get(k, {}), v) if isinstance(v, dict) else a.get(k, 0) + v
          for k, v in b.items()}


class Result(NamedTuple):
  """What the main job returns: the rows written, timing.json's breakdown, and what the
  rows were measured with (the checked plan, the models)."""
  rows: list
  timing: dict
  plan: Any
  models: Any


def _setup(config, workdir: str, new_subdir: bool, timer):
  """The checked plan, the workdir opened, the models loaded -> (plan, workdir, models)."""
  with timer("setup", "plan"), timing.labelled("plan"):  # each rule traced (eval_shape)
    plan = plan_lib.make(config)
  with timer("setup", "dataset_open"):
    # The split's size from its metadata: an empty slice or one smaller than num_images
    # is refused here, before any checkpoint is read or model loaded.
    input_pipeline.num_examples(plan.dataset, plan.num_images)
    plan = dataclasses.replace(plan, boxes=input_pipeline.has_boxes(plan.dataset))
  with timer("setup", "workdir"):
    workdir = workdir_lib.open_workdir(workdir, plan.config_json, new_subdir,
                                       workdir_lib.run_inputs(plan))
  with timer("setup", "model_load"), timing.labelled("model_load"):  # init's shapes
    models = pipeline.load_models(plan)
  return plan, workdir, models


def run(config, workdir: str, new_subdir: bool = False, progress: bool = True,
        compile_stats=None, window=contextlib.nullcontext, started=()) -> Result:
  """Main job: sweep every (rule, budget); write results, plots, report.md and timing.json,
  resuming from the workdir's finished chunks. compile_stats: compile_cache.Stats (compile
  time and programs apart in timing.json); window: a context manager around the evaluation
  alone; started: setup's parts before this call (`timing.Timer`'s before: main's imports)."""
  timer = timing.Timer(compile_stats, before=started)
  # The outermost segment: host-side time no inner segment claims (e.g. the input
  # pipeline's teardown when evaluate returns), so the segments add up to the wall time.
  with timer("host"):
    plan, workdir, models = _setup(config, workdir, new_subdir, timer)
    with window():
      records, counts = sweep_chunks(plan, models, workdir, progress, timer)
    if jax.process_index() != 0:  # every process holds every record; process 0 writes
      return Result([], {}, plan, models)
    with timer("write", "summarize"):
      examples = {k: records.pop(k)[:plan.report.map_examples] for k in pipeline.MAP_KEYS}
      rows = metrics.summarize(records, plan.labels, list(plan.budgets), plan.num_patches,
                               plan.bits_per_unit, plan.report.n_boot,
                               conditions=plan.condition_bits)
      if rows[0]["n_offloaded"] == 0:
        logging.warning(writer.nothing_offloaded(rows[0], plan.gate, records["score"]))
    with timer("write", "report_sections"):  # write_all's own parts come out of it
      writer.write_all(rows, workdir, records, plan, examples, timer=timer)
  breakdown = _breakdown(timer, counts, plan, models, len(records["index"]))
  files.write(os.path.join(workdir, "timing.json"),
              (json.dumps(breakdown, indent=1) + "\n").encode())
  logging.info("sweep finished in %.1f s: %s; server %.1f GFLOP/s while computing",
               breakdown["wall_s"], timer.summary(), breakdown.get("server_flops_per_s", 0.0) / 1e9)
  print(writer.format_table(writer.main_rows(rows, plan)))
  print(f"wrote results.csv, results.json, per_image.npz, report.md and plots to {workdir} "
        f"({breakdown['wall_s']:.1f} s)")
  return Result(rows, breakdown, plan, models)


def _breakdown(timer, counts, plan, models, images) -> dict:
  """timing.json (`timing`'s docstring): the wall time, its segments and their parts, the
  work counted, the server's FLOP/s, every program compiled."""
  wall = timer.total()
  breakdown = dict(wall_s=wall, segments_s=dict(timer.seconds),
                   segment_parts_s=timer.parts_json(), images=images, **counts)
  if counts.get("server_calls"):  # the server's FLOPs (vit.forward_flops) over its time computing
    kept = {k: int(k) if k != "ceiling" else plan.num_patches for k in counts["server_calls"]}
    flops = sum(n * counts["server_batch_size"] * vit.forward_flops(
        models.server, kept[k], plan.dataset.channels) for k, n in counts["server_calls"].items())
    seg = timer.seconds
    computing = wall - seg["setup"] - seg["compile"] - seg["write"]
    breakdown.update(server_flops=flops, server_flops_per_s=flops / max(computing, 1e-9))
  breakdown["programs"] = timer.programs()
  return breakdown
