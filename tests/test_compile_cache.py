"""The persistent compilation cache: same files cold, warm and off; never fails a run."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["-m", "sage_jax.main", "--config=configs/fmnist_sweep.py", "--config.num_images=30",
        "--config.rules=topk,sage", "--config.budgets=4", "--config.report.n_boot=10"]
FILES = ("results.csv", "results.json", "per_image.npz", "report.md")


def _run(workdir, cache):
  proc = subprocess.run([sys.executable, *ARGS, f"--workdir={workdir}", f"--compile_cache={cache}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr, {f: open(os.path.join(workdir, f), "rb").read() for f in FILES}


def test_cold_warm_and_off_give_the_same_files(tmp_path):
  cache = tmp_path / "cache"
  log, cold = _run(tmp_path / "cold", cache)
  assert "compilation cache: " + str(cache) in log and "0 hits" in log, log[-2000:]
  assert "traced steps 0 read, 3 saved" in log, log[-2000:]  # edge, ceiling, one budget
  assert any(cache.iterdir())
  log, warm = _run(tmp_path / "warm", cache)
  assert " 0 misses" in log and " 0 hits" not in log, log[-2000:]  # every step was loaded
  assert "traced steps 3 read, 0 saved" in log, log[-2000:]            # and none traced
  _, off = _run(tmp_path / "off", "off")
  assert cold == warm == off


def test_unusable_cache_folders_never_fail_a_run(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")  # a file where the cache folder's parent should be
  log, files = _run(tmp_path / "a", blocker / "cache")
  assert f"compilation cache folder {blocker / 'cache'} is not usable" in log
  assert "compilation cache: off" in log
  cache = tmp_path / "cache"
  _run(tmp_path / "b", cache)
  for entry in cache.rglob("*"):  # every entry corrupt
    if entry.is_file():
      entry.write_bytes(b"\x00garbage" * 8)
  log, again = _run(tmp_path / "c", cache)
  assert "Error reading persistent compilation cache entry" in log, log[-2000:]
  assert again == files
