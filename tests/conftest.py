import fcntl
import os
import sys

from hypothesis import settings
import pytest

# Tests import the package from the checkout even without `pip install -e .`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Hypothesis profiles. "ci", the default, is derandomized: the same examples every run, so
# a property test cannot fail by chance on good code. "random" draws new examples, 500 per
# test (HYPOTHESIS_MAX_EXAMPLES sets another count), for a developer hunting for bugs:
#   HYPOTHESIS_PROFILE=random pytest tests/rules/test_properties.py
#   pytest tests/rules/test_properties.py --hypothesis-profile=random   (hypothesis's own option)
settings.register_profile("ci", derandomize=True, max_examples=8, deadline=None,
                          print_blob=True, database=None)
settings.register_profile("random", derandomize=False, deadline=None, print_blob=True,
                          max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "500")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache(tmp_path_factory, request):
  """One compilation cache per test session, shared by its xdist workers, as `main` turns on
  for every run: the many small in-process sweeps share most of their steps (test_sweep,
  test_report, test_workdir and test_train: 218 s instead of 304 s), and what one worker
  compiled (a rule at a budget, an op of an eager run) the other reads back. It changes no
  result (tests/sweep/test_compile_cache.py); the tests that run `python -m sage_jax.main` use
  the flag's per-user default or their own folder."""
  from sage_jax.sweep import compile_cache  # pylint: disable=import-outside-toplevel
  base = tmp_path_factory.getbasetemp()
  worker = hasattr(request.config, "workerinput")  # an xdist worker: base = <session's>/<id>
  session = base.parent if worker else base
  # One worker at a time: `enable` writes and removes a probe of one name in the folder.
  with open(session / "jax_cache.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    compile_cache.enable(str(session / "jax_cache"))
