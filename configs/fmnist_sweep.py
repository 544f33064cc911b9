"""The embedded default: SAGE budget sweep on Fashion-MNIST with the shipped models.

  python -m sage_jax.main --config=configs/fmnist_sweep.py --workdir=/tmp/sage
  ... --config.methods=topk,sage --config.budgets=8,16 --config.num_images=500
"""
import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.mode = "sweep"

  c.dataset = ml_collections.ConfigDict(dict(
      name="fashion_mnist",
      split="test",
      data_dir="~/tensorflow_datasets",
      manual_dir="/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
      preprocess="scale",  # x/255, then (x - mean) / std
      image_size=28,
      channels=1,
      num_classes=10,
      mean=(0.2860,),  # training-set pixel mean/std after /255
      std=(0.3530,),
  ))

  # Checkpoints in sage_jax's format (see README for how they were trained).
  c.edge = ml_collections.ConfigDict(dict(variant="fm-edge", checkpoint="checkpoints/fmnist_edge.msgpack"))
  c.server = ml_collections.ConfigDict(dict(variant="fm-server", checkpoint="checkpoints/fmnist_server.msgpack"))

  c.importance = "cls_attention"   # cls_attention | rollout
  c.gate = ml_collections.ConfigDict(dict(
      measure="min_entropy",  # min_entropy | entropy | margin | fraction
      eta=0.6,                # bits; offloads 34% of test images with the shipped edge
      fraction=1 / 3,         # for measure=fraction: offload this share, least confident first
  ))

  # Rule names; "rule@value" sets the rule's main parameter (sage@4: pool ratio 4,
  # swap@0.5: swap half of top-K, bat@0.25, threshold@0.05, ...).
  c.methods = "random,grid,topk,threshold,sum_threshold,diversity,sage,bat,tome,swap@0.25,swap@0.5"
  c.budgets = "4,6,8,12,16,24,32,49"
  c.budget_bits = ""          # e.g. "1000,2000,4000": budgets in bits per request (overrides budgets)
  c.rules = ml_collections.ConfigDict(dict(
      pool_ratio=2.0,            # sage: pool = top ceil(pool_ratio * K) patches
      threshold_delta=1 / 49,    # threshold: keep importance >= delta (uniform = 1/N)
      sum_threshold_delta=0.9,   # sum_threshold: keep while cumulative importance <= delta
      swap_frac=0.25,            # swap: share of top-K replaced by max-min picks from outside
      bat_attentive_frac=0.5,    # bat: share of K kept by attention, the rest cluster representatives
      bat_iters=10,              # bat: spherical k-means iterations
  ))
  c.coverage_grid = 4         # coverage = share of the cells of a 4x4 grid that hold a sent patch
  c.seed = 0                  # `random` rule key = fold_in(PRNGKey(seed), image index)
  c.bits_per_unit = -1        # -1: 8-bit pixels of a patch + ceil(log2 N) index bits

  c.compute_dtype = "float32"  # or "bfloat16": activations of both models (params stay float32)
  c.num_images = -1           # > 0: only the first num_images test images
  c.batch_size = 500          # edge batch
  c.server_batch_size = 256   # offloaded images per server step
  c.chunk_size = 2000         # images per saved progress chunk (a killed run redoes at most one)

  c.report = ml_collections.ConfigDict(dict(
      n_boot=1000,        # bootstrap resamples for the 95% intervals and the paired test
      channel="nb_iot",   # uplink for the latency plot (see sage_jax/channel.py CHANNELS)
      rates="",           # "name=bits_per_s,...": own channel table instead of CHANNELS
      map_budget=8,       # budget shown in the selection map
      map_examples=6,     # offloaded images (rows) in the selection map
      moderate=(12, 24),  # budgets counted as "moderate" in the paper-claims check
  ))
  return c
