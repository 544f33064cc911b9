"""The README's Python examples run as written."""
import os
import re

import pytest

from sage_jax import rules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_readme_python_examples_run(capsys, monkeypatch):
  """Both examples (adding a rule, using the library) run as written; the rule they register
  goes into a copy of the registry."""
  monkeypatch.setattr(rules, "RULES", dict(rules.RULES))
  text = open(os.path.join(ROOT, "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert len(blocks) == 2, "README has two python examples"
  for code in blocks:
    exec(compile(code, "README.md", "exec"), {})
  out = capsys.readouterr().out
  assert "[[2 3]]" in out and "(2, 32)" in out and "(2, 1000)" in out, out


def test_readme_commands_exist():
  text = open(os.path.join(ROOT, "README.md")).read()
  for script in ("launch/sweep_default.sh", "launch/test.sh"):
    assert f"bash {script}" in text and os.path.exists(os.path.join(ROOT, script))
  assert "bash launch/test.sh" in open(os.path.join(ROOT, ".ci/run")).read()
