"""Fashion-MNIST scenes (a TFDS builder): one item in a cluttered 56x56 canvas, N = 196 4px
patches as DeiT at 224/16; how a scene is drawn: docs/choices.md, "Data".
"""
import functools
import hashlib

import numpy as np

CANVAS = 56
FRAME = (20, 36)         # item frame side in px, inclusive: 13%-41% of the canvas
FRAGMENTS = (4, 7)       # clutter fragments per scene, inclusive
FRAGMENT_SIZE = (8, 14)  # fragment side in px, inclusive
NOISE = 24               # pixel noise amplitude (levels, 0..NOISE)
FIELD = (16, 64)         # the smooth field's peak level is drawn from this range
SEED = 0
SPLITS = {"train": 1, "test": 2}  # second word of each split's RandomState seed
NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot")
# sha256 of the prepared split (images, labels, boxes as bytes), version 1.0.0.
DIGESTS = {"train": "c23c056ba91ff34b14b65d800fc2250c1e61f2a95b6ef56dd27801ba606005f3",
           "test": "259a0730f565c3767e7fa7296e204be5441c3f126afa7ceb6e35346415ae7622"}


@functools.cache
def _resize_taps(src: int, dst: int):
  """Linear interpolation at pixel centres (half-pixel offsets) -> i64[dst] lo <= hi, f64[dst]
  w_lo, w_hi: out[i] = w_lo[i] * x[lo[i]] + w_hi[i] * x[hi[i]]. Where lo == hi (clipped at the
  edge) w_lo holds the float sum of both weights and w_hi is 0, as in a matrix of the weights."""
  pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, src - 1)
  w_lo, w_hi = 1 - (pos - lo), pos - lo
  same = lo == hi
  taps = lo, hi, np.where(same, w_lo + w_hi, w_lo), np.where(same, 0.0, w_hi)
  for a in taps:
    a.flags.writeable = False  # cached
  return taps


