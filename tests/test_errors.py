"""Every bad input ends with one clear line naming the value, and exit code 2."""
import os
import subprocess
import sys

import pytest

# Every test here runs `python -m sage_jax.main` in a process of its own (5-10 s each).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--config=configs/fmnist_sweep.py", "--config.num_images=50", "--config.budgets=4",
        "--config.rules=topk"]


def _main(args, workdir):
  proc = subprocess.run([sys.executable, "-m", "sage_jax.main", f"--workdir={workdir}", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def _corrupt(tmp_path, name, data: bytes):
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


CASES = {
    "unknown_rule": (["--config.rules=topk,magic"], "unknown selection rule 'magic'"),
    "budget_zero": (["--config.budgets=0"], "budget 0 is out of range; allowed: 1..49"),
    "budget_too_big": (["--config.budgets=50"], "budget 50 is out of range; allowed: 1..49"),
    "pool_ratio": (["--config.rules=sage", "--config.rule_params.sage.pool_ratio=0"],
                   "rule 'sage' (pool_ratio=0.0): pool_ratio 0.0 is not allowed; it must be > 0"),
    "budget_not_whole": (["--config.budgets=4.5"],
                         "budgets '4.5': 4.5 is not a whole number of patches"),
    "coverage_grid": (["--config.coverage_grid=0"],
                      "coverage_grid 0 is not allowed; allowed: 1..7 (the patch grid's side)"),
    "n_boot": (["--config.report.n_boot=0"], "report.n_boot 0 is not allowed; it must be >= 1"),
    "progressive_max_budget": (["--config.report.progressive.max_budget=-3"],
                               "report.progressive.max_budget -3 is not allowed; give 0 (N/2) or "
                               "a budget >= 1"),
    # Config values are checked before any model is loaded: the bad value is named, not
    # the missing checkpoint.
    "bad_value_before_missing_ckpt": (["--config.edge.checkpoint=/nonexistent/edge.msgpack",
                                       "--config.coverage_grid=0"],
                                      "coverage_grid 0 is not allowed"),
    "negative_eta": (["--config.gate.eta=-1"], "gate.eta -1.0 is not allowed; it must be >= 0"),
    "unknown_uncertainty": (["--config.gate.uncertainty=maxprob"], "unknown offload uncertainty 'maxprob'"),
    "num_images": (["--config.num_images=0"], "num_images 0 is not allowed"),
    "not_divisible": (["--config.dataset.image_size=30"],
                      "image size 30 is not divisible by patch size 4 of the edge's variant"),
    "wrong_classes": (["--config.dataset.num_classes=7"], "has 10 classes, the dataset has 7"),
    "shape_mismatch": (["--config.server.variant=fm-edge"],
                       "parameter ['blocks_0']['attn']['proj']['bias'] has shape (128,), config expects (48,)"),
    "missing_ckpt": (["--config.edge.checkpoint=/nonexistent/edge.msgpack"],
                     "checkpoint not found: /nonexistent/edge.msgpack"),
    "dataset_missing": (["--config.dataset.name=imagenet2012", "--config.dataset.data_dir=/nonexistent"],
                        "'imagenet2012' is not prepared under data_dir='/nonexistent'"),
    "repeated_budget": (["--config.budgets=4,4"], "budgets '4,4' repeats [4]"),
    "unknown_channel": (["--config.report.channel=carrier_pigeon"],
                        "report.channel 'carrier_pigeon' is not allowed; allowed: lora_sf7"),
    "empty_split": (["--config.dataset.split=test[:0]"], "split 'test[:0]' of dataset 'fashion_mnist' is empty"),
    # An inverted slice (TFDS counts it as -1000 images) and a split smaller than num_images
    # (50 in BASE) are refused from the split's metadata, before the checkpoint is even
    # looked at: the missing one is not what the line names.
    "inverted_split": (["--config.dataset.split=test[5000:4000]",
                        "--config.edge.checkpoint=/nonexistent/edge.msgpack"],
                       "split 'test[5000:4000]' of dataset 'fashion_mnist' is empty: it holds 0 "
                       "images (a slice needs start < stop, e.g. test[4000:5000]); its splits: "
                       "train (60000 images), test (10000 images)"),
    "split_smaller_than_num_images": (["--config.dataset.split=test[9980:]",
                                       "--config.edge.checkpoint=/nonexistent/edge.msgpack"],
                                      "num_images 50 is not allowed: split 'test[9980:]' of "
                                      "dataset 'fashion_mnist' holds 20 images; give at most "
                                      "20, or -1 (all)"),
    "slice_past_the_end": (["--config.dataset.split=test[20000:]"],
                           "dataset.split 'test[20000:]' is not allowed for dataset "
                           "'fashion_mnist' (Requested slice [20000:10000] incompatible with "
                           "10000 examples.); its splits: train (60000 images), test (10000 "
                           "images)"),
    "nan_inputs": (["--config.dataset.std=(0.0,)"],
                   "NaN/Inf in the input or the edge output for image index 0"),
}
# Cases whose flags replace BASE.
ALONE = {
    "unknown_field": (["--config=configs/fmnist_sweep.py", "--config.budgetz=4"],
                      "unknown config field 'budgetz' (Did you mean \"budgets\""),
    "unknown_rule_param": (["--config=configs/fmnist_sweep.py",
                            "--config.rule_params.sage.pool=3"], "unknown config field 'pool'"),
    "wrong_type": (["--config=configs/fmnist_sweep.py", "--config.num_images=many"],
                   "flag --config.num_images=many: invalid literal for int()"),
    "missing_config": (["--config=configs/nope.py"],
                       "could not load the config: [Errno 2] No such file or directory: "
                       "'configs/nope.py'"),
    "conflicting_flags": (["--config=configs/fmnist_train.py:edge", "--new_subdir"],
                          "conflicting flags: --new_subdir applies to sweeps"),
}


@pytest.mark.parametrize("case", sorted(CASES) + sorted(ALONE))
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path):
  args, expected = CASES[case] if case in CASES else ALONE[case]
  code, last = _main((BASE if case in CASES else []) + args, tmp_path / "w")
  assert code == 2, last
  assert last.startswith("error: ") and expected in last, last


@pytest.mark.parametrize("what,data", [("truncated", None), ("corrupt", b"\x00garbage" * 10)])
def test_bad_checkpoint_files(what, data, tmp_path):
  src = os.path.join(ROOT, "checkpoints/fmnist_edge.msgpack")
  blob = open(src, "rb").read()
  path = _corrupt(tmp_path, f"{what}.msgpack", blob[: len(blob) // 2] if data is None else data)
  code, last = _main(BASE + [f"--config.edge.checkpoint={path}"], tmp_path / "w")
  assert code == 2 and f"checkpoint {path} is truncated or corrupt" in last, last


def test_nan_in_model_output(tmp_path):
  import numpy as np
  from sage_jax.models import checkpoints
  params, meta = checkpoints.load(os.path.join(ROOT, "checkpoints/fmnist_server.msgpack"))
  params["head"]["bias"] = np.full_like(params["head"]["bias"], np.nan)
  path = str(tmp_path / "nan_server.msgpack")
  checkpoints.save(path, params, meta)
  code, last = _main(BASE + [f"--config.server.checkpoint={path}"], tmp_path / "w")
  assert code == 2 and "NaN/Inf in the server output (all patches) for image index" in last, last


def test_workdir_not_writable(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")  # a file where the workdir's parent should be
  code, last = _main(BASE, blocker / "w")
  assert code == 2 and "is not writable" in last, last


def test_verbose_shows_traceback(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "sage_jax.main", f"--workdir={tmp_path}", *BASE,
                         "--config.rules=magic", "--verbose"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "Traceback" in proc.stderr
