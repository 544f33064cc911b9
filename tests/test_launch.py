"""launch/tpu_vm.sh and launch/gpu_host.sh: argument handling and dry runs (no cloud, no GPU)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/tpu_vm.sh", "launch/gpu_host.sh")


def _run(script, *args):
  return subprocess.run(["bash", os.path.join(ROOT, script), *args], capture_output=True,
                        text=True, timeout=60)


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
  assert any("pip install -q jax\\[cuda12\\]" in c for c in cmds)
  converts = [c for c in cmds if "sage_jax.convert" in c]
  assert converts == [f".venv/bin/python -m sage_jax.convert --src={edge} "
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
  for part in ("sage_jax.convert", "--variant=Ti/16", "jax[tpu]", "sage_jax.main",
               "--config.dataset.data_dir=gs://bucket/tfds", "--config.num_images=1000"):
    assert part in ssh, part
  assert "--variant=B/16" not in ssh  # the server is already a .msgpack
  assert "--worker=0" in cmds[-1] and "vm1:\\~/sage_jax/results/imagenet_tpu" in cmds[-1]


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
])
def test_argument_errors(script, args, message):
  out = _run(script, "--dry-run", *args)
  assert out.returncode == 2 and message in out.stderr, (out.returncode, out.stderr)
  assert out.stdout == ""  # nothing is run or printed before the arguments are checked


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
  out = _run(script, "--help")
  assert out.returncode == 0 and "Usage: bash " + script in out.stdout and "--dry-run" in out.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
  out = subprocess.run(["shellcheck", "-x", *SCRIPTS, "launch/common.sh"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stdout
