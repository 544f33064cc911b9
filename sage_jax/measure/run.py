"""Measures (`mode = "measure"`) time the pipeline instead of sweeping it (or, `gate`,
choose the gate's eta on held-out images): each (`MEASURES`)
is a module whose `rows(config, workdir, log)` yields dict rows, and `run_measures` writes
WORKDIR/<measure>.json (after every row) and .md."""
import importlib
import importlib.metadata
import json
import os
import platform
import sys

import jax
import numpy as np

from sage_jax import files
from sage_jax.measure import harness
from sage_jax.report import tables
from sage_jax import timing

MEASURES = {"benchmark": "sage_jax.measure.benchmark", "scale": "sage_jax.measure.scale",
            "rehearsal": "sage_jax.measure.rehearsal", "roofline": "sage_jax.measure.roofline",
            "gate": "sage_jax.measure.gate"}
# --- the one writer ------------------------------------------------------------------------

def describe() -> dict:
  """Where and with what this ran (every JSON's header)."""

  def version(package):
    try:
      return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      return None
  return dict(devices=[str(d) for d in jax.devices()], jax_backend=jax.default_backend(),
              versions=dict(python=platform.python_version(),
                            **{name: version(name) for name in harness.VERSIONS}))


def _cell(v) -> str:
  return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def by_table(rows) -> dict:
  """Rows -> {table: (head, rows of strings)}: scalar columns, in first-seen order."""
  out = {}
  for r in rows:
    head, _ = out.setdefault(r.get("table", ""), ([], []))
    head += [k for k, v in r.items() if k != "table" and k not in head
             and not isinstance(v, (dict, list, tuple))]
  for r in rows:
    head, cells = out[r.get("table", "")]
    cells.append([_cell(r.get(k)) for k in head])
  return out


def report(rows, markdown: bool = False) -> str:
  fmt = tables.markdown if markdown else tables.text
  return "\n\n".join(f"{name}:\n{fmt(*t)}" for name, t in by_table(rows).items()) + "\n"


def run_measures(config, workdir: str) -> dict:
  """config.measures' rows -> {name: rows}; process 0 writes and prints."""
  names = harness.items(config.measures)
  unknown = [n for n in names if n not in MEASURES]
  if unknown or not names:
    raise ValueError(f"unknown measure {(unknown or [''])[0]!r}; allowed: {', '.join(MEASURES)}")
  writes = jax.process_index() == 0
  if writes:
    files.makedirs(workdir)
  elapsed, done = timing.stopwatch(), {}
  log = lambda msg: print(f"[{elapsed():6.0f} s] {msg}", file=sys.stderr, flush=True)
  for name in names:
    module = importlib.import_module(MEASURES[name])
    path, got = os.path.join(workdir, f"{name}.json"), []
    head = dict(measure=name, config=json.loads(config.to_json()), **describe())
    for row in module.rows(config, workdir, log):
      got.append(row)
      log(f"{name}: {len(got)} rows measured")
      if writes:
        _write_json(path, head, got, elapsed(), complete=False)
    if writes:
      _write_json(path, head, got, elapsed(), complete=True)
      files.write(os.path.join(workdir, f"{name}.md"), report(got, markdown=True).encode())
      notes = getattr(module, "notes", lambda rows: [])(got)
      print(report(got) + "".join(f"{line}\n" for line in notes), end="", flush=True)
    done[name] = got
  return done


def _write_json(path, head, rows, seconds, complete):
  files.write(path, (json.dumps(dict(head, rows=rows, total_seconds=seconds, complete=complete,
                                     tensorflow_imported="tensorflow" in sys.modules),
                                indent=1, default=_plain) + "\n").encode())


def _plain(x):
  """numpy scalars -> Python numbers; anything else JSON lacks -> its str."""
  return x.item() if isinstance(x, np.generic) else str(x)
