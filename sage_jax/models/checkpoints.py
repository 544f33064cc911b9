"""sage_jax's checkpoint format: one msgpack file {"params", "meta"}; meta (variant,
classes, image size, source) lets a sweep check a checkpoint against its config first.
"""
import json
import os

import flax.serialization
import jax
import numpy as np

from sage_jax import files


def save(path: str, params, meta: dict) -> None:
  """Writes atomically (`files.write`) so a kill never leaves half a file."""
  blob = flax.serialization.msgpack_serialize(
      {"params": jax.tree.map(np.asarray, params), "meta": json.dumps(meta)})
  files.makedirs(os.path.dirname(path if files.is_remote(path) else os.path.abspath(path)))
  files.write(path, blob)


def load(path: str):
  """-> (params, meta). Clear errors for a missing or unreadable file."""
  if not files.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  blob = files.read_bytes(path)
  try:
    state = flax.serialization.msgpack_restore(blob)
    params, meta = state["params"], json.loads(state["meta"])
  except Exception as e:  # msgpack raises several types for bad bytes
    raise ValueError(f"checkpoint {path} is truncated or corrupt "
                     f"({type(e).__name__}: {e})") from None
  return params, meta


def check_shapes(params, expected, path: str) -> None:
  """Raises ValueError naming the first parameter whose shape differs."""
  shapes = lambda tree: {jax.tree_util.keystr(k): tuple(np.shape(v))
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  got, want = shapes(params), shapes(expected)
  for name in sorted(set(got) | set(want)):
    if got.get(name) != want.get(name):
      raise ValueError(f"checkpoint {path}: parameter {name} has shape "
                       f"{got.get(name, 'missing')}, config expects {want.get(name, 'none')}")


def load_for_model(model, path: str, num_classes: int, image_shape):
  """Loads params for `model` on images (H, W, C), checking classes and shapes first."""
  params, meta = load(path)
  if meta.get("num_classes", num_classes) != num_classes:
    raise ValueError(f"checkpoint {path} has {meta['num_classes']} classes, the dataset "
                     f"has {num_classes}")
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, *image_shape), np.float32))["params"]
  check_shapes(params, expected, path)
  return params, meta
