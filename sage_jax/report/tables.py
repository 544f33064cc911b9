"""Tables as text: one markdown and one plain-text writer, for report.md, the sweep's stdout
and the measures' files. Cells come written as strings; `fixed` writes the report's."""
import math


def fixed(v) -> str:
  """A report cell: floats to 4 decimals ("nan" where undefined), anything else as str."""
  if isinstance(v, float):
    return "nan" if math.isnan(v) else f"{v:.4f}"
  return str(v)


def markdown(head, cells, right=()) -> str:
  """-> a markdown table; the columns at the indices in `right` are right-aligned."""
  rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(head)))
  return "\n".join(["| " + " | ".join(head) + " |", rule]
                   + ["| " + " | ".join(c) + " |" for c in cells])


def markdown_rows(rows, columns) -> str:
  """Rows (dicts) -> a markdown table of `columns`, each cell as `fixed` writes it."""
  return markdown(columns, [[fixed(r[c]) for c in columns] for r in rows])


def text(head, cells) -> str:
  """-> an aligned plain-text table: the first column to the left, the others to the right."""
  widths = [max(len(x) for x in col) for col in zip(head, *cells)]
  line = lambda c: "  ".join(x.rjust(w) if i else x.ljust(w)
                             for i, (x, w) in enumerate(zip(c, widths))).rstrip()
  return "\n".join([line(head), line(["-" * w for w in widths])] + [line(c) for c in cells])
