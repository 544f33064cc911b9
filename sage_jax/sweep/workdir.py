"""The run's folder (any gfile path): config.json (the resolved config, the inputs and their
hash: another config, weights or data is refused) and `progress/images_<start>_<stop>.npz`.
"""
import hashlib
import io
import json
import os

from absl import logging
import numpy as np

from sage_jax import files

# Bump by hand whenever a change alters results (which images are evaluated, a rule, the
# metrics, the files' format): a workdir made by another results version is not resumed.
RESULTS_VERSION = 2


def file_sha256(path: str) -> str:
  """sha256 of a file's bytes, read in 8 MiB pieces."""
  h = hashlib.sha256()
  with files.open_read(path) as f:
    for block in iter(lambda: f.read(8 << 20), b""):
      h.update(block)
  return h.hexdigest()


def run_inputs(plan) -> dict:
  """What results depend on besides the config: the checkpoints' sha256 (logged), the
  dataset's identity and RESULTS_VERSION."""
  from sage_jax.data import input_pipeline
  ckpts = {}
  for role, model in (("edge", plan.edge), ("server", plan.server)):
    if not files.exists(model.checkpoint):
      raise FileNotFoundError(f"checkpoint not found: {model.checkpoint}")
    digest = file_sha256(model.checkpoint)
    logging.info("%s checkpoint %s: sha256 %s", role, model.checkpoint, digest)
    ckpts[role] = {"path": model.checkpoint, "sha256": digest}
  return {"results_version": RESULTS_VERSION, "checkpoints": ckpts,
          "dataset": input_pipeline.identity(plan.dataset)}


def config_hash(config_json: str, inputs=None) -> tuple:
  """The config's JSON (+ `run_inputs`) -> (its canonical JSON, sha256 of it and the inputs).
  The batch sizes are in it: XLA's CPU matmuls tile by batch, so the written floats move by
  ~1e-6 with them (README, "batch_size"), and a workdir's chunks come from one of them."""
  d = json.loads(config_json)
  text = json.dumps(d, sort_keys=True, indent=1)
  hashed = text if inputs is None else json.dumps({"config": d, "inputs": inputs},
                                                  sort_keys=True, indent=1)
  return text, hashlib.sha256(hashed.encode()).hexdigest()


def _what_differs(workdir: str, old: dict, config: dict, inputs) -> list:
  """Why a workdir's config.json (old) does not match this run: one clause per cause."""
  was, now = old.get("inputs") or {}, inputs or {}
  reasons = []
  if inputs is not None and was.get("results_version") != now["results_version"]:
    reasons.append(f"workdir {workdir} was made by results version "
                   f"{was.get('results_version', 'none')} of sage_jax, this run makes version "
                   f"{now['results_version']}")
  if "batch_size" not in (old.get("config") or {}) and "batch_size" in config:
    reasons.append(f"workdir {workdir} was made before batch sizes were part of a config "
                   "(they can move its floats by ~1e-6)")
  elif old.get("config") != config:
    reasons.append(f"workdir {workdir} holds results of another config")
  for role, ckpt in (now.get("checkpoints") or {}).items():
    before = (was.get("checkpoints") or {}).get(role) or {}
    if before.get("path") == ckpt["path"] and before.get("sha256") != ckpt["sha256"]:
      reasons.append(f"checkpoint {ckpt['path']} has other contents than when workdir "
                     f"{workdir} was made (sha256 {str(before.get('sha256'))[:12]}, now "
                     f"{ckpt['sha256'][:12]})")
  if "dataset" in now and "dataset" in was and now["dataset"] != was["dataset"]:
    fmt = lambda d: (f"{d.get('name')} {d.get('version')} with {d.get('num_examples')} "
                     f"{d.get('split')} images")
    reasons.append(f"the dataset is {fmt(now['dataset'])}, workdir {workdir} was made with "
                   f"{fmt(was['dataset'])}")
  # A checkpoint serving as edge and server is named once.
  return list(dict.fromkeys(reasons)) or [f"workdir {workdir} holds results of another config"]


def open_workdir(workdir: str, config_json: str, new_subdir: bool = False,
                 inputs=None) -> str:
  """Checks or creates the workdir -> the folder to write into; one of another config or
  inputs is refused naming what differs, or with new_subdir gives workdir/<hash[:12]>."""
  text, digest = config_hash(config_json, inputs)
  try:
    files.makedirs(workdir)
    probe = os.path.join(workdir, f".write_test{os.getpid()}")
    files.write(probe, b"")
    files.remove(probe)
  except OSError as e:
    raise PermissionError(f"workdir {workdir} is not writable ({e.strerror or e})") from None
  except Exception as e:  # tf.errors.* for gs:// and other gfile paths
    if not files.is_remote(workdir):
      raise
    raise PermissionError(f"workdir {workdir} is not writable ({type(e).__name__}: "
                          f"{getattr(e, 'message', e)})") from None
  path = os.path.join(workdir, "config.json")
  if not files.exists(path):
    record = {"hash": digest, "config": json.loads(text)}
    if inputs is not None:
      record["inputs"] = inputs
    files.write(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return workdir
  old = json.loads(files.read_bytes(path))
  if old.get("hash") == digest:
    return workdir
  if new_subdir:
    return open_workdir(os.path.join(workdir, digest[:12]), config_json, inputs=inputs)
  why = _what_differs(workdir, old, json.loads(text), inputs)
  raise ValueError(f"{'; '.join(why)} (workdir hash {str(old.get('hash'))[:12]}, this run "
                   f"{digest[:12]}); use a new --workdir, or --new_subdir to write to "
                   f"{workdir}/{digest[:12]}")


def _chunk_path(workdir, start, stop):
  return os.path.join(workdir, "progress", f"images_{start:08d}_{stop:08d}.npz")


def load_chunk(workdir, start, stop):
  """Records of a finished chunk, or None. A damaged file counts as not finished."""
  path = _chunk_path(workdir, start, stop)
  if not files.exists(path):
    return None
  try:
    with np.load(io.BytesIO(files.read_bytes(path))) as z:
      return {k: z[k] for k in z.files}
  except Exception:  # truncated/corrupt zips raise zipfile, zlib or numpy errors
    return None


def save_chunk(workdir, start, stop, records) -> None:
  """Atomically (`files.write`): a chunk file is whole or absent. Compressed fastest: it is
  read back once, by this package (per_image.npz keeps zlib's default)."""
  files.makedirs(os.path.join(workdir, "progress"))
  files.write(_chunk_path(workdir, start, stop), files.npz_bytes(records, level=1))
