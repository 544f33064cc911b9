"""The gate measure: eta chosen on held-out images, checked against the edge run directly."""
import jax
import numpy as np
import pytest

from configs import gate_eta
from sage_jax.data import input_pipeline
from sage_jax.measure import gate
from sage_jax.models import checkpoints
from sage_jax.models import vit


def _rows(config):
  return list(gate.rows(config, None, lambda msg: None))


def test_eta_offloads_the_share_asked_on_the_held_out_images():
  config = gate_eta.get_config("fmnist")
  config.dataset.split, config.num_images = "train[50000:50400]", 400
  config.gate.fraction, config.gate.eta = 0.25, 0.5
  (row,) = _rows(config)
  # The edge's min-entropy of the same 400 images, computed here from the checkpoint.
  params, _ = checkpoints.load(config.edge.checkpoint)
  model = vit.Model(10, config.edge.variant, 28)
  images, _ = input_pipeline.load_arrays(config.dataset, config.dataset.split)
  logits = model.apply({"params": params}, input_pipeline.normalize(images, config.dataset))[0]
  u = np.asarray(-jax.nn.log_softmax(logits).max(-1) / np.log(2.0))
  # Recomputed here in one batch: equal to the pipeline's within float32 rounding.
  assert row["images"] == 400 and row["split"] == "train[50000:50400]"
  assert abs(row["eta"] - np.sort(u)[299]) < 1e-5  # the 300th least uncertain: 100 above it
  assert row["share_at_eta"] == 0.25 and row["target_share"] == 0.25
  assert row["configured_eta"] == 0.5
  assert abs(row["share_at_configured_eta"] - np.mean(u > 0.5)) <= 1 / 400

def test_test_split_is_refused():
  config = gate_eta.get_config("fmnist")
  config.dataset.split = "test[:100]"
  with pytest.raises(ValueError, match=r"dataset.split 'test\[:100\]' is not allowed for the "
                                       r"gate's eta: it reads the test split"):
    _rows(config)
