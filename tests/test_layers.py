"""The architecture as checked facts: the import-linter contracts of setup.cfg hold, sage_jax's
modules import one another without a cycle (imports inside functions counted), and the rule
table loads neither matplotlib nor TensorFlow."""
import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(cwd):
  return subprocess.run([LINT], cwd=cwd, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=cwd))


def test_import_contracts_hold():
  proc = _lint(ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line", [
    # A lower layer reaching up: the rules importing the report.
    ("sage_jax/rules/common.py", "from sage_jax.report import tables  # noqa: F401\n"),
    # The hot path importing plotting.
    ("sage_jax/sweep/server_step.py", "import matplotlib  # noqa: F401\n"),
    # The report importing TensorFlow.
    ("sage_jax/report/figures.py", "import tensorflow  # noqa: F401\n"),
])
def test_import_contracts_catch_a_broken_layer(tmp_path, module, line):
  copy = tmp_path / "repo"
  shutil.copytree(os.path.join(ROOT, "sage_jax"), copy / "sage_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(ROOT, "setup.cfg"), copy / "setup.cfg")
  path = copy / module
  path.write_text(path.read_text() + line)
  proc = _lint(str(copy))
  assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]


def _module_names():
  """{dotted module name: path} of every module of sage_jax."""
  out = {}
  for folder, _, names in os.walk(os.path.join(ROOT, "sage_jax")):
    for name in names:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(
            folder, name)
  return out


def import_graph(modules):
  """{module: modules of sage_jax it imports}, from every import statement, at any depth.
  `from a import b` imports a.b when that is a module, else a."""
  graph = {}
  for name, path in modules.items():
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                          + ([base] if base else []))
        for a in node.names:
          deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def find_cycle(graph):
  """A list of modules forming a cycle, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_cycle_among_the_modules():
  graph = import_graph(_module_names())
  assert len(graph) > 40
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
  pkg = tmp_path / "sage_jax"
  (pkg / "a").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "a" / "__init__.py").write_text("")
  (pkg / "a" / "x.py").write_text("from sage_jax.a import y\n")
  (pkg / "a" / "y.py").write_text("def f():\n  from sage_jax import z\n")
  (pkg / "z.py").write_text("def g():\n  from sage_jax.a import x\n")
  modules = {f"sage_jax.{m}": str(pkg / p) for m, p in
             [("a.x", "a/x.py"), ("a.y", "a/y.py"), ("z", "z.py")]}
  modules.update({"sage_jax": str(pkg / "__init__.py"), "sage_jax.a": str(pkg / "a/__init__.py")})
  assert find_cycle(import_graph(modules)) == [
      "sage_jax.a.x", "sage_jax.a.y", "sage_jax.z", "sage_jax.a.x"]


def test_the_rule_table_loads_neither_matplotlib_nor_tensorflow():
  code = ("import sys\nfrom sage_jax import rules\nassert len(rules.RULES) >= 14\n"
          "loaded = [m for m in ('matplotlib', 'tensorflow') if m in sys.modules]\n"
          "assert not loaded, loaded\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
