"""Files on any filesystem gfile knows: local paths through `os`, `scheme://` paths (TensorFlow
imported for them alone) through `tf.io.gfile`; writes are atomic (docs/choices.md, "Data").
"""
import io
import os
import uuid
import zipfile

import numpy as np


def is_remote(path) -> bool:
  """True for paths that go through tf.io.gfile (`scheme://...`)."""
  return "://" in os.fspath(path)


def _gfile():
  import tensorflow as tf  # only for scheme:// paths
  return tf.io.gfile


def expanduser(path: str) -> str:
  """`~` expanded for local paths; a `scheme://` path is returned as it is."""
  return path if is_remote(path) else os.path.expanduser(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
  """Creates the folder and its parents; nothing happens if it exists."""
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list:
  """Entry names of a folder (sorted), [] when it does not exist."""
  if not exists(path):
    return []
  names = _gfile().listdir(path) if is_remote(path) else os.listdir(path)
  return sorted(n.rstrip("/") for n in names)


def size(path: str) -> int:
  """The file's size in bytes."""
  return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def mtime(path: str) -> float:
  """The file's last modification, in seconds since the epoch."""
  return _gfile().stat(path).mtime_nsec / 1e9 if is_remote(path) else os.path.getmtime(path)


def remove(path: str) -> None:
  if is_remote(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def read_bytes(path: str) -> bytes:
  """The file's bytes; FileNotFoundError when it does not exist."""
  if is_remote(path) and not _gfile().exists(path):
    raise FileNotFoundError(f"{path} not found")
  with open_read(path) as f:
    return f.read()


def open_read(path: str):
  """A binary file object for reading (streaming: hashing large files)."""
  return _gfile().GFile(path, "rb") if is_remote(path) else open(path, "rb")


def write(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (docs/choices.md); the parent folder must exist."""
  if is_remote(path):
    gfile = _gfile()
    if path.startswith("ram://") and gfile.exists(path):
      gfile.remove(path)  # ram:// appends to an existing file instead of replacing it
    with gfile.GFile(path, "wb") as f:  # the object appears whole on close
      f.write(data)
    return
  tmp = f"{path}.tmp{uuid.uuid4().hex}"  # unique across processes and hosts sharing a folder
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def npz_bytes(arrays: dict, level=None) -> bytes:
  """A compressed .npz with fixed timestamps (np.savez stamps the current time): the same
  arrays give the same bytes. level: zlib's 1 (fastest) to 9; None: zlib's default (6)."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(arrays):
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      # ZipInfo's level: compress_level from Python 3.13, _compresslevel before.
      setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel",
              level)
      with zf.open(info, "w") as f:
        np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
  return buf.getvalue()
