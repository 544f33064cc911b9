"""Trains the embedded Fashion-MNIST edge/server pair (SAGE itself is training-free):
AdamW, warmup + cosine, label smoothing; `patch_drop_keep` trains the server on random
patch subsets through the sweep's subset forward (docs/models.md).
"""
import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sage_jax.data import input_pipeline
from sage_jax import files
from sage_jax.models import checkpoints
from sage_jax.models import vit
from sage_jax import timing


def _augment(key, images, pad: int):
  """Random crop after edge padding by `pad` pixels + horizontal flip; pad=0: none."""
  if pad == 0:
    return images
  b, h, w, _ = images.shape
  k1, k2 = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  offs = jax.random.randint(k1, (b, 2), 0, 2 * pad + 1)
  crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))
  images = crop(padded, offs)
  flip = jax.random.bernoulli(k2, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def make_train_step(model, tx, keep: int, num_patches: int, smoothing: float, pad: int):
  @jax.jit
  def step(params, opt_state, images, labels, key):
    k_aug, k_keep = jax.random.split(key)
    images = _augment(k_aug, images, pad)
    keep_idx = None
    if keep < num_patches:
      scores = jax.random.uniform(k_keep, (images.shape[0], num_patches))
      keep_idx = jnp.argsort(scores, axis=1)[:, :keep]

    def loss_fn(p):
      logits, _ = model.apply({"params": p}, images, keep_idx)
      targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
      return optax.softmax_cross_entropy(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def accuracy(model, params, images, labels, cfg, batch_size=1000):
  """Accuracy with all patches."""
  fwd = jax.jit(lambda p, x: model.apply({"params": p}, x)[0].argmax(-1))
  correct = 0
  for i in range(0, len(images), batch_size):
    x = input_pipeline.normalize(images[i:i + batch_size], cfg)
    correct += int((np.asarray(fwd(params, x)) == labels[i:i + batch_size]).sum())
  return correct / len(images)


def _check(t, workdir: str) -> None:
  if t.max_steps == 0 or t.max_steps < -1:
    raise ValueError(f"train.max_steps {t.max_steps} is not allowed; give a positive number of "
                     "steps or -1 (no limit)")
  if t.eval_images == 0 or t.eval_images < -1:
    raise ValueError(f"train.eval_images {t.eval_images} is not allowed; give a positive number "
                     "of test images or -1 (all)")
  if t.epochs <= 0:
    raise ValueError(f"train.epochs {t.epochs} is not allowed; it must be >= 1")
  if os.path.basename(t.output) != t.output or not t.output.endswith(".msgpack"):
    raise ValueError(f"train.output {t.output!r} is not allowed; give a file name ending in "
                     ".msgpack (it is written into --workdir)")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"workdir {workdir} is not writable ({e.strerror})") from None


def _check_splits(t, ds_cfg) -> None:
  """The validation images must be held out of training and must not be test images: the
  epoch kept (and every choice made from the log) is read on them alone."""
  train_name, t0, t1 = input_pipeline.split_range(ds_cfg, t.train_split, "train.train_split")
  val_name, v0, v1 = input_pipeline.split_range(ds_cfg, t.val_split, "train.val_split")
  if val_name == "test":
    raise ValueError(f"train.val_split {t.val_split!r} is not allowed: it reads the test split; "
                     "give a slice of the training images held out of train.train_split, "
                     "e.g. train[50000:]")
  if val_name == train_name and max(t0, v0) < min(t1, v1):
    raise ValueError(f"train.val_split {t.val_split!r} is not allowed: it overlaps "
                     f"train.train_split {t.train_split!r} (images {max(t0, v0)}-"
                     f"{min(t1, v1) - 1} of {train_name}); give disjoint slices, e.g. "
                     "train[:50000] and train[50000:]")


def _optimizer(t, total: int):
  """AdamW on the full run's warmup-cosine schedule (max_steps cuts a prefix), clipped."""
  sched = optax.warmup_cosine_decay_schedule(0.0, t.lr, t.warmup_steps, total, t.lr * 1e-2)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(sched, weight_decay=t.weight_decay))


def _epoch(steps, keeps, params, opt_state, x_train, y_train, ds_cfg, batch_size, rng, keys):
  """One step per key over a fresh permutation, keep buckets drawn from rng -> (params,
  opt_state, losses)."""
  perm = rng.permutation(len(x_train))
  losses = []
  for s, step_key in enumerate(keys):
    idx = perm[s * batch_size:(s + 1) * batch_size]
    k = keeps[rng.integers(len(keeps))]
    x = input_pipeline.normalize(x_train[idx], ds_cfg)
    params, opt_state, loss = steps[k](params, opt_state, x, y_train[idx], step_key)
    losses.append(loss)
  return params, opt_state, losses


def _init_from(params, path: str):
  """A trained checkpoint of the same variant to fine-tune from; position embeddings resized
  bilinearly to this patch grid (as ViT and DeiT at a new resolution)."""
  src, _ = checkpoints.load(path)
  pos, want = np.asarray(src["pos_embed"]), params["pos_embed"].shape
  if pos.shape != want:
    g0, g1 = int(np.sqrt(pos.shape[1] - 1)), int(np.sqrt(want[1] - 1))
    grid = jax.image.resize(pos[0, 1:].reshape(g0, g0, -1), (g1, g1, pos.shape[-1]), "bilinear")
    src["pos_embed"] = np.concatenate([pos[:, :1], np.asarray(grid).reshape(1, g1 * g1, -1)], 1)
  checkpoints.check_shapes(src, params, path)
  return jax.tree.map(jnp.asarray, src)


