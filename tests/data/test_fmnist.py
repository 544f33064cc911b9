"""Fashion-MNIST preparation: Debian's files verified, TFDS's download, one clear error."""
import gzip
import os
import shutil
import socket
import subprocess
import sys

import pytest

from configs import fmnist_sweep
from sage_jax.data import fmnist
from sage_jax.data import input_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN = fmnist.DEBIAN_DIR
HAVE_DEBIAN = all(os.path.isfile(os.path.join(DEBIAN, f)) for f in fmnist.DIGESTS)
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian's Fashion-MNIST files not in {DEBIAN}")
# Imported at start-up by a child Python (sitecustomize): no connection leaves it.
NO_NETWORK = """import socket
def _refuse(*args, **kwargs):
  raise OSError("network disabled by the test")
socket.create_connection = socket.getaddrinfo = _refuse
"""


def _cfg(tmp_path, manual_dir):
  cfg = fmnist_sweep.get_config().dataset
  cfg.data_dir = str(tmp_path / "tfds")
  cfg.manual_dir = str(manual_dir)
  return cfg


def test_no_files_and_no_network_give_one_clear_error(tmp_path, monkeypatch):
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network disabled by the test")
  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(socket, "getaddrinfo", refuse)
  for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(k, raising=False)  # with a proxy TFDS would go through it unprobed
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError) as err:
    input_pipeline.num_examples(_cfg(tmp_path, tmp_path / "empty"))
  msg = str(err.value)
  # It gives up after one refused connection (the probe), not after download retries.
  assert len(attempts) == 1 and "\n" not in msg, attempts
  for part in ("Fashion-MNIST is not prepared under data_dir=", "missing: train-images-idx3-ubyte.gz",
               "TFDS could not download it (OSError: network disabled by the test)",
               "apt-get install -y dataset-fashion-mnist", "with network access",
               "--config.dataset.manual_dir"):
    assert part in msg, msg


@pytest.mark.slow
def test_main_without_data_or_network_exits_2_with_one_line(tmp_path):
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(NO_NETWORK)
  empty = tmp_path / "empty"
  empty.mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "sage_jax.main", "--config=configs/fmnist_sweep.py",
       f"--workdir={tmp_path / 'w'}", f"--config.dataset.manual_dir={empty}",
       f"--config.dataset.data_dir={empty}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True,
      timeout=300)  # a guard against a hang only
  lines = proc.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error:")]
  assert proc.returncode == 2 and errors == lines[-1:], proc.stderr[-2000:]
  assert "TFDS could not download it" in errors[0] and "dataset-fashion-mnist" in errors[0]


def _flip_first_test_label(path):
  labels = bytearray(gzip.decompress(path.read_bytes()))
  labels[8] = (labels[8] + 1) % 10  # after the 8-byte idx header
  path.write_bytes(gzip.compress(bytes(labels)))


@needs_debian
@pytest.mark.parametrize("alter,message", [
    (_flip_first_test_label, "does not hold the original test labels"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "is not a readable .gz file"),
])
def test_altered_source_file_is_refused(tmp_path, alter, message):
  src = tmp_path / "src"
  src.mkdir()
  for name in fmnist.DIGESTS:
    shutil.copy(os.path.join(DEBIAN, name), src / name)
  alter(src / "t10k-labels-idx1-ubyte.gz")
  cfg = _cfg(tmp_path, src)
  with pytest.raises(ValueError) as err:
    input_pipeline.num_examples(cfg)
  msg = str(err.value)
  assert f"{src / 't10k-labels-idx1-ubyte.gz'} {message}" in msg and "\n" not in msg, msg
  assert "apt-get install -y dataset-fashion-mnist" in msg
  assert not os.path.exists(os.path.join(cfg.data_dir, "fashion_mnist", "3.0.1", "dataset_info.json"))


@needs_debian
def test_debian_files_are_the_original():
  found = fmnist.verify_sources(DEBIAN)
  assert sorted(found) == sorted(fmnist.DIGESTS)
  for name, (size, sha) in found.items():
    assert size == os.path.getsize(os.path.join(DEBIAN, name)) and len(sha) == 64
