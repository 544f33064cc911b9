"""Several hosts: process p evaluates one contiguous block of chunks (`my_chunks`), records
travel to every process through JAX's collectives (`gather_chunks`), process 0 writes.
"""
import io

from absl import flags
import jax
import numpy as np

from sage_jax import files

# How long the gather's barrier waits for the other processes: JAX's collectives give up
# after 30 s, and hosts may finish minutes apart (docs/choices.md, "Devices and hosts").
GATHER_TIMEOUT_S = 6 * 3600


def define_flags():
  """--distributed and its arguments (for sage_jax.main and sage_jax.rehearsal)."""
  flags.DEFINE_bool("distributed", False, "Start JAX's distributed runtime (one process per "
                    "host); on TPU VMs and SLURM the arguments below are detected.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (--distributed).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (--distributed).")
  flags.DEFINE_integer("process_id", None, "This process's index (--distributed).")


def initialize_from_flags():
  """Starts JAX's distributed runtime if --distributed was given."""
  f = flags.FLAGS
  if f.distributed:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; else unused
    jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)


def my_chunks(n_chunks: int) -> range:
  """This process's contiguous block of chunks 0..n_chunks-1 (sizes differ by at most one)."""
  p, i = jax.process_count(), jax.process_index()
  return range(i * n_chunks // p, (i + 1) * n_chunks // p)


def barrier(name: str) -> None:
  """Waits (up to GATHER_TIMEOUT_S) until every process has reached `name`."""
  if jax.process_count() > 1:
    from jax._src import distributed as jax_distributed  # the barrier has no public API
    jax_distributed.global_state.client.wait_at_barrier(name, GATHER_TIMEOUT_S * 1000)


def gather_chunks(own: dict) -> dict:
  """{chunk id: records} of this process -> every process's, as npz bytes through
  process_allgather (padded to the longest) once all have reached the gather."""
  if jax.process_count() == 1:
    return own
  from jax.experimental import multihost_utils
  barrier("sage_jax_gather")
  blob = np.frombuffer(files.npz_bytes(
      {f"{c}.{k}": v for c, recs in own.items() for k, v in recs.items()}), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([blob.size]))).ravel()
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  out = {}
  for row, size in zip(np.asarray(multihost_utils.process_allgather(padded)), sizes):
    with np.load(io.BytesIO(row[:size].tobytes())) as z:
      for name in z.files:
        c, k = name.split(".", 1)
        out.setdefault(int(c), {})[k] = z[name]
  return out
