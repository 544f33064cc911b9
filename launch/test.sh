#!/usr/bin/env bash
# The test suite. Usage: bash launch/test.sh [pytest args ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh test
exec .venv/bin/python -m pytest -q tests "$@"
