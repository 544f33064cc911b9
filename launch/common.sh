# shellcheck shell=bash
# Sourced by the launch scripts: --help from the script's header comment, argument errors
# (exit 2), commands printed before they run (only printed when dry_run=1), paths taken
# from the caller's directory, and the versions the installs pin.

# shellcheck disable=SC2034  # (used by the scripts that source this file)
# The jax version the test suite ran with (CPU); GPU and TPU installs pin the same.
JAX_VERSION=0.10.2
# The oldest Python that version supports.
MIN_PYTHON=3.11
# torch, only to read .pth/.pt/.bin checkpoints (CPU build: conversion needs no GPU).
# shellcheck disable=SC2034
TORCH_VERSION=2.13.0
# shellcheck disable=SC2034
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# Where the script was started: relative paths in its arguments are taken from here.
caller_dir=$(pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { printf '%s: %s (see --help)\n' "$(basename "$0")" "$*" >&2; exit 2; }
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if ((${dry_run:-0} == 0)); then "$@"; fi
}

# PATH given on the command line -> absolute path (relative ones from caller_dir, a
# leading ~ expanded, trailing slashes dropped); URLs such as gs://... unchanged.
abspath() {
  local p="$1"
  case "${p}" in
    *://*) printf '%s\n' "${p}"; return ;;
    \~) p="${HOME}" ;;
    \~/*) p="${HOME}/${p#\~/}" ;;
    /*) ;;
    *) p="${caller_dir}/${p#./}" ;;
  esac
  while [[ "${p}" == */ && "${p}" != / ]]; do p="${p%/}"; done
  printf '%s\n' "${p}"
}

# Scripts whose first argument is their output folder: --help prints the usage, a missing
# folder is an argument error, else out_dir is its absolute path (the caller then shifts).
first_dir() {
  case "$1" in
    -h | --help) usage; exit 0 ;;
    "" | -*) die "$2 is required as the first argument" ;;
  esac
  # shellcheck disable=SC2034  # (read by the script)
  out_dir=$(abspath "$1")
}

# Exit status 0 when interpreter $1 runs and is at least Python $2 (default MIN_PYTHON).
python_ok() {
  "$1" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '${2:-${MIN_PYTHON}}'.split('.'))))" \
    >/dev/null 2>&1
}

# Exit status 0 when checkpoint source $1 can only be read with torch.
needs_torch() {
  case "$1" in
    *.pth | *.pt | *.bin) return 0 ;;
  esac
  [[ -d "$1" && ! -f "$1/model.safetensors" ]]
}
