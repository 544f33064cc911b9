"""What the docs say of the scenes, recounted from the data (issue 34): the share of patches
touching the item's box over all test scenes, and how many scenes hold fewer than 4 clutter
fragments (a fragment is dropped after 20 failed placements)."""
import os

import numpy as np
import pytest

from sage_jax.data import input_pipeline
from sage_jax.data import scenes
from sage_jax import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _text(name):
  """The file's prose with its line breaks undone."""
  return " ".join(open(os.path.join(ROOT, name)).read().split())


def test_the_box_shares_the_readme_gives_are_those_of_all_test_scenes():
  cfg = defaults.scenes_dataset()
  cfg.split = "test"
  boxes = np.concatenate([b["box"][b["valid"]] for b in
                          input_pipeline.eval_batches(cfg, 2500, 0, 10000)])
  assert len(boxes) == 10000
  area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean()
  touched = input_pipeline.box_patches(boxes, scenes.CANVAS, 4).mean()
  assert (f"the item's box covers {100 * area:.1f}% of the canvas on average over the test "
          f"scenes ({100 * touched:.1f}% of their patches touch it") in _text("README.md")


@pytest.mark.slow
def test_the_docs_say_how_many_scenes_hold_fewer_fragments():
  """The test split drawn again, counting each scene's placed fragments (the same scenes:
  the digest is the prepared split's)."""
  items = input_pipeline.load_arrays(defaults.fmnist_dataset(), "test")
  # pylint: disable=protected-access
  placed, overlaps, clutter = [], scenes._overlaps, scenes._clutter

  def counting_overlaps(a, b):
    hit = overlaps(a, b)
    placed[-1] += not hit  # the placement loop stops at the first place outside the box
    return hit

  def counting_clutter(*args):
    placed.append(0)
    return clutter(*args)

  scenes._overlaps, scenes._clutter = counting_overlaps, counting_clutter
  try:
    split = scenes.make_split(*items, "test")
  finally:
    scenes._overlaps, scenes._clutter = overlaps, clutter
  assert scenes.digest(*split) == scenes.DIGESTS["test"]
  placed = np.asarray(placed)
  assert len(placed) == 10000 and placed.max() == scenes.FRAGMENTS[1]
  fewer = f"{100 * (placed < scenes.FRAGMENTS[0]).mean():.1f}%"
  assert fewer == "0.2%"
  said = f"{fewer} of the test scenes hold fewer: a fragment is dropped after 20 failed placements"
  assert said in _text("README.md") and said in _text("docs/choices.md")
