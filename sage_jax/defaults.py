"""Every knob of a budget sweep, with its default; the config files start from these.

Config files under `configs/` import this module (as big_vision's configs import their
common module), so they load from any directory. `sweep_config()` is the embedded default:
the full SAGE budget sweep on Fashion-MNIST with the shipped models.
"""
import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from sage_jax import rules


PAPER_RULES = ("random", "grid", "topk", "threshold", "sum_threshold", "diversity", "sage", "bat",
               "tome", "swap@0.25", "swap@0.5")
# DivPrune, VisPruner, CDPruner, DART at their defaults (docs/field_rules.md); every sweep
# compares them with SAGE ("SAGE against the field" in report.md).
FIELD_RULES = ("divprune", "vispruner", "cdpruner", "dart")


def load_config(path: str):
  """The config module at `path` (a config built on another, e.g. configs/scenes_beyond.py on
  configs/fmnist_beyond.py), loaded by path since configs/ is not a package."""
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
  """Fashion-MNIST items in cluttered 56x56 scenes (sage_jax/data/scenes.py): 196 patches of 4px."""
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
      for name, rule in rules.RULES.items()})


def sweep_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "sweep"
  c.dataset = fmnist_dataset()

  # Checkpoints in sage_jax's format (see README for how they were trained).
  c.edge = ml_collections.ConfigDict(dict(variant="fm-edge",
                                          checkpoint="checkpoints/fmnist_edge.msgpack"))
  c.server = ml_collections.ConfigDict(dict(variant="fm-server",
                                            checkpoint="checkpoints/fmnist_server.msgpack"))

  # Default importance score: cls_attention | rollout | rollout_im | cls_all | cls_specific |
  # norm_filtered (importance.IMPORTANCES; docs/beyond.md).
  c.importance = "cls_attention"
  c.gate = ml_collections.ConfigDict(dict(
      uncertainty="min_entropy",  # min_entropy | entropy | margin | fraction
      eta=0.64,               # bits; chosen on held-out images (configs/gate_eta.py: 34%)
      fraction=1 / 3,         # for uncertainty=fraction: offload this share, least confident first
  ))

  # Rules to run, "name[@value][:importance]": sage@4 sets SAGE's pool ratio to 4 (each
  # rule's @value parameter: rules.RULES), topk:rollout ranks by rollout instead. The paper's
  # rules and baselines, then the field's of 2025 (FIELD_RULES).
  c.rules = ",".join(PAPER_RULES + FIELD_RULES)
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

  # The uplink as it is: each sent unit lost with probability p (fates fixed per image and
  # patch: paired across rules, nested across rates), pixels of the sent patches on 2**b
  # levels (the server is not retrained). Every (rate, bits) pair is swept; results carry
  # erasure and pixel_bits columns. "0" and "8": a perfect 8-bit channel.
  c.uplink = ml_collections.ConfigDict(dict(erasure="0", pixel_bits="8"))

  c.compute_dtype = "float32"  # or "bfloat16": activations of both models (params stay float32)
  c.num_images = -1           # > 0: only the first num_images test images
  c.batch_size = 500          # edge batch
  c.server_batch_size = 256   # offloaded images per server step
  c.chunk_size = 2000         # images per saved progress chunk (a killed run redoes at most one)

  c.report = report_config()
  return c


