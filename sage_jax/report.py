"""Results -> table on stdout, results.csv / results.json / per_image.npz / curves.png.

Every file is written atomically (workdir.atomic_write), so a killed run never
leaves a half-written result.
"""
import csv
import io
import json
import math
import os

from sage_jax.metrics import COLUMNS
from sage_jax.workdir import atomic_write, npz_bytes


def _fmt(v):
  if isinstance(v, float):
    return "nan" if math.isnan(v) else f"{v:.4f}"
  return str(v)


def format_table(rows, columns=("method", "budget", "offloaded_acc", "pct_of_ceiling",
                                "overall_acc", "mean_units", "comm_cost", "cap_bind_rate")) -> str:
  head = rows[0] if rows else {}
  lines = [f"edge_acc {_fmt(head.get('edge_acc', float('nan')))}  ceiling_acc (offloaded) "
           f"{_fmt(head.get('ceiling_acc', float('nan')))}  offload_rate "
           f"{_fmt(head.get('offload_rate', float('nan')))}  n_images {head.get('n_images', 0)}"]
  cells = [list(columns)] + [[_fmt(r[c]) for c in columns] for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
  for k, c in enumerate(cells):
    lines.append("  ".join(x.rjust(w) for x, w in zip(c, widths)))
    if k == 0:
      lines.append("  ".join("-" * w for w in widths))
  return "\n".join(lines)


def markdown_table(rows, columns) -> str:
  out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  out += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
  return "\n".join(out)


def to_csv(rows) -> bytes:
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
  w.writeheader()
  w.writerows({k: _fmt(r[k]) if isinstance(r[k], float) else r[k] for k in COLUMNS} for r in rows)
  return buf.getvalue().encode()


def plot_curves(rows, path):
  """Offloaded accuracy vs budget, one line per rule, ceiling as a dashed line."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for method in dict.fromkeys(r["method"] for r in rows):
    rs = [r for r in rows if r["method"] == method]
    ax.plot([r["budget"] for r in rs], [100 * r["offloaded_acc"] for r in rs], marker="o",
            label=method)
  if rows:
    ax.axhline(100 * rows[0]["ceiling_acc"], color="k", ls="--", lw=1,
               label="server ceiling (all patches)")
  ax.set_xlabel("budget K (patches sent)")
  ax.set_ylabel("accuracy on offloaded images (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def write_all(rows, workdir, records=None):
  atomic_write(os.path.join(workdir, "results.csv"), to_csv(rows))
  atomic_write(os.path.join(workdir, "results.json"),
                (json.dumps(rows, indent=1, allow_nan=True) + "\n").encode())
  if records is not None:
    atomic_write(os.path.join(workdir, "per_image.npz"), npz_bytes(records))
  plot_curves(rows, os.path.join(workdir, "curves.png"))
