"""The README's Python example runs as written."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs(capsys):
  text = open(os.path.join(ROOT, "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert blocks, "README has no python example"
  for code in blocks:
    exec(compile(code, "README.md", "exec"), {})
  out = capsys.readouterr().out
  assert "(2, 32)" in out and "(2, 1000)" in out


def test_readme_commands_exist():
  text = open(os.path.join(ROOT, "README.md")).read()
  for script in ("launch/sweep_default.sh", "launch/test.sh"):
    assert f"bash {script}" in text and os.path.exists(os.path.join(ROOT, script))
  assert "bash launch/test.sh" in open(os.path.join(ROOT, ".ci/run")).read()
