import numpy as np

from configs import fmnist_sweep
from sage_jax import data


def test_eval_batches_pad_and_index():
  cfg = fmnist_sweep.get_config().dataset
  batches = list(data.eval_batches(cfg, batch_size=4, stop=10))
  assert len(batches) == 3
  idx = np.concatenate([b["index"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(idx, np.arange(10))
  last = batches[-1]
  assert last["valid"].tolist() == [True, True, False, False]
  assert last["image"].shape == (4, 28, 28, 1) and last["image"].dtype == np.float32
  # Normalisation as configured: raw uint8 pixels map back exactly.
  raw, labels = data.load_arrays(cfg, "test")
  np.testing.assert_allclose(batches[0]["image"], data.normalize(raw[:4], cfg))
  np.testing.assert_array_equal(batches[1]["label"], labels[4:8])
  assert data.num_examples(cfg, -1) == 10000 and data.num_examples(cfg, 10) == 10
  # A range in the middle keeps the images' own indices.
  mid = list(data.eval_batches(cfg, batch_size=4, start=6, stop=9))
  np.testing.assert_array_equal(mid[0]["index"][mid[0]["valid"]], [6, 7, 8])
  np.testing.assert_allclose(mid[0]["image"][:3], data.normalize(raw[6:9], cfg))


def test_missing_source_files_say_how_to_install(tmp_path):
  cfg = fmnist_sweep.get_config().dataset
  cfg.data_dir = str(tmp_path / "tfds")
  cfg.manual_dir = str(tmp_path / "nothing")
  try:
    data.num_examples(cfg)
  except FileNotFoundError as e:
    assert "apt-get install -y dataset-fashion-mnist" in str(e)
  else:
    raise AssertionError("expected FileNotFoundError")
