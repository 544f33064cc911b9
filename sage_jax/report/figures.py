"""Figures: which patches each rule sends (selection map), accuracy vs cost with intervals;
PNG bytes rendered with matplotlib's Agg backend, written atomically.
"""
import io
import math

import numpy as np

from sage_jax import files
from sage_jax.report import link_cost

DPI = 100
DIM = 0.25                   # unsent pixels are multiplied by this
# The sent region's 1-px inner edge (a sent dark patch is invisible otherwise).
OUTLINE = (1.0, 0.55, 0.0)
MIN_PANEL_PX = 112           # small images are scaled up to at least this many pixels a side


def pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path):
  plt = pyplot()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=fig.dpi)
  plt.close(fig)
  files.write(path, buf.getvalue())


def sent_mask(shape_hw, keep_idx, keep_mask, patch_size):
  """bool[H, W]: pixels of the sent patches (keep_idx: i32[K] row-major, keep_mask: bool[K]|None).

  Pixels right of / below the last whole patch belong to no patch and count as unsent.
  """
  h, w = shape_hw
  gh, gw = h // patch_size, w // patch_size
  keep_idx = np.asarray(keep_idx)
  sent = np.zeros(gh * gw, bool)
  sent[keep_idx if keep_mask is None else keep_idx[np.asarray(keep_mask, bool)]] = True
  sent = np.kron(sent.reshape(gh, gw), np.ones((patch_size, patch_size), bool))
  return np.pad(sent, ((0, h - sent.shape[0]), (0, w - sent.shape[1])))


def sent_panel(image, sent, dim=DIM):
  """f32[H, W, 3] in [0, 1]: image (f32[H, W, C], C = 1 or 3) with pixels not in sent dimmed."""
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  rgb = np.broadcast_to(image, image.shape[:2] + (3,)) if image.shape[-1] == 1 else image[..., :3]
  return np.where(sent[..., None], rgb, dim * rgb)


def _edge(mask):
  """Pixels of mask with a 4-neighbour outside it (the image border counts as outside)."""
  p = np.pad(mask, 1)
  inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
  return mask & ~inner


def selection_map(images, keep_idx, keep_mask, rule_names, patch_size, path) -> dict:
  """Grid of example images (rows) by rules (columns): sent patches bright, the rest dimmed.

  images: f32[R, H, W, C] display-ready in [0, 1] (C = 1 grayscale or 3 RGB); keep_idx:
  i32[R, M, K] for row r and rule m; keep_mask: bool[R, M, K] or None; rule_names: M
  column titles. The first column is the untouched image. Each image pixel becomes an
  s x s block, s = ceil(MIN_PANEL_PX / max(H, W)), so small images stay legible; the
  canvas is pasted pixel-exact (no resampling). Unsent pixels are multiplied by DIM; the
  sent region gets a 1-px OUTLINE on its inner edge.
  Returns {(row, col): (top, left, height, width)}: where each panel sits in the PNG.
  """
  images = np.asarray(images)
  keep_idx = np.asarray(keep_idx)
  r_count, h, w = images.shape[:3]
  m_count = keep_idx.shape[1]
  if keep_idx.shape[0] != r_count or len(rule_names) != m_count:
    raise ValueError(f"keep_idx {keep_idx.shape} does not match {r_count} images and "
                     f"{len(rule_names)} rule names")
  s = max(1, math.ceil(MIN_PANEL_PX / max(h, w)))
  ph, pw = h * s, w * s
  # A "rule:score" title goes on two lines (rule, then :score), so long ones do not overlap.
  titles = ["input"] + [n.replace(":", "\n:") for n in rule_names]
  lines = max(t.count("\n") + 1 for t in titles)
  gap, top, left = 6, 22 + 18 * (lines - 1), 8
  height, width = top + r_count * (ph + gap), left + len(titles) * (pw + gap) + 2
  canvas = np.ones((height, width, 3), np.float32)
  boxes = {}
  big = lambda a: np.repeat(np.repeat(a, s, 0), s, 1)
  for r in range(r_count):
    masks = [None] + [sent_mask((h, w), keep_idx[r, m],
                                None if keep_mask is None else keep_mask[r, m], patch_size)
                      for m in range(m_count)]
    for c, mask in enumerate(masks):
      if mask is None:
        panel = big(sent_panel(images[r], np.ones((h, w), bool)))
      else:
        panel = big(sent_panel(images[r], mask, DIM))
        panel[_edge(big(mask))] = OUTLINE
      y, x = top + r * (ph + gap), left + c * (pw + gap)
      canvas[y:y + ph, x:x + pw] = panel
      boxes[(r, c)] = (y, x, ph, pw)
  plt = pyplot()
  fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
  # Round to 8 bits here: matplotlib would truncate, darkening every pixel by up to 1/255.
  fig.figimage(np.round(canvas * 255).astype(np.uint8), 0, 0, origin="upper")
  # fig.text takes figure fractions measured from the bottom left.
  for c, title in enumerate(titles):
    fig.text((left + c * (pw + gap) + pw / 2) / width, 1 - (top - 6) / height, title,
             ha="center", va="bottom", fontsize=9)
  _save(fig, path)
  return boxes


X_AXES = {"budget": "budget K (patches sent)",
          "bits_per_request": "bits per offloaded request",
          "latency_ms": "uplink latency per offloaded request (ms)"}


