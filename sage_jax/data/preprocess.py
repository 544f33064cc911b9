"""Per-image evaluation preprocessing as TensorFlow ops for tf.data (`for_config`): "scale"
(x/255, then mean/std) or "deit_eval" (timm's Resize(256, bicubic) + CenterCrop(224) on
PIL images, matched within 2 levels; docs/choices.md, "Data").
"""
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scale(image, mean, std):
  """u8[H, W, C] (or f32 in 0..255) -> f32[H, W, C], (x/255 - mean) / std."""
  x = tf.cast(image, tf.float32) / 255.0
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def resize_shorter_side(image, size: int):
  """u8[H, W, C] -> f32[h, w, C] on the 0..255 grid, min(h, w) = size.

  The long side is floor(size * long / short), as torchvision computes it.
  Antialiased Keys bicubic (a = -0.5) is the kernel PIL uses for BICUBIC.
  """
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64)
  s, short = tf.constant(size, tf.int64), tf.minimum(h, w)
  new_h = tf.where(h <= w, s, s * h // short)
  new_w = tf.where(h <= w, s * w // short, s)
  resize = lambda x, hw: tf.round(tf.clip_by_value(tf.image.resize(
      x, tf.cast(hw, tf.int32), method="bicubic", antialias=True), 0.0, 255.0))
  # PIL resizes width, then height, storing 8 bits in between; so do we.
  x = resize(tf.cast(image, tf.float32), tf.stack([h, new_w]))
  return resize(x, tf.stack([new_h, new_w]))


def center_crop(image, size: int):
  """[H, W, C] -> [size, size, C]; offsets round((H - size) / 2) half to even, as
  torchvision's CenterCrop (Python's round) does."""
  shape = tf.shape(image)
  top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float32) / 2), tf.int32)
  return image[top:top + size, left:left + size]


def deit_eval(image, size: int = 224, resize_size: int = 256, mean=IMAGENET_MEAN,
              std=IMAGENET_STD):
  """u8[H, W, 3] -> f32[size, size, 3]: resize shorter side, center crop, normalize."""
  x = center_crop(resize_shorter_side(image, resize_size), size)
  return tf.ensure_shape(scale(x, mean, std), (size, size, None))


def decode_jpeg(data):
  """JPEG bytes -> u8[H, W, 3] with the accurate integer DCT, the one PIL (so timm)
  uses; TF's default fast DCT moves ~80% of pixels by up to 8 levels."""
  return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")


def for_config(cfg):
  """Dataset config -> (TFDS `decoders` for as_dataset, fn(example image) -> f32[S, S, C]).

  deit_eval skips TFDS's image decoding and decodes here (see decode_jpeg).
  """
  name = cfg.get("preprocess", "scale")
  if name == "scale":
    return None, lambda image: scale(image, cfg.mean, cfg.std)
  if name == "deit_eval":
    import tensorflow_datasets as tfds
    return {"image": tfds.decode.SkipDecoding()}, lambda data: deit_eval(
        decode_jpeg(data), cfg.image_size, cfg.resize_size, cfg.mean, cfg.std)
  raise ValueError(f"unknown preprocess {name!r}; allowed: scale, deit_eval")