def _fma(a, b, c) -> np.ndarray:
  """f64 a * b + c rounded once (no overflow or underflow), elementwise: Boldo & Melquiond
  2008, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd"."""
  def two_sum(x, y):  # s + e == x + y exactly, s = RN(x + y)
    s = x + y
    z = s - x
    return s, (x - (s - z)) + (y - z)

  def split(x):  # Veltkamp: x == hi + lo exactly, each 26 significant bits
    t = x * 134217729.0  # 2**27 + 1
    hi = t - (t - x)
    return hi, x - hi

  a, b, c = (np.asarray(v, np.float64) for v in (a, b, c))
  (ah, al), (bh, bl) = split(a), split(b)
  uh = a * b
  ul = ((ah * bh - uh) + ah * bl + al * bh) + al * bl  # Dekker: a * b == uh + ul exactly
  th, tl = two_sum(c, uh)
  s, e = two_sum(tl, ul)
  v, e = np.array(s), np.asarray(e)  # v = tl + ul rounded to odd:
  even = (e != 0) & (v.view(np.int64) & 1 == 0)  # (rare) inexact and even: one ulp towards e
  v[even] = np.nextafter(v[even], np.copysign(np.inf, e[even]))
  return th + v


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """u8[h, w] -> u8[size, size], bilinear: W_h @ image @ W_w.T, W_n the f64[size, n] weights.

  DIGESTS hold the bytes of these two products under OpenBLAS's Haswell dgemm kernel; its other
  kernels (the CPU picks one) round differently. So, with no BLAS, each pixel is summed as that
  kernel does (dgemm_kernel_4x8_haswell.S), the same on any machine: acc = w_lo * x_lo, then
  acc = fma(w_hi, x_hi, acc); except, in the last row of a product with an odd number of rows,
  in its columns in whole blocks of 4 (the kernel's KERNEL4x1), terms k < 8 * (K // 8) go
  round-robin into 4 accumulators added at the end: there, taps from lo < 8 * (K // 8) are
  rounded apart and added."""
  def product(x_lo, x_hi, w_lo, w_hi, apart):
    first = x_lo * w_lo
    return np.where(apart, first + x_hi * w_hi, _fma(x_hi, w_hi, first))

  h, w = image.shape
  tail = (np.arange(size)[:, None] == size - 1) & (size % 2 == 1)  # an odd product's last row
  lo, hi, w_lo, w_hi = _resize_taps(h, size)
  apart = tail & (np.arange(w) < w // 4 * 4) & (lo[:, None] < h // 8 * 8)
  x = image.astype(np.float64)
  x = product(x[lo], x[hi], w_lo[:, None], w_hi[:, None], apart)
  lo, hi, w_lo, w_hi = _resize_taps(w, size)
  apart = tail & (np.arange(size) < size // 4 * 4) & (lo < w // 8 * 8)
  x = product(x[:, lo], x[:, hi], w_lo, w_hi, apart)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _background(rs: np.random.RandomState) -> np.ndarray:
  peak = rs.randint(FIELD[0], FIELD[1] + 1)
  field = resize((rs.rand(8, 8) * peak).astype(np.uint8), CANVAS)
  return field + rs.randint(0, NOISE + 1, (CANVAS, CANVAS)).astype(np.uint8)


def _overlaps(a, b) -> bool:
  """Boxes (y0, x0, y1, x1), ends exclusive."""
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clutter(rs, pool: np.ndarray, box) -> np.ndarray:
  """u8[CANVAS, CANVAS]: fragments of random items of `pool`, none overlapping `box`."""
  layer = np.zeros((CANVAS, CANVAS), np.uint8)
  for _ in range(rs.randint(FRAGMENTS[0], FRAGMENTS[1] + 1)):
    f = rs.randint(FRAGMENT_SIZE[0], FRAGMENT_SIZE[1] + 1)
    src = pool[rs.randint(len(pool))]
    y, x = rs.randint(0, 28 - f + 1, 2)
    frag = src[y:y + f, x:x + f]
    for _ in range(20):  # a place outside the item's box
      py, px = rs.randint(0, CANVAS - f + 1, 2)
      if not _overlaps((py, px, py + f, px + f), box):
        layer[py:py + f, px:px + f] = np.maximum(layer[py:py + f, px:px + f], frag)
        break
  return layer


def render(rs: np.random.RandomState, item: np.ndarray, pool: np.ndarray):
  """One scene -> (u8[CANVAS, CANVAS] canvas, its item layer, the layer's tight box (y0, x0,
  y1, x1) in pixels, ends exclusive)."""
  side = rs.randint(FRAME[0], FRAME[1] + 1)
  top, left = rs.randint(0, CANVAS - side + 1, 2)
  item_layer = np.zeros((CANVAS, CANVAS), np.uint8)
  item_layer[top:top + side, left:left + side] = resize(item, side)
  rows, cols = np.nonzero(item_layer)
  box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
  canvas = np.maximum(np.maximum(_background(rs), _clutter(rs, pool, box)), item_layer)
  return canvas, item_layer, box


def make_split(images: np.ndarray, labels: np.ndarray, split: str, seed: int = SEED):
  """Fashion-MNIST u8[n, 28, 28(, 1)] -> one scene per item: (u8[n, 56, 56, 1], i64[n]
  labels, f32[n, 4] relative (ymin, xmin, ymax, xmax) boxes)."""
  images = images.reshape(len(images), 28, 28)
  rs = np.random.RandomState([seed, SPLITS[split]])
  scenes = np.zeros((len(images), CANVAS, CANVAS, 1), np.uint8)
  boxes = np.zeros((len(images), 4), np.float32)
  for i, item in enumerate(images):
    canvas, _, box = render(rs, item, images)
    scenes[i, ..., 0] = canvas
    boxes[i] = np.asarray(box, np.float32) / CANVAS
  return scenes, np.asarray(labels, np.int64), boxes


def digest(scenes, labels, boxes) -> str:
  h = hashlib.sha256()
  for a in (scenes, labels, boxes):
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


@functools.cache
def register():
  """Defines (and so registers with TFDS) the fmnist_scenes builder, once -> its class."""
  import tensorflow_datasets as tfds

  class FmnistScenes(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST items in cluttered 56x56 scenes, with the item's box."""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Scenes from Fashion-MNIST 3.0.1, seed 0."}

    def _info(self):
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(CANVAS, CANVAS, 1)),
              "label": tfds.features.ClassLabel(names=NAMES),
              "box": tfds.features.BBoxFeature(),
          }),
          supervised_keys=("image", "label"))

    load_items = None  # split -> Fashion-MNIST (images, labels); set by prepare

    def _split_generators(self, dl_manager):
      del dl_manager  # the items come from the fashion_mnist TFDS dataset beside this one
      return {split: self._generate_examples(*self.load_items(split), split) for split in SPLITS}

    def _generate_examples(self, images, labels, split):
      scenes, labels, boxes = make_split(images, labels, split)
      got, want = digest(scenes, labels, boxes), DIGESTS[split]
      if got != want:
        raise ValueError(f"fmnist_scenes {split} scenes came out with sha256 {got[:16]}..., not "
                         f"the known {want[:16]}...: this machine's numpy draws or rounds "
                         "differently, and results on these scenes would not compare")
      for i in range(len(scenes)):
        yield i, {"image": scenes[i], "label": labels[i],
                  "box": tfds.features.BBox(*(float(v) for v in boxes[i]))}

  return FmnistScenes


def prepare(builder, load_items):
  """Builds fmnist_scenes from Fashion-MNIST (`load_items(split)` -> its images and labels)
  -> a builder reading it."""
  import tensorflow_datasets as tfds
  builder.load_items = load_items
  builder.download_and_prepare()
  return tfds.builder(builder.name, data_dir=builder.data_dir_root)
