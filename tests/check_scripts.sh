#!/usr/bin/env bash
# Static checks of the shell scripts users run (jobs/, tools/, tests/): bash -n, then shellcheck.
set -u
cd "$(dirname "$0")/.." || exit 2
mapfile -t files < <(ls jobs/*.sbatch jobs/*.sh tools/*.sh tests/*.sh tests/*/*.sh .ci/run 2>/dev/null)
fail=0
for f in "${files[@]}"; do
  bash -n "$f" || { echo "bash -n failed: $f"; fail=1; }
done
if command -v shellcheck >/dev/null; then
  shellcheck -x "${files[@]}" || fail=1
else
  echo "shellcheck not installed: only bash -n was run"
fi
echo "${#files[@]} scripts checked"
exit $fail
