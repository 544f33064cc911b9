"""The sweep split over 8 (simulated) devices decides every image as on one device."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = """
import sys, numpy as np, jax
from sage_jax import defaults
from sage_jax.sweep import loop
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan
c = defaults.sweep_config()
c.num_images, c.budgets, c.batch_size, c.server_batch_size = 120, "4,49", 60, 36
c.rules = "random,sage,threshold,tome"
c.uplink.erasure, c.uplink.pixel_bits = "0,0.3", "8,4"  # fates and levels per image, too
p = plan.make(c)
rec = loop.sweep_chunks(p, pipeline.load_models(p))[0]
rec["n_devices"] = np.int64(jax.local_device_count())
np.savez(sys.argv[1], **rec)
"""


def _records(tmp_path, n_devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
             PYTHONPATH=ROOT)
  out = tmp_path / f"rec{n_devices}.npz"
  subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=ROOT, env=env, check=True,
                 timeout=600, capture_output=True)
  with np.load(out) as z:
    return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path):
  one, eight = _records(tmp_path, 1), _records(tmp_path, 8)
  assert int(one.pop("n_devices")) == 1 and int(eight.pop("n_devices")) == 8
  assert one.keys() == eight.keys()
  for k in one:  # decisions exactly; float scores up to summation order
    if one[k].dtype.kind == "f":
      np.testing.assert_allclose(one[k], eight[k], rtol=1e-5, atol=1e-6, err_msg=k)
    else:
      np.testing.assert_array_equal(one[k], eight[k], err_msg=k)
