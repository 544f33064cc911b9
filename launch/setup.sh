#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a .venv with sage_jax and, when missing,
# Debian's Fashion-MNIST files (the embedded default dataset).
# Usage: bash launch/setup.sh [EXTRA]
#   no EXTRA  what the main job needs (sage_jax's core dependencies)
#   test      + the test suite's (pytest, torch and transformers for the conversion
#             tests, shellcheck)
#   bench     + torch, for launch/benchmark.sh
# PYTHON=/path/to/python picks the interpreter for a new .venv (setup.cfg's
# python_requires; the tests ran on 3.11, which is tried first).
# Where there is no apt-get (macOS, Fedora, a TPU VM) or the package cannot be
# installed, the first run downloads Fashion-MNIST through TFDS instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/common.sh
source "${root}/launch/common.sh"
cd "${root}"

extra="${1:-}"
case "${extra}" in
  "" | test | bench) ;;
  *) die "unknown extra: ${extra}; allowed: test, bench (or none)" ;;
esac

# The interpreter: $PYTHON, else the first of python3.11, python3.12, python3.13, python3
# that is recent enough.
if [[ ! -x .venv/bin/python ]]; then
  min=$(sed -n 's/^python_requires *= *>= *//p' setup.cfg)
  py="${PYTHON:-}"
  if [[ -z "${py}" ]]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
      if python_ok "${candidate}" "${min}"; then py="${candidate}"; break; fi
    done
    [[ -n "${py}" ]] || die "no Python >= ${min} found (python3 is" \
      "$(python3 --version 2>&1 || echo missing)); install one or set PYTHON=/path/to/it"
  elif ! python_ok "${py}" "${min}"; then
    die "PYTHON=${py} is not Python >= ${min} ($("${py}" --version 2>&1 || echo missing))"
  fi
  "${py}" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

# Install when the requirements changed since the last install (setup.cfg and
# pyproject.toml's checksum) or this extra was never installed: the `test` extra
# includes `bench`, and both include the core.
stamp=.venv/.sage_jax_installed
want=$(cksum setup.cfg pyproject.toml | tr -s ' \n' '  ')
have=""
if [[ -f "${stamp}" ]] && [[ "$(head -n 1 "${stamp}")" == "${want}" ]]; then
  have=$(tail -n +2 "${stamp}")
fi
satisfied=0
case "${extra}:${have}" in
  :?* | *:*"test"* | bench:*bench*) satisfied=1 ;;
esac
if ((satisfied == 0)) || ! .venv/bin/python -c "import sage_jax" 2>/dev/null; then
  spec=.
  [[ -z "${extra}" ]] || spec=".[${extra}]"
  .venv/bin/python -m pip install -q -e "${spec}"
  { echo "${want}"; [[ -z "${have}" ]] || echo "${have}"; echo "${extra:-core}"; } > "${stamp}.tmp"
  mv "${stamp}.tmp" "${stamp}"
fi

# Debian's dataset-fashion-mnist, unless Fashion-MNIST is already there (its files, or
# TFDS's prepared copy in the default data_dir).
if [[ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz &&
  ! -f "${HOME}/tensorflow_datasets/fashion_mnist/3.0.1/dataset_info.json" ]]; then
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: no apt-get here; Fashion-MNIST will be downloaded through TFDS on first use"
  elif [[ "$(id -u)" -ne 0 && ${#sudo_cmd[@]} -eq 0 ]]; then
    echo "setup.sh: not root and no sudo, so no apt-get install dataset-fashion-mnist;" \
      "Fashion-MNIST will be downloaded through TFDS on first use"
  elif ! { ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get update -q &&
    ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get install -y -q dataset-fashion-mnist; }; then
    echo "setup.sh: apt-get install dataset-fashion-mnist failed;" \
      "Fashion-MNIST will be downloaded through TFDS on first use" >&2
  fi
fi
