"""The ImageNet rehearsal (sage_jax/measure/rehearsal.py, a measure of configs/rehearsal.py) on a tiny
synthetic split: 24 images in 2 TFRecord shards, DeiT-Ti/16 as both models, one budget."""
import json
import os
import re
import subprocess

import numpy as np
import pytest

from sage_jax import defaults
from sage_jax import files
from sage_jax.measure import rehearsal
from sage_jax.measure import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(cache, **overrides):
  c = defaults.rehearsal_config()
  c.server.variant = "Ti/16"
  c.update(dict(budgets="16", rules="topk,sage", num_images=24, batch_size=8,
                server_batch_size=8))
  c.rehearsal.update(dict(cache_dir=cache, synthetic_images=24, synthetic_shards=2, repeats=1))
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("rehearsal")
  cache, work = str(root / "cache"), str(root / "work")
  import io
  from contextlib import redirect_stdout
  out = io.StringIO()
  with redirect_stdout(out):
    (result,) = run.run_measures(tiny_config(cache), work)["rehearsal"]
  return dict(result=result, cache=cache, work=work, stdout=out.getvalue())


@pytest.mark.slow
def test_last_line_holds_the_three_numbers(tiny):
  last = tiny["stdout"].strip().splitlines()[-1]
  m = re.fullmatch(r"rehearsal: images_per_second=([\d.]+) bytes_read_ratio=([\d.]+) "
                   r"pipeline_efficiency=([\d.]+)", last)
  assert m, last
  r = tiny["result"]
  # images_per_second from the sweep's own timing.json, by hand: images over its wall time.
  timing = json.loads(files.read_bytes(os.path.join(tiny["work"], "timing.json")))
  assert timing["images"] == 24 and timing["wall_s"] > 0
  # The line rounds to 2 and 3 decimals: half a unit of the last one apart at most.
  assert float(m[1]) == pytest.approx(24 / timing["wall_s"], abs=0.0051)
  assert float(m[1]) == pytest.approx(r["images_per_second"], abs=0.0051)
  assert float(m[2]) == pytest.approx(r["bytes_read_ratio"], abs=0.00051)
  assert float(m[3]) == pytest.approx(r["pipeline_efficiency"], abs=0.00051)


@pytest.mark.slow
def test_rehearsal_json(tiny):
  (saved,) = json.loads(files.read_bytes(os.path.join(tiny["work"], "rehearsal.json")))["rows"]
  r = tiny["result"]
  assert saved["images"] == 24 and saved["timing"]["images"] == 24
  assert saved["synthetic"]["shards"] == 2 and saved["synthetic"]["built"]
  b = saved["bytes"]
  assert b["shards"] == 2 and b["split_images"] == 24
  assert b["stored_bytes_evaluated"] == pytest.approx(b["stored_split_bytes"])
  # The main thread's own reads were subtracted (tf.data read the shards on its threads).
  assert "note" not in b and b["read_by_main_thread"] < 0.25 * b["stored_bytes_evaluated"], b
  assert b["dataset_bytes_read"] == b["read_by_process"] - b["read_by_main_thread"]
  # The fraction gate reads the split once for its threshold and once to sweep it.
  assert 1.5 < r["bytes_read_ratio"] < 2.6, b
  f = saved["forwards"]
  # The edge ran over the 3 batches twice: the fraction gate's pass, then the sweep's.
  assert saved["timing"]["edge_batches"] == saved["timing"]["gate_batches"] == 3
  assert f["edge"]["calls"] == 6 and f["edge"]["rows"] == 8
  assert saved["timing"] == r["timing"]  # what sweep.run returned is what it wrote
  assert saved["timing"] == json.loads(files.read_bytes(os.path.join(tiny["work"],
                                                                     "timing.json")))
  assert f["ceiling"]["calls"] >= 1 and f["ceiling"]["seconds_per_call"] > 0
  assert f["total_s"] == pytest.approx(sum(v["seconds"] for k, v in f.items() if k != "total_s"))
  seg = saved["timing"]["segments_s"]
  assert saved["steady_s"] == pytest.approx(saved["timing"]["wall_s"] - seg["setup"]
                                            - seg["compile"])
  assert r["pipeline_efficiency"] == pytest.approx(f["total_s"] / saved["steady_s"])
  assert 0 < r["pipeline_efficiency"] < 2
  for name in ("results.csv", "report.md"):  # the sweep's own files, as usual
    assert files.exists(os.path.join(tiny["work"], name))


@pytest.mark.slow
def test_build_and_weights_are_cached(tiny):
  data_dir, stats = rehearsal.synthetic_imagenet(tiny["cache"], 24, 0, 2)
  assert not stats["built"] and stats["shards"] == 2
  assert tiny["result"]["sweep"]["data_dir"] == data_dir
  ckpt = tiny["result"]["sweep"]["edge"]["checkpoint"]
  mtime = os.path.getmtime(ckpt)
  assert rehearsal.random_checkpoint(tiny["cache"], "Ti/16", 0) == ckpt
  assert os.path.getmtime(ckpt) == mtime
  assert data_dir.startswith(tiny["cache"])  # never ~/tensorflow_datasets


@pytest.mark.slow
def test_workdir_with_progress_is_refused(tiny):
  with pytest.raises(ValueError, match="already holds an earlier run"):
    run.run_measures(tiny_config(tiny["cache"]), tiny["work"])


def test_synthetic_images_are_seeded_and_imagenet_like():
  from PIL import Image
  import io
  a = [rehearsal.synthetic_jpeg(i, 0) for i in range(12)]
  assert a == [rehearsal.synthetic_jpeg(i, 0) for i in range(12)]
  assert rehearsal.synthetic_jpeg(0, 1) != a[0]
  sizes = [Image.open(io.BytesIO(j)).size for j in a]
  assert all(max(s) == 500 and 200 <= min(s) <= 500 for s in sizes), sizes
  assert 60e3 < np.mean([len(j) for j in a]) < 170e3


def test_launch_script_help():
  out = subprocess.run(["bash", os.path.join(ROOT, "launch/rehearsal.sh"), "--help"],
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0 and "Usage: bash launch/rehearsal.sh WORKDIR" in out.stdout


def test_reads_combine_over_processes():
  parts = [dict(dataset_bytes_read=150.0, stored_bytes_evaluated=100.0),
           dict(dataset_bytes_read=60.0, stored_bytes_evaluated=50.0)]
  out = rehearsal.combine_reads(parts)
  assert out["bytes_read_ratio"] == pytest.approx(210 / 150) and out["processes"] == parts
  parts[1]["dataset_bytes_read"] = None  # a process without /proc/self/io: no ratio at all
  assert rehearsal.combine_reads(parts)["bytes_read_ratio"] is None
  one = dict(dataset_bytes_read=5.0, stored_bytes_evaluated=4.0, bytes_read_ratio=1.25)
  assert rehearsal.all_processes(one) is one  # a single process reports its own
