"""The run's folder: the resolved config and its hash, progress chunks, atomic writes.

A sweep saves each finished chunk of images as `progress/images_<start>_<stop>.npz`,
so a killed run repeats at most one chunk when started again with the same
command. The workdir keeps `config.json` (resolved config + hash); a different
config is refused rather than mixed with earlier results.
"""
import hashlib
import io
import json
import os

import zipfile

import numpy as np

# Fields that change how fast a sweep runs, never its results (tests prove it).
PERF_ONLY = ("batch_size", "server_batch_size")


def atomic_write(path: str, data: bytes) -> None:
  """Write to a temporary name, then rename: readers see the old file or the new one."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def config_hash(config_json: str) -> tuple:
  """The resolved config's JSON -> (canonical JSON of its result-relevant part, sha256)."""
  d = json.loads(config_json)
  for k in PERF_ONLY:
    d.pop(k, None)
  text = json.dumps(d, sort_keys=True, indent=1)
  return text, hashlib.sha256(text.encode()).hexdigest()


def open_workdir(workdir: str, config_json: str, new_subdir: bool = False) -> str:
  """Checks/creates the workdir for a config (`plan.config_json`); returns the folder to
  write into.

  An existing workdir made with another config is refused, or with
  new_subdir=True the run goes to workdir/<hash[:12]>.
  """
  text, digest = config_hash(config_json)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test{os.getpid()}")
    open(probe, "wb").close()
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"workdir {workdir} is not writable ({e.strerror})") from None
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f).get("hash")
    if old != digest:
      if new_subdir:
        return open_workdir(os.path.join(workdir, digest[:12]), config_json)
      raise ValueError(
          f"workdir {workdir} holds results of another config (hash {str(old)[:12]}, this one "
          f"{digest[:12]}); use a new --workdir, or --new_subdir to write to {workdir}/{digest[:12]}")
  else:
    atomic_write(path, (json.dumps({"hash": digest, "config": json.loads(text)}, indent=1,
                                   sort_keys=True) + "\n").encode())
  return workdir


def _chunk_path(workdir, start, stop):
  return os.path.join(workdir, "progress", f"images_{start:08d}_{stop:08d}.npz")


def load_chunk(workdir, start, stop):
  """Records of a finished chunk, or None. A damaged file counts as not finished."""
  path = _chunk_path(workdir, start, stop)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  except Exception:  # truncated/corrupt zips raise zipfile, zlib or numpy errors
    return None


def npz_bytes(arrays: dict) -> bytes:
  """A compressed .npz with fixed timestamps (np.savez stamps the current time),
  so the same arrays always give the same bytes."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(arrays):
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      with zf.open(info, "w") as f:
        np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
  return buf.getvalue()


def save_chunk(workdir, start, stop, records) -> None:
  os.makedirs(os.path.join(workdir, "progress"), exist_ok=True)
  atomic_write(_chunk_path(workdir, start, stop), npz_bytes(records))
