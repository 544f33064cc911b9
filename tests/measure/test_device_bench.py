"""launch/device_bench.sh, the GPU measurement in one call, and the sweep at scale, run here on
the CPU at tiny sizes (no test needs a GPU).

The GPU machine has no TensorFlow: the script runs with stub `tensorflow` and
`tensorflow_datasets` packages first on PYTHONPATH, which fail on import, and its JSON must
say that no `tensorflow` module was loaded.
"""
import json
import os
import subprocess
import sys

import pytest

from sage_jax import defaults
from sage_jax.measure import harness
from sage_jax.measure import scale

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "launch", "device_bench.sh")
# After the script's GPU defaults: no benchmark shapes (test_benchmark.py runs those), the
# sweep at scale at Fashion-MNIST shapes on 6 images, 2 rules, 1 budget.
TINY = ["--config.shapes=", "--config.matmul_size=64", "--config.repeats=1",
        "--config.warmup=0", "--config.min_seconds=0", "--config.scale.shape=fmnist",
        "--config.scale.images=6", "--config.scale.budgets=4",
        "--config.scale.rules=topk,threshold"]


def _script(*args, env=None, timeout=60):
  return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=env)


def _commands(stdout):
  return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


@pytest.fixture
def no_tensorflow(tmp_path):
  """PYTHONPATH holding `tensorflow` and `tensorflow_datasets` packages that fail on import."""
  stub = tmp_path / "stub"
  for name in ("tensorflow", "tensorflow_datasets"):
    (stub / name).mkdir(parents=True)
    (stub / name / "__init__.py").write_text(
        f"raise ImportError('{name} is not installed on the GPU machine')\n")
  return str(stub)


@pytest.mark.slow
def test_device_bench_runs_here_at_tiny_sizes(tmp_path, no_tensorflow):
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=no_tensorflow)
  env.pop("OUT", None)
  proc = _script(f"--python={sys.executable}", f"--out={out}", "--", *TINY, env=env,
                 timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "no TensorFlow imported" in proc.stdout

  result = json.loads((out / "benchmark.json").read_text())
  assert result["complete"] and not result["tensorflow_imported"]
  assert result["jax_backend"] == "cpu" and result["rows"][0]["torch_device"] == "cpu"
  assert result["config"]["compute_dtype"] == "bfloat16"  # the script's GPU default
  rows = [r for r in result["rows"] if r["table"] == "benchmark"]
  scale = rows[1]["scale"]
  assert [r["name"] for r in rows] == [
      "matmul fp32 64x64", "sweep at scale 2x1, 6 img, 2 off",
      "projected 10,000-image sweep, compute only",
      f"sweep at scale, server rows run of {scale['rows_all']}",
      "sweep at scale, warm-up: compile + 6 img"]
  assert scale["offloaded"] == round(0.357 * 6) and scale["rows_all"] == 2 * 1 * 2
  assert 0 < rows[3]["jax"] <= scale["rows_all"]
  assert rows[1]["jax"] == pytest.approx(6 / scale["seconds"])
  assert rows[2]["jax"] == pytest.approx(10_000 / rows[1]["jax"])
  assert all(r["jax"] > 0 for r in rows)

  table = (out / "bench.txt").read_text()
  for r in rows:
    assert r["name"] in table
  assert "[" in (out / "log.txt").read_text()  # progress lines


@pytest.mark.slow
def test_device_bench_import_chain_loads_no_tensorflow():
  code = ("import sys\n"
          "import sage_jax.main, sage_jax.measure.benchmark, sage_jax.measure.run, sage_jax.sweep.plan\n"
          "loaded = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]\n"
          "assert not loaded, loaded\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_device_bench_dry_run_installs_wheels_then_runs_the_gpu_defaults(tmp_path):
  wheels = tmp_path / "whl"
  wheels.mkdir()
  (wheels / "ml_collections-1.1.0-py3-none-any.whl").write_bytes(b"")
  out = tmp_path / "out"
  proc = _script("--dry-run", f"--wheels={wheels}", f"--out={out}", "--",
                 "--config.scale.images=8192")
  assert proc.returncode == 0, proc.stderr
  install, bench = _commands(proc.stdout)
  assert install.startswith("python3 -m pip install -q --no-index --no-deps ")
  assert f"{wheels}/ml_collections-1.1.0-py3-none-any.whl" in install
  assert bench.startswith("python3 -m sage_jax.main --config=configs/benchmark.py:deit "
                          "--config.batch=256 ")
  assert "--config.compute_dtype=bfloat16" in bench
  assert bench.endswith("--config.scale.images=4096 --config.scale.images=8192 "
                        f"--workdir={out}")
  assert not out.exists()

  fetch = _script("--dry-run", "--fetch-wheels=.whl")
  assert fetch.returncode == 0, fetch.stderr
  (download,) = _commands(fetch.stdout)
  assert "-m pip download -q --no-deps --only-binary=:all: --python-version 3.12" in download
  assert download.endswith("-d .whl ml_collections==1.1.0")


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown argument: --bogus"),
    (["--wheels=/nonexistent"], "no .whl files in /nonexistent"),
])
def test_device_bench_bad_arguments_exit_2(args, message):
  proc = _script(*args)
  assert proc.returncode == 2
  assert message in proc.stderr


@pytest.mark.parametrize("flag,message", [
    ("--config.torch_device=tpu", "torch device 'tpu' is not allowed; allowed: auto, cpu, cuda"),
    ("--config.compute_dtype=float16", "compute_dtype"),
    ("--config.scale.shape=vit", "unknown shape 'vit'; allowed: fmnist, deit"),
    ("--config.bogus=1", "unknown config field 'bogus'"),
])
@pytest.mark.slow
def test_device_bench_bad_benchmark_fields_exit_2(tmp_path, flag, message):
  proc = subprocess.run([sys.executable, "-m", "sage_jax.main", "--config=configs/benchmark.py:",
                         f"--workdir={tmp_path}", "--compile_cache=off", flag],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last


def test_device_bench_scale_plan_and_batches():
  plan = scale.scale_plan(defaults.imagenet_deit(), 4096, 0.357)
  assert len(plan.rules) == len(defaults.imagenet_deit().rules.split(",")) == 15
  assert plan.budgets == (16, 32, 48, 64, 96, 196)
  assert (plan.batch_size, plan.server_batch_size) == (256, 64)  # the config's
  assert (plan.gate.uncertainty, plan.gate.fraction) == ("fraction", 0.357)
  small = scale.scale_plan(defaults.imagenet_deit(), 16, 0.357, ["topk"], [16])
  assert (small.batch_size, small.server_batch_size) == (16, 6)  # capped by the work
  bigger = scale.scale_plan(defaults.imagenet_deit(), 4096, 0.357, server_batch=256)
  assert (bigger.batch_size, bigger.server_batch_size) == (256, 256)
  with pytest.raises(ValueError, match="offload share 0 is not allowed"):
    scale.scale_plan(defaults.imagenet_deit(), 16, 0)

  batches = harness.synthetic_batches(5, 2, defaults.fmnist_dataset())
  assert [b["valid"].tolist() for b in batches] == [[True, True], [True, True], [True, False]]
  assert [b["index"].tolist() for b in batches] == [[0, 1], [2, 3], [4, 0]]
  assert batches[0]["image"].shape == (2, 28, 28, 1) and not batches[2]["image"][1].any()
