"""The two readers give the same batches: a dataset prepared as ArrayRecord is read through
TFDS's data sources in numpy (no TensorFlow), one prepared as TFRecord through tf.data."""
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sage_jax.data import input_pipeline

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class SageJaxTiny(tfds.core.GeneratorBasedBuilder):
  """23 training and 17 test images of 8x8 with a label and a box."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 1)),
        "label": tfds.features.ClassLabel(num_classes=3),
        "box": tfds.features.BBoxFeature()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(23, 0), "test": self._generate_examples(17, 1)}

  def _generate_examples(self, n, seed):
    rs = np.random.RandomState(seed)
    for i in range(n):
      y0, x0 = rs.uniform(0, 0.5, 2)
      yield i, {"image": rs.randint(0, 256, (8, 8, 1)).astype(np.uint8),
                "label": int(rs.randint(3)),
                "box": tfds.features.BBox(y0, x0, y0 + 0.5, x0 + 0.25)}


def _cfg(data_dir, split="test"):
  return ml_collections.ConfigDict(dict(name="sage_jax_tiny", data_dir=str(data_dir),
                                        split=split, mean=(0.5,), std=(0.25,)))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  dirs = {}
  for fmt in ("tfrecord", "array_record"):
    dirs[fmt] = tmp_path_factory.mktemp(fmt)
    SageJaxTiny(data_dir=str(dirs[fmt]), file_format=fmt).download_and_prepare()
  return dirs


@pytest.mark.parametrize("split,start,stop,batch,chunk", [
    ("test", 0, 17, 4, 0), ("test", 3, 16, 4, 5), ("test[2:15]", 1, 13, 3, 4),
    ("train", 0, 23, 23, 0), ("train[5:]", 0, 18, 5, 7)])
def test_the_same_batches_from_both_formats(prepared, monkeypatch, split, start, stop, batch,
                                            chunk):
  want = list(input_pipeline.eval_batches(_cfg(prepared["tfrecord"], split), batch, start, stop,
                                          chunk))
  monkeypatch.setattr(input_pipeline, "_tf_batches", None)  # the data source reads alone
  got = list(input_pipeline.eval_batches(_cfg(prepared["array_record"], split), batch, start,
                                         stop, chunk))
  assert len(got) == len(want) > 0
  for g, w in zip(got, want):
    assert sorted(g) == sorted(w) == ["box", "image", "index", "label", "valid"]
    for k in w:
      assert g[k].dtype == w[k].dtype and g[k].shape == w[k].shape, k
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)
  for fmt in prepared:
    images, labels = input_pipeline.load_arrays(_cfg(prepared[fmt]), split)
    np.testing.assert_array_equal(images, input_pipeline.load_arrays(
        _cfg(prepared["tfrecord"]), split)[0])
    assert labels.dtype == np.int32


def test_array_record_is_read_without_tensorflow(prepared):
  code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_sources as t; "
          "from sage_jax.data import input_pipeline as ip; "
          f"b = list(ip.eval_batches(t._cfg({str(prepared['array_record'])!r}), 5, 0, 17)); "
          "assert len(b) == 4 and b[-1]['valid'].sum() == 2; "
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "False", out.stderr[-2000:]
