#!/usr/bin/env bash
# The test suite. Usage: bash launch/test.sh [pytest args ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh test
# Two workers (pytest-xdist): most of a test's time is one thread tracing, compiling or
# importing, so two share two cores well (929 s against 1277 s with one, 2 cores). `-n 0`
# after it runs the tests in one process.
exec .venv/bin/python -m pytest -q -n 2 tests "$@"
