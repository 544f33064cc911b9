"""Several hosts: records travel between processes through JAX's own collectives.

Process p evaluates one contiguous block of the image chunks (`my_chunks`), so it reads one
slice of the split; `gather_chunks` gives every process every chunk's records (no shared
filesystem needed), and process 0 writes.
"""
import io

import jax
import numpy as np

from sage_jax import workdir as workdir_lib


def my_chunks(n_chunks: int) -> range:
  """This process's share of chunks 0..n_chunks-1: a contiguous block, sizes differing by
  at most one."""
  p, i = jax.process_count(), jax.process_index()
  return range(i * n_chunks // p, (i + 1) * n_chunks // p)


def gather_chunks(own: dict) -> dict:
  """{chunk id: records} of this process -> those of every process, on every process.

  Records travel as npz bytes through process_allgather (padded to the longest).
  """
  if jax.process_count() == 1:
    return own
  from jax.experimental import multihost_utils
  blob = np.frombuffer(workdir_lib.npz_bytes(
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