def report_config() -> ml_collections.ConfigDict:
  """report.md's knobs: intervals, channels, the selection map, the comparisons, the studies."""
  return ml_collections.ConfigDict(dict(
      n_boot=1000,        # bootstrap resamples for the 95% intervals and the paired test
      channel="nb_iot",   # uplink for the latency plot (see sage_jax/report/link_cost.py CHANNELS)
      rates="",           # "name=bits_per_s,...": own channel table instead of CHANNELS
      map_budget=8,       # budget shown in the selection map (the nearest one swept)
      map_examples=6,     # offloaded images (rows) in the selection map
      moderate=(12, 24),  # budgets counted as "moderate" in the paper-claims check
      # Rules every rule is also compared with, paired on the same images: columns
      # diff_vs_<rule> (+ _lo/_hi, bootstrap 95%) and p_vs_<rule> (McNemar); topk's always.
      # (report.md's "SAGE against the field" compares with sage whatever this says.)
      compare_to="topk",
      # report.md's "Beyond the paper" section (configs/fmnist_beyond.py): the rule frozen on
      # the development half, which half this run is, and the ideas tried, each
      # (title, "rule,rule,...", why it helped, why it did not), and the goal's label. No
      # frozen rule: no section.
      beyond=ml_collections.ConfigDict(dict(frozen="", half="", ideas=(), goal="Goal")),
      # Progressive offloading, from the records: climb the sweep's budgets up to max_budget
      # (0: N/2), stopping once the server's confidence (max softmax probability) reaches a
      # threshold; every threshold is evaluated. rtt_ms is an assumed round trip per request
      # (not a measurement). Goal: the best rule's progressive accuracy reaches the best
      # fixed accuracy at goal_budget (0: no goal) with <= goal_share of its mean units.
      # signal_rules: rules whose server log-probabilities the records keep (float16, at the
      # schedule's budgets; auto: topk, sage, diversity, sage_nested where run; all; ""), for
      # the stop signals beyond the confidence (report/stopping.py). stopping: "" shows the
      # fronts of those that need no calibration; configs/*_progressive.py fit and choose on
      # the development half (mode fit) and freeze the choices for the reporting half.
      progressive=ml_collections.ConfigDict(dict(
          max_budget=0,
          thresholds=",".join(f"{t / 20:g}" for t in range(21)) + ",0.98,0.99,0.999",
          rtt_ms=500.0, goal_budget=24, goal_share=0.6, signal_rules="auto",
          stopping=ml_collections.ConfigDict(dict(
              mode="", half="", patience="1,2,3", deltas="0.02,0.05", epsilon=0.1,
              temperatures=(), frozen=())))),
  ))




def scenes_sweep() -> ml_collections.ConfigDict:
  """The paper's regime on this machine: 196 patches of Fashion-MNIST scenes (an item in
  clutter), the scenes' shipped edge and server; every rule of the default sweep."""
  c = sweep_config()
  c.dataset = scenes_dataset()
  c.edge.checkpoint = "checkpoints/scenes_edge.msgpack"
  c.server.checkpoint = "checkpoints/scenes_server.msgpack"
  c.gate.eta = 1.48                 # bits; chosen on held-out scenes (configs/gate_eta.py: 34%)
  c.budgets = "8,16,24,32,48,64,96,196"
  c.coverage_grid = 7                # 2x2 patches a cell, as the paper's 7x7 grid at 224/16
  c.report.map_budget = 24
  c.report.moderate = (48, 96)       # as on ImageNet: N/4..N/2
  c.report.compare_to = "topk,random"  # top-K vs random and grid vs random, paired
  c.report.progressive.goal_budget = 48  # as K = 24 of 49 on Fashion-MNIST: about N/4
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
  # Converted with `python -m sage_jax.models.convert` (timm / HF / .npz weights).
  c.edge = ml_collections.ConfigDict(dict(variant="Ti/16",
                                          checkpoint="checkpoints/deit_tiny.msgpack"))
  c.server = ml_collections.ConfigDict(dict(variant="B/16",
                                            checkpoint="checkpoints/deit_base.msgpack"))
  c.gate.eta = 1.0                   # bits; the paper's gate (about 35.7% of images offloaded)
  c.budgets = "16,32,48,64,96,196"
  c.coverage_grid = 7                # the paper's 7x7 coarse grid (2x2 patches a cell)
  c.report.map_budget = 48
  c.report.moderate = (48, 96)
  c.report.progressive.goal_budget = 48
  # 1,000 classes: the log-probabilities of three rules at five budgets would add ~0.5 GB.
  c.report.progressive.signal_rules = ""
  c.batch_size = 256                 # edge batch (DeiT-Ti); sized for one GPU/TPU chip
  c.server_batch_size = 64           # offloaded images per server step (x rules per B/16 call)
  return c


