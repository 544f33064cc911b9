import re

import numpy as np
import pytest

from configs import fmnist_sweep
from sage_jax.data import input_pipeline


def test_eval_batches_pad_and_index():
  cfg = fmnist_sweep.get_config().dataset
  batches = list(input_pipeline.eval_batches(cfg, batch_size=4, start=0, stop=10))
  assert len(batches) == 3
  idx = np.concatenate([b["index"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(idx, np.arange(10))
  last = batches[-1]
  assert last["valid"].tolist() == [True, True, False, False]
  assert last["image"].shape == (4, 28, 28, 1) and last["image"].dtype == np.float32
  # Normalisation as configured: raw uint8 pixels map back exactly.
  raw, labels = input_pipeline.load_arrays(cfg, "test")
  np.testing.assert_allclose(batches[0]["image"], input_pipeline.normalize(raw[:4], cfg))
  np.testing.assert_array_equal(batches[1]["label"], labels[4:8])
  assert input_pipeline.num_examples(cfg, -1) == 10000 and input_pipeline.num_examples(cfg, 10) == 10
  # A range in the middle keeps the images' own indices.
  mid = list(input_pipeline.eval_batches(cfg, batch_size=4, start=6, stop=9))
  np.testing.assert_array_equal(mid[0]["index"][mid[0]["valid"]], [6, 7, 8])
  np.testing.assert_allclose(mid[0]["image"][:3], input_pipeline.normalize(raw[6:9], cfg))


def test_batches_never_cross_a_chunk_border():
  cfg = fmnist_sweep.get_config().dataset
  raw = input_pipeline.load_arrays(cfg, "test")[0]
  # Chunks of 7 from 3: [3, 7), [7, 14), [14, 21), [21, 23); batches of 4 within each.
  batches = list(input_pipeline.eval_batches(cfg, batch_size=4, start=3, stop=23, chunk_size=7))
  got = [b["index"][b["valid"]].tolist() for b in batches]
  assert got == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17], [18, 19, 20],
                 [21, 22]]
  for b in batches:
    np.testing.assert_allclose(b["image"][b["valid"]], input_pipeline.normalize(raw[b["index"][b["valid"]]],
                                                                      cfg))
    assert not b["index"][~b["valid"]].any() and not b["image"][~b["valid"]].any()
  # Aligned chunks: the stream's batches pass through unchanged.
  aligned = list(input_pipeline.eval_batches(cfg, batch_size=4, start=0, stop=16, chunk_size=8))
  assert [b["index"].tolist() for b in aligned] == [list(range(i, i + 4)) for i in (0, 4, 8, 12)]


def test_a_sliced_split_keeps_its_own_positions():
  cfg = fmnist_sweep.get_config().dataset
  raw = input_pipeline.load_arrays(cfg, "test")[0]
  cfg.split = "test[5000:]"
  assert input_pipeline.num_examples(cfg) == 5000
  (b,) = input_pipeline.eval_batches(cfg, batch_size=3, start=10, stop=13)
  assert b["index"].tolist() == [10, 11, 12]  # positions in test[5000:]
  np.testing.assert_allclose(b["image"], input_pipeline.normalize(raw[5010:5013], cfg))


@pytest.mark.parametrize("split,size", [("test", 10000), ("test[5000:]", 5000),
                                        ("test[-10:]", 10), ("test[:50%]", 5000),
                                        ("test[4000:5000]", 1000), ("train+test", 70000)])
def test_split_size_from_metadata(split, size):
  cfg = fmnist_sweep.get_config().dataset
  cfg.split = split
  assert input_pipeline.split_size(cfg) == size  # Fashion-MNIST: 60,000 train, 10,000 test images
  assert input_pipeline.num_examples(cfg) == size and input_pipeline.num_examples(cfg, size) == size
  assert input_pipeline.identity(cfg)["num_examples"] == size
  with pytest.raises(ValueError, match=rf"num_images {size + 1} is not allowed: split "
                                       rf"'{re.escape(split)}' of dataset 'fashion_mnist' "
                                       rf"holds {size} images"):
    input_pipeline.num_examples(cfg, size + 1)


@pytest.mark.parametrize("split", ["test[:0]", "test[5000:4000]", "test[50%:40%]", "test[-3:-5]"])
def test_empty_or_inverted_slice_is_refused(split):
  cfg = fmnist_sweep.get_config().dataset
  cfg.split = split
  for call in (input_pipeline.split_size, input_pipeline.num_examples, input_pipeline.identity):
    with pytest.raises(ValueError, match=rf"^split '{re.escape(split)}' of dataset "
                                         r"'fashion_mnist' is empty: it holds 0 images"):
      call(cfg)