def train_and_save(config, workdir: str) -> dict:
  """Trains `config.train` on train_split -> WORKDIR/<train.output> and its .json. Each
  epoch's validation accuracy is logged (the file rewritten every epoch); the epoch with the
  best one is kept, and only it is scored on the test split, once. Shipped checkpoints change
  only when copied over."""
  t = config.train
  _check(t, workdir)
  ds_cfg = config.dataset
  _check_splits(t, ds_cfg)
  ckpt_path = os.path.join(workdir, t.output)
  log_path = os.path.splitext(ckpt_path)[0] + ".json"
  x_train, y_train = input_pipeline.load_arrays(ds_cfg, t.train_split)
  x_val, y_val = input_pipeline.load_arrays(ds_cfg, t.val_split)
  if t.eval_images > 0:  # the first N validation and test images (a quick check)
    x_val, y_val = x_val[:t.eval_images], y_val[:t.eval_images]
  model = vit.Model(ds_cfg.num_classes, t.variant, ds_cfg.image_size)
  n = model.num_patches
  rng = np.random.default_rng(t.seed)
  # Not jitted: jit gives other initial values (fused ops), and the shipped models
  # were trained from these.
  side = ds_cfg.image_size
  params = model.init(jax.random.PRNGKey(t.seed),
                      jnp.zeros((1, side, side, ds_cfg.channels)))["params"]
  if t.get("init_from"):
    params = _init_from(params, t.init_from)
  steps_per_epoch = len(x_train) // t.batch_size
  total = steps_per_epoch * t.epochs
  tx = _optimizer(t, total)
  opt_state = tx.init(params)
  keeps = tuple(t.patch_drop_keep) if t.patch_drop_keep else (n,)
  steps = {k: make_train_step(model, tx, min(k, n), n, t.label_smoothing, t.crop_pad)
           for k in keeps}
  n_params = sum(x.size for x in jax.tree.leaves(params))
  limit = total if t.max_steps == -1 else min(t.max_steps, total)
  logging.info("training %s (%d params) on %s (%d images) for %d epochs (%d of %d steps), "
               "keep buckets %s; validation %s (%d images)", t.variant, n_params, t.train_split,
               len(x_train), t.epochs, limit, total, keeps, t.val_split, len(x_val))
  key = jax.random.PRNGKey(t.seed + 1)
  history = []
  meta = dict(variant=t.variant, num_classes=ds_cfg.num_classes, image_size=ds_cfg.image_size,
              dataset=ds_cfg.name, num_params=int(n_params), train=t.to_dict())
  done, kept = 0, None
  for epoch in range(t.epochs):
    if done == limit:
      break
    elapsed = timing.stopwatch()
    keys = [jax.random.fold_in(key, epoch * steps_per_epoch + s)
            for s in range(min(steps_per_epoch, limit - done))]
    params, opt_state, losses = _epoch(steps, keeps, params, opt_state, x_train, y_train,
                                       ds_cfg, t.batch_size, rng, keys)
    done += len(losses)
    acc = accuracy(model, params, x_val, y_val, ds_cfg)
    history.append(dict(epoch=epoch + 1, steps=done, loss=float(np.mean(jax.device_get(losses))),
                        val_acc=acc, seconds=elapsed()))
    logging.info("epoch %d (%d steps): loss %.4f val_acc %.4f (%.0f s)", *history[-1].values())
    if kept is None or acc > kept[0]["val_acc"]:  # ties keep the earlier, shorter-trained epoch
      kept = history[-1], jax.device_get(params)
    log = dict(meta, checkpoint=os.path.basename(ckpt_path), steps=done, total_steps=total,
               val_images=len(x_val), kept_epoch=kept[0]["epoch"], val_acc=kept[0]["val_acc"],
               history=history)
    files.write(log_path, (json.dumps(log, indent=1) + "\n").encode())
  # The test split, read once: the kept epoch's accuracy on it. A recipe candidate
  # (test_split "") never reads it: candidates are compared on validation alone.
  best, params = kept
  test_acc, n_test = None, 0
  if t.get("test_split", "test"):
    x_test, y_test = input_pipeline.load_arrays(ds_cfg, t.test_split)
    if t.eval_images > 0:
      x_test, y_test = x_test[:t.eval_images], y_test[:t.eval_images]
    test_acc, n_test = accuracy(model, params, x_test, y_test, ds_cfg), len(x_test)
  meta.update(kept_epoch=best["epoch"], steps=best["steps"], val_acc=best["val_acc"],
              val_images=len(x_val), test_acc=test_acc, test_images=n_test, history=history)
  log = dict(meta, checkpoint=os.path.basename(ckpt_path), total_steps=total)
  files.write(log_path, (json.dumps(log, indent=1) + "\n").encode())
  checkpoints.save(ckpt_path, params, meta)
  logging.info("saved %s (epoch %d of %d kept: val acc %.4f, test acc %s) and %s", ckpt_path,
               best["epoch"], len(history), best["val_acc"],
               "not read" if test_acc is None else f"{test_acc:.4f}", log_path)
  return meta
