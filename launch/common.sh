# shellcheck shell=bash
# Sourced by the launch scripts: --help from the script's header comment, argument errors
# (exit 2), and commands printed before they run (only printed when dry_run=1).
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { printf '%s: %s (see --help)\n' "$(basename "$0")" "$*" >&2; exit 2; }
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if ((${dry_run:-0} == 0)); then "$@"; fi
}
