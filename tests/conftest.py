import os
import sys

import pytest

# Tests import the package from the checkout even without `pip install -e .`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache(tmp_path_factory):
  """One compilation cache per test session (per xdist worker), as `main` turns on for every
  run: the many small in-process sweeps share most of their steps (test_sweep, test_report,
  test_workdir and test_train: 218 s instead of 304 s). It changes no result
  (tests/test_compile_cache.py); the tests that run `python -m sage_jax.main` use the flag's
  per-user default or their own folder."""
  from sage_jax import compile_cache  # pylint: disable=import-outside-toplevel
  compile_cache.enable(str(tmp_path_factory.mktemp("jax_cache")))
