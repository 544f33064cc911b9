"""Every knob of a budget sweep, with its default; the config files start from these.

Config files under `configs/` import this module (as big_vision's configs import their
common module), so they load from any directory. `sweep_config()` is the embedded default:
the full SAGE budget sweep on Fashion-MNIST with the shipped models.
"""
import ml_collections
from ml_collections import config_dict

from sage_jax import selection


def fmnist_dataset() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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


def scenes_dataset() -> ml_collections.ConfigDict:
  """Fashion-MNIST items in cluttered 56x56 scenes (sage_jax/scenes.py): 196 patches of 4px."""
  c = fmnist_dataset()
  c.name = "fmnist_scenes"
  c.image_size = 56
  c.mean = (0.2482,)  # training-scene pixel mean/std after /255
  c.std = (0.2519,)
  return c


def rule_params() -> ml_collections.ConfigDict:
  """rule -> parameter -> default, from the selection registry (a None default is a float
  that may be set: `--config.rule_params.threshold.delta=0.05`)."""
  return ml_collections.ConfigDict({
      name: {p: config_dict.placeholder(float) if v is None else v
             for p, v in rule.params().items()}
      for name, rule in selection.RULES.items()})


def sweep_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "sweep"
  c.dataset = fmnist_dataset()

  # Checkpoints in sage_jax's format (see README for how they were trained).
  c.edge = ml_collections.ConfigDict(dict(variant="fm-edge", checkpoint="checkpoints/fmnist_edge.msgpack"))
  c.server = ml_collections.ConfigDict(dict(variant="fm-server", checkpoint="checkpoints/fmnist_server.msgpack"))

  # Default importance score: cls_attention | rollout | rollout_im | cls_all | cls_specific |
  # norm_filtered (importance.IMPORTANCES; docs/beyond.md).
  c.importance = "cls_attention"
  c.gate = ml_collections.ConfigDict(dict(
      measure="min_entropy",  # min_entropy | entropy | margin | fraction
      eta=0.6,                # bits; offloads 34% of test images with the shipped edge
      fraction=1 / 3,         # for measure=fraction: offload this share, least confident first
  ))

  # Rules to run, "name[@value][:importance]": sage@4 sets SAGE's pool ratio to 4 (each
  # rule's @value parameter: selection.RULES), topk:rollout ranks by rollout instead.
  c.rules = "random,grid,topk,threshold,sum_threshold,diversity,sage,bat,tome,swap@0.25,swap@0.5"
  c.budgets = "4,6,8,12,16,24,32,49"  # patches per offloaded request
  c.budget_bits = ""                   # or budgets in bits per request, e.g. "1000,2000,4000"
  # Every rule's parameters (defaults from its signature): sage.pool_ratio (pool = top
  # ceil(k*K)), threshold.delta (None: 1/N), sum_threshold.delta, swap.swap_frac,
  # bat.attentive_frac and bat.iters, mmr.relevance_weight, sage_adaptive.perplexity_ratio,
  # dpp.quality_exponent and dpp.ridge.
  c.rule_params = rule_params()
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
      map_budget=8,       # budget shown in the selection map (the nearest one swept)
      map_examples=6,     # offloaded images (rows) in the selection map
      moderate=(12, 24),  # budgets counted as "moderate" in the paper-claims check
      # Rules every rule is also compared with, paired on the same images: columns
      # diff_vs_<rule> (+ _lo/_hi, bootstrap 95%) and p_vs_<rule> (McNemar); topk's always.
      compare_to="topk",
      # report.md's "Beyond the paper" section (configs/fmnist_beyond.py): the rule frozen on
      # the development half, which half this run is, and the ideas tried, each
      # (title, "rule,rule,...", why it helped, why it did not). No frozen rule: no section.
      beyond=ml_collections.ConfigDict(dict(frozen="", half="", ideas=())),
  ))
  return c


def scenes_sweep() -> ml_collections.ConfigDict:
  """The paper's regime on this machine: 196 patches of Fashion-MNIST scenes (an item in
  clutter), the scenes' shipped edge and server; every rule of the default sweep."""
  c = sweep_config()
  c.dataset = scenes_dataset()
  c.edge.checkpoint = "checkpoints/scenes_edge.msgpack"
  c.server.checkpoint = "checkpoints/scenes_server.msgpack"
  c.gate.eta = 0.6                  # bits; offloads SHARE_PLACEHOLDER of the test scenes
  c.budgets = "8,16,24,32,48,64,96,196"
  c.coverage_grid = 7                # 2x2 patches a cell, as the paper's 7x7 grid at 224/16
  c.report.map_budget = 24
  c.report.moderate = (48, 96)       # as on ImageNet: N/4..N/2
  c.report.compare_to = "topk,random"  # top-K vs random and grid vs random, paired
  c.batch_size = 250
  c.server_batch_size = 128
  c.chunk_size = 2000
  return c


def imagenet_deit() -> ml_collections.ConfigDict:
  """The paper's setting: DeiT-Ti/16 edge, DeiT-B/16 server, ImageNet-1K validation; every
  other knob as in the default sweep (every rule of it)."""
  c = sweep_config()
  c.dataset = ml_collections.ConfigDict(dict(
      name="imagenet2012",
      split="validation",
      data_dir="~/tensorflow_datasets",  # or gs://BUCKET/tensorflow_datasets
      preprocess="deit_eval",  # shorter side -> resize_size (bicubic), center crop image_size
      resize_size=256,         # DeiT's crop_pct 0.875: 224 / 0.875
      image_size=224,
      channels=3,
      num_classes=1000,
      mean=(0.485, 0.456, 0.406),  # timm's IMAGENET_DEFAULT_MEAN/STD, as DeiT
      std=(0.229, 0.224, 0.225),
  ))
  # Converted with `python -m sage_jax.convert` (timm / HF / .npz weights).
  c.edge = ml_collections.ConfigDict(dict(variant="Ti/16", checkpoint="checkpoints/deit_tiny.msgpack"))
  c.server = ml_collections.ConfigDict(dict(variant="B/16", checkpoint="checkpoints/deit_base.msgpack"))
  c.gate.eta = 1.0                   # bits; the paper's gate (about 35.7% of images offloaded)
  c.budgets = "16,32,48,64,96,196"
  c.coverage_grid = 7                # the paper's 7x7 coarse grid (2x2 patches a cell)
  c.report.map_budget = 48
  c.report.moderate = (48, 96)
  c.batch_size = 256                 # edge batch (DeiT-Ti); sized for one GPU/TPU chip
  c.server_batch_size = 64           # offloaded images per server step (x rules per B/16 call)
  return c
