"""Tests for sage_jax.figures: PNGs are written with the expected size and pixel values."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from sage_jax.report import figures

TOL = 0.6 / 255  # PNG stores 8-bit values


def read(path):
  return mpimg.imread(path)[..., :3]  # f32[H, W, 3] in [0, 1]


def test_sent_mask_and_panel():
  mask = figures.sent_mask((8, 12), [1, 5, 3], [True, True, False], 4)  # 2 x 3 patches
  want = np.zeros((8, 12), bool)
  want[0:4, 4:8] = want[4:8, 8:12] = True
  np.testing.assert_array_equal(mask, want)
  img = np.full((8, 12, 1), 0.8, np.float32)
  panel = figures.sent_panel(img, mask, dim=0.25)
  assert panel.shape == (8, 12, 3)
  np.testing.assert_allclose(panel[mask], 0.8)
  np.testing.assert_allclose(panel[~mask], 0.2)
  # a ragged border (10 px, patch 4) belongs to no patch
  assert not figures.sent_mask((10, 10), [0, 1, 2, 3], None, 4)[8:].any()


@pytest.mark.parametrize("channels", [1, 3])
def test_selection_map_pixels(tmp_path, channels):
  rng = np.random.default_rng(channels)
  R, H, W, p = 2, 8, 12, 4  # 2 x 3 patches
  images = rng.uniform(0.1, 1.0, (R, H, W, channels)).astype(np.float32)
  keep_idx = np.array([[[0, 4], [2, 3]], [[5, 1], [1, 0]]])  # [R, M=2, K=2]
  keep_mask = np.array([[[True, True], [True, False]], [[True, True], [True, True]]])
  path = str(tmp_path / "map.png")
  boxes = figures.selection_map(images, keep_idx, keep_mask, ["a", "b"], p, path)
  png = read(path)
  s = 10  # screen px per image pixel: ceil(MIN_PANEL_PX / 12)
  assert png.shape == (22 + R * (8 * s + 6), 8 + 3 * (12 * s + 6) + 2, 3)
  for r in range(R):
    for c in range(3):
      y, x, ph, pw = boxes[(r, c)]
      assert (ph, pw) == (8 * s, 12 * s)
      # one screen pixel per image pixel: a block's centre, never on the 1-px outline
      shown = png[y + s // 2:y + ph:s, x + s // 2:x + pw:s]
      rgb = np.broadcast_to(images[r], (H, W, 3))
      if c == 0:
        np.testing.assert_allclose(shown, rgb, atol=TOL)  # the input column is untouched
        continue
      mask = figures.sent_mask((H, W), keep_idx[r, c - 1], keep_mask[r, c - 1], p)
      np.testing.assert_allclose(shown[mask], rgb[mask], atol=TOL)
      np.testing.assert_allclose(shown[~mask], 0.25 * rgb[~mask], atol=TOL)
  # the masked-out slot (row 0, rule b, patch 3) is dimmed
  y, x = boxes[(0, 2)][:2]
  np.testing.assert_allclose(png[y + s * 5 + s // 2, x + s * 1 + s // 2],
                             0.25 * np.broadcast_to(images[0, 5, 1], (3,)), atol=TOL)


def test_selection_map_outline_and_titles(tmp_path):
  img = np.full((1, 8, 8, 1), 0.8, np.float32)
  path = str(tmp_path / "map.png")
  boxes = figures.selection_map(img, np.array([[[0]]]), None, ["topk"], 4, path)
  png = read(path)
  s = 14  # 8 px scaled to at least MIN_PANEL_PX = 112
  assert png.shape == (22 + 8 * s + 6, 8 + 2 * (8 * s + 6) + 2, 3)
  y, x, ph, pw = boxes[(0, 1)]
  np.testing.assert_allclose(png[y, x], (1.0, 0.55, 0.0), atol=TOL)  # orange outline corner
  np.testing.assert_allclose(png[y + 2 * s, x + 2 * s], 0.8, atol=TOL)  # sent interior
  np.testing.assert_allclose(png[y + 6 * s, x + 6 * s], 0.2, atol=TOL)  # unsent: 0.8 / 4
  # Column titles ("input", "topk") in the 22-px strip above each panel, nothing in the
  # left margin (no row labels) or between the columns.
  for c in range(2):
    y, x, ph, pw = boxes[(0, c)]
    assert y == 22 and (png[:y, x:x + pw] < 0.5).any(), c
  assert (png[:, :boxes[(0, 0)][1]] == 1.0).all()
  assert (png[:22, boxes[(0, 0)][1] + pw:boxes[(0, 1)][1]] == 1.0).all()
  # A "rule:score" title takes two lines: 18 px more on top.
  boxes = figures.selection_map(img, np.array([[[0]]]), None, ["topk:cls_all"], 4, path)
  assert boxes[(0, 1)][0] == 22 + 18 and read(path).shape[0] == 22 + 18 + 8 * s + 6


def test_selection_map_shape_error(tmp_path):
  with pytest.raises(ValueError, match="rule names"):
    figures.selection_map(np.zeros((2, 8, 8, 1)), np.zeros((2, 3, 1), int), None, ["a"], 4,
                          str(tmp_path / "x.png"))


def rows(with_ci=True):
  out = []
  for m in ("topk", "sage"):
    for b in (4, 16, 49):
      acc = 0.5 + b / 100
      r = dict(method=m, budget=b, offloaded_acc=acc, ceiling_acc=0.95,
               bits_per_request=134.0 * b)
      if with_ci:
        r.update(offloaded_acc_lo=acc - 0.02, offloaded_acc_hi=acc + 0.02,
                 ceiling_acc_lo=0.94, ceiling_acc_hi=0.96)
      out.append(r)
  return out


def test_accuracy_plot(tmp_path):
  sizes = set()
  for x, kw in (("budget", {}), ("bits_per_request", {}), ("latency_ms", {}),
                ("latency_ms", dict(rate=1e6))):
    path = str(tmp_path / f"{x}.png")
    figures.accuracy_plot(rows(), path, x=x, **kw)
    png = mpimg.imread(path)
    sizes.add(png.shape[:2])
  assert sizes == {(540, 840)}
  figures.accuracy_plot(rows(with_ci=False), str(tmp_path / "plain.png"))
  with open(tmp_path / "plain.png", "rb") as f, open(tmp_path / "budget.png", "rb") as g:
    assert f.read() != g.read()  # the error bars and band change the picture


def test_accuracy_plot_errors(tmp_path):
  with pytest.raises(ValueError, match="x 'units'"):
    figures.accuracy_plot(rows(), str(tmp_path / "a.png"), x="units")
  with pytest.raises(ValueError, match="unknown channel 'carrier_pigeon'"):
    figures.accuracy_plot(rows(), str(tmp_path / "a.png"), x="latency_ms", rate="carrier_pigeon")
