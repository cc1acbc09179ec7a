#!/usr/bin/env bash
# Re-resolve requirements.lock: the newest releases that pyproject.toml's ranges allow (dev extras
# included), installed into a scratch venv with the locked torch (or OSSFT_TORCH), then frozen.
# Afterwards: run `bash scripts/test.sh` (it installs the new lock into .venv), fix what broke, and
# commit the lock together with the fixes. `git diff requirements.lock` shows what moved.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
OSSFT_VENV="$scratch/venv" OSSFT_UNLOCKED=1 bash scripts/setup.sh
python=$("$scratch/venv/bin/python" -c 'import platform; print(platform.python_version())')
{
  echo "# The exact set the test suite passed with; installed by scripts/setup.sh, remade by scripts/lock.sh."
  echo "# Resolved $(date -u +%Y-%m-%d) for Python $python on $(uname -s) $(uname -m)."
  echo "# torch is listed without its build label: any 2.13.0 build (CPU or CUDA) satisfies it."
  # --all keeps pip and setuptools; the editable ossft and pip's comment lines are left out.
  "$scratch/venv/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
    | grep -v '^#' | sed 's/+[A-Za-z0-9.]*$//'
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
git --no-pager diff --stat -- requirements.lock || true