def _x_axis(x, rate) -> tuple:
  """-> (the axis label, row -> its x value) for accuracy_plot's x and rate."""
  if x not in X_AXES:
    raise ValueError(f"x {x!r} is not allowed; allowed: {', '.join(X_AXES)}")
  if x != "latency_ms":
    return X_AXES[x], lambda r: r[x]
  name = rate if isinstance(rate, str) else None
  if name is not None:
    if name not in link_cost.CHANNELS:
      raise ValueError(f"unknown channel {name!r}; allowed: {', '.join(link_cost.CHANNELS)} "
                       "or a rate in bits/s")
    rate = link_cost.CHANNELS[name]
  speed = f"{rate / 1e6:g} Mbit/s" if rate >= 1e6 else f"{rate / 1e3:g} kbit/s"
  return (f"{X_AXES[x]}, {name + ' ' if name else ''}at {speed}",
          lambda r: link_cost.latency_ms(r["bits_per_request"], rate))


def accuracy_plot(rows, path, x="budget", rate="nb_iot"):
  """Offloaded accuracy vs x, one line per rule, 95% CI bars, server ceiling as a dashed line.

  rows: dicts like metrics.summarize's (method, budget, offloaded_acc, ceiling_acc,
  bits_per_request, ...); optional offloaded_acc_lo / offloaded_acc_hi give error bars and
  ceiling_acc_lo / ceiling_acc_hi a shaded band. x: "budget", "bits_per_request" or
  "latency_ms" (bits_per_request sent at `rate`, a link_cost.CHANNELS name or bits/s).
  """
  label, xs_of = _x_axis(x, rate)
  plt = pyplot()
  from matplotlib import transforms
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  markers = "osD^vP*Xh<>"
  methods = list(dict.fromkeys(r["method"] for r in rows))
  for i, method in enumerate(methods):
    rs = sorted((r for r in rows if r["method"] == method), key=xs_of)
    xs = [xs_of(r) for r in rs]
    acc = np.array([100 * r["offloaded_acc"] for r in rs])
    err = None
    if all("offloaded_acc_lo" in r and "offloaded_acc_hi" in r for r in rs):
      err = np.array([[acc[j] - 100 * r["offloaded_acc_lo"], 100 * r["offloaded_acc_hi"] - acc[j]]
                      for j, r in enumerate(rs)]).T
      # A percentile bootstrap interval need not contain its point estimate (few resamples,
      # e.g. n_boot=10, or a skewed statistic), and matplotlib refuses a negative bar length.
      # The bar is clipped at the estimate: it shows the part of the interval beyond the
      # point, none on the side the interval does not reach. results.csv/json keep the
      # interval as computed. A NaN bound (no interval) draws no bar.
      err = np.nan_to_num(np.clip(err, 0.0, None), nan=0.0)
    # Shift each rule a few points sideways so that overlapping error bars stay readable.
    step = min(2.0, 12.0 / max(1, len(methods) - 1))  # at most 12 points for all rules
    dodge = transforms.offset_copy(ax.transData, fig=fig, x=step * (i - (len(methods) - 1) / 2),
                                   units="points")
    # tab10 repeats after ten rules; tab20 keeps up to twenty apart.
    color = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")(i % 20)
    ax.errorbar(xs, acc, yerr=err, marker=markers[i % len(markers)], ms=4, capsize=2.5,
                lw=1.3, elinewidth=0.8, label=method, transform=dodge, color=color)
    # Artists with an offset transform do not widen the axes limits themselves.
    ends = acc if err is None else np.concatenate([acc - err[0], acc + err[1]])
    lim = np.column_stack([np.resize(np.asarray(xs, float), len(ends)), ends])
    lim = lim[np.isfinite(lim).all(1)]  # a NaN cell (no accuracy) is left out of the limits
    if len(lim):
      ax.update_datalim(lim)
  if rows and np.isfinite(rows[0]["ceiling_acc"]):  # NaN: no offloaded image, no line
    head = rows[0]
    ax.axhline(100 * head["ceiling_acc"], color="k", ls="--", lw=1,
               label="server ceiling (all patches)")
    if "ceiling_acc_lo" in head and "ceiling_acc_hi" in head:
      ax.axhspan(100 * head["ceiling_acc_lo"], 100 * head["ceiling_acc_hi"], color="k",
                 alpha=0.08, lw=0)
  ax.autoscale_view()
  ax.set_xlabel(label)
  ax.set_ylabel("accuracy on offloaded images (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2 if len(ax.get_legend_handles_labels()[0]) > 6 else 1)
  fig.tight_layout()
  _save(fig, path)


def line_plot(series, xlabel, path, ceiling=None, marks=()):
  """Accuracy (%) vs x, one line per series dict (label, x, y in [0, 1], and optional lo/hi
  interval bounds and matplotlib style: color, ls, marker, ms); ceiling: a row with ceiling_acc
  (a dashed line); marks: (x, y, label, axvline x or None) drawn in black."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for s in series:
    y = 100 * np.asarray(s["y"], float)
    err = None
    if "lo" in s:
      err = np.nan_to_num(np.clip([y - 100 * np.asarray(s["lo"]), 100 * np.asarray(s["hi"]) - y],
                                  0.0, None), nan=0.0)
    ax.errorbar(s["x"], y, yerr=err, ms=s.get("ms", 4), capsize=2, lw=1.2, elinewidth=0.7,
                label=s["label"],
                **{k: s[k] for k in ("color", "ls", "marker") if k in s})
  if ceiling is not None and np.isfinite(ceiling["ceiling_acc"]):
    ax.axhline(100 * ceiling["ceiling_acc"], color="k", ls="--", lw=1,
               label="server ceiling (all patches)")
  for x, y, label, vline in marks:
    ax.plot([x], [100 * y], marker="*", ms=12, color="k", ls="", label=label)
    if vline is not None:
      ax.axvline(vline, color="k", ls=":", lw=1)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("accuracy on offloaded images (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  _save(fig, path)