def benchmark_config(shapes: str = "fmnist,deit") -> ml_collections.ConfigDict:
  """The benchmark against PyTorch and the sweep at scale (sage_jax/measure/benchmark.py,
  docs/benchmark.md); random weights at each shape of `shapes` (fmnist, deit)."""
  return ml_collections.ConfigDict(dict(
      mode="measure",
      measures="benchmark",      # benchmark | scale (the sweep at scale alone)
      shapes=shapes,
      batch=64,                  # images per edge / server / selection call
      repeats=3,                 # timed calls per measurement (the best is reported)
      warmup=1,                  # untimed calls before timing
      min_seconds=0.25,          # cheap calls are timed again until this much time passed
      budgets="",                # "": per shape, fmnist 4..49, deit 16,32,48,64,96
      rules="topk,sage,diversity,threshold,sum_threshold",  # those with a torch reference
      offload_share=1 / 3,       # share of the batch offloaded in the full sweep
      matmul_size=0,             # n of the peak's n x n matmul (0: 8192 bf16 on an
                                 # accelerator, 2048 float32 on a CPU)
      torch_threads=2,
      torch_device="auto",       # auto (CUDA when jax runs on a GPU) | cpu | cuda
      compute_dtype="float32",   # bfloat16 for accelerators; torch autocasts likewise
      scale=dict(
          images=-1,             # synthetic images (-1: 4096 on an accelerator, 16 on a
                                 # CPU; 0: no sweep at scale)
          shape="deit",
          rules="",              # "": every rule of the shape's config
          budgets="",            # "": the config's (16..196 at deit)
          share=0.357,           # offloaded share (the paper's 35.7%)
          server_batch=0),       # 0: the config's (64 at deit)
  ))


def rehearsal_config() -> ml_collections.ConfigDict:
  """The ImageNet-shape rehearsal (sage_jax/measure/rehearsal.py, docs/imagenet.md): the paper
  config, CPU-sized. An empty data_dir means the synthetic split, an empty checkpoint
  random weights (both made under rehearsal.cache_dir)."""
  c = imagenet_deit()
  c.mode = "measure"
  c.measures = "rehearsal"
  c.dataset.data_dir = ""
  c.edge.checkpoint = c.server.checkpoint = ""
  c.budgets = "16,64"
  c.rules = "topk,sage,threshold"
  c.num_images = 1000
  c.gate.uncertainty = "fraction"  # random weights: offload the paper's share, not everything
  c.gate.fraction = 0.357
  c.report.map_budget = 16
  c.report.moderate = (16, 64)
  c.rehearsal = ml_collections.ConfigDict(dict(
      cache_dir="~/.cache/sage_jax/rehearsal",  # the synthetic split and random weights
      synthetic_images=5000,  # images in the synthetic validation split
      synthetic_shards=0,     # TFRecord shards (0: TFDS chooses by size, as for the real one)
      seed=0,                 # of the synthetic images and the random weights
      repeats=2,              # timed calls per forward shape (the best counts)
      overwrite=False,        # delete an earlier run's progress in the workdir first
  ))
  return c


def roofline_config() -> ml_collections.ConfigDict:
  """The ImageNet sweep projected onto accelerators by a roofline, the method checked on
  this CPU (sage_jax/measure/roofline.py, docs/imagenet.md)."""
  return ml_collections.ConfigDict(dict(
      mode="measure",
      measures="roofline",
      shape="deit",              # models of the projection: deit (the paper's) or fmnist
      edge_batch=0,              # edge images per step per chip (0: the config's, 256)
      server_batch=0,            # offloaded images per server step per chip (0: 64)
      sweep_rules="",            # "": every rule of the config
      sweep_budgets="",          # "": the config's, 16..196 at deit
      dtypes="float32,bfloat16",  # costs listed per dtype; the projection uses the last
      images=0,                  # images of the sweep (0: the split's, 50,000 at deit)
      share=0.357,               # share of the images offloaded (the paper's 35.7%)
      # Share of the (rule, budget, image) rows the server runs (timing.json's
      # server_rows_run / server_rows_all): the Fashion-MNIST main job's 214,107 of 300,960.
      dedup=214107 / 300960,
      full_trips=1.0,            # server chunks per server batch at K = N
      accelerators="",           # "": all of roofline.PEAKS
      check_shapes="fmnist,deit",  # shapes of the CPU check ("" for none)
      check_batch=0,             # rows of the CPU check (0: fmnist 64, deit 8)
      check_rules="",            # "": fmnist every rule, deit topk,sage,threshold
      check_budgets="",          # "": fmnist every budget, deit 16,64
      repeats=3,                 # timed calls per measurement (the best counts)
      matmul_size=0,             # n of the CPU peak's n x n float32 matmul (0: 2048)
      bandwidth_mb=256,          # MB of float32 read (and written) by the bandwidth measure
      decode_images=32,          # synthetic JPEGs whose decoding is timed on one core
      decode_per_core=0.0,       # images/s per core when not measured (decode_images=0)
  ))
