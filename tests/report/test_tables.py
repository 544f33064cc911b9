"""The one table writer: known answers written by hand."""
from sage_jax.report import tables


def test_markdown_aligns_the_columns_asked_for():
  got = tables.markdown(["rule", "K", "acc"], [["`topk`", "4", "51.0"], ["`sage`", "4", ""]],
                        right=(1, 2))
  assert got == ("| rule | K | acc |\n"
                 "|---|---:|---:|\n"
                 "| `topk` | 4 | 51.0 |\n"
                 "| `sage` | 4 |  |")


def test_markdown_rows_writes_floats_to_four_decimals_and_nan():
  rows = [dict(method="topk", budget=8, acc=0.5), dict(method="sage", budget=8, acc=float("nan"))]
  assert tables.markdown_rows(rows, ("method", "acc")) == (
      "| method | acc |\n|---|---|\n| topk | 0.5000 |\n| sage | nan |")


def test_text_pads_the_first_column_left_and_the_others_right():
  got = tables.text(["method", "K"], [["topk", "4"], ["sage_nested", "16"]])
  assert got.split("\n") == ["method" + " " * 8 + "K",
                             "-" * 11 + "  --",
                             "topk" + " " * 10 + "4",
                             "sage_nested  16"]
