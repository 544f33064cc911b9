"""Two JAX processes on localhost (CPU collectives) write what one process writes."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["-m", "sage_jax.main", "--config=configs/fmnist_sweep.py", "--config.num_images=300",
        "--config.chunk_size=60", "--config.budgets=4,16", "--config.rules=random,topk,sage,threshold"]
# What process 0 prints (gRPC's log line, then an exception or a crash) when its coordinator
# cannot listen on the port.
BIND_FAILED = ("Failed to add port to server", "Failed to start RPC server")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_two(tmp_path, port):
  """Processes 0 and 1 with the coordinator on `port` -> [(Popen, stderr file)]."""
  procs = []
  for i in range(2):
    shutil.rmtree(tmp_path / f"two{i}", ignore_errors=True)
    err = tmp_path / f"two{i}.stderr"
    with open(err, "w") as f:  # a file, not a pipe: nobody reads process 1's while 0 runs
      procs.append((subprocess.Popen([sys.executable, *ARGS, f"--workdir={tmp_path / f'two{i}'}",
                                      "--distributed", f"--coordinator_address=localhost:{port}",
                                      "--num_processes=2", f"--process_id={i}"],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f), err))
  return procs


def test_two_processes_match_one(tmp_path):
  single = subprocess.run([sys.executable, *ARGS, f"--workdir={tmp_path / 'one'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-2000:]
  # The port was free when picked but may be taken before process 0 binds it: then process 0
  # fails at once, and both start again on another port.
  for attempt in range(4):
    procs = _start_two(tmp_path, _free_port())
    (p0, err0), (p1, _) = procs
    bind_failed = (attempt < 3 and p0.wait(timeout=600) != 0
                   and any(m in err0.read_text() for m in BIND_FAILED))
    if not bind_failed:
      break
    p1.kill()  # it would wait for the coordinator until its timeout
    p1.wait()
  for p, err in procs:
    assert p.wait(timeout=600) == 0, err.read_text()[-2000:]
  # Each process evaluated its own contiguous block of the 5 chunks (one slice read each) ...
  for i, block in enumerate(([0, 1], [2, 3, 4])):
    chunks = sorted(os.listdir(tmp_path / f"two{i}" / "progress"))
    assert [int(c.split("_")[1]) // 60 for c in chunks] == block
  # ... and process 0 wrote the same results as the single process; process 1 wrote none.
  assert not (tmp_path / "two1" / "results.csv").exists()
  for name in ("results.csv", "results.json", "report.md"):
    assert (tmp_path / "two0" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
  with np.load(tmp_path / "one" / "per_image.npz") as a, \
       np.load(tmp_path / "two0" / "per_image.npz") as b:
    assert a.files == b.files
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
