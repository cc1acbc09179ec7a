#!/usr/bin/env bash
# Create (or reuse) .venv in the repository and install ossft into it: torch first, then exactly the
# versions in requirements.lock (the set the test suite passed with), then ossft itself.
#
# Why torch first: with no torch installed, any package that asks for a bare `torch` makes pip
# fetch the newest CUDA build (several GB). Installing the locked torch first means every later
# torch requirement is already met.
#
# Environment:
#   OSSFT_TORCH     what to install as torch (pip arguments). Default: the locked version from PyPI,
#                   which is the CPU build here and the CUDA build on a Linux GPU machine. For another
#                   CUDA build keep the locked version, e.g.
#                   OSSFT_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130".
#                   A local build label (2.13.0+cu130) still satisfies the lock's torch==2.13.0.
#   OSSFT_VENV      the virtual environment's folder (default .venv).
#   OSSFT_UNLOCKED  1: ignore the lock and take the newest releases pyproject.toml's ranges allow,
#                   all but torch, which stays OSSFT_TORCH. Meant for a new venv (scripts/check-latest.sh
#                   and scripts/lock.sh make one each time).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${OSSFT_VENV:-.venv}
lock=requirements.lock
if ! "$python" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then
  echo "the locked set needs Python >= 3.11; found: $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11+." >&2
  exit 2
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

locked_version() { sed -n "s/^$1==//p" "$lock"; }
torch_spec=${OSSFT_TORCH:-torch==$(locked_version torch)}

# Skip the installs when nothing changed since the last successful one.
stamp=$venv/.ossft-installed
wanted="$(cat pyproject.toml "$lock" scripts/setup.sh | sha256sum | cut -d' ' -f1) $torch_spec ${OSSFT_UNLOCKED:-0}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && "$venv/bin/python" -c 'import ossft, torch' 2>/dev/null; then
  exit 0
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ "${OSSFT_UNLOCKED:-0}" = 1 ]; then
  echo "setting up $venv from the newest releases pyproject.toml allows (not the lock)..." >&2
  "${pip[@]}" --upgrade pip
  # shellcheck disable=SC2086  # OSSFT_TORCH may carry pip flags
  "${pip[@]}" $torch_spec
  # No --upgrade: in the fresh venvs this mode is for, pip takes the newest releases anyway, and
  # an eager upgrade would replace the torch just installed (with the newest CUDA build).
  "${pip[@]}" -e ".[dev]"
else
  echo "setting up $venv from $lock (torch first, then the locked set, then ossft)..." >&2
  "${pip[@]}" "pip==$(locked_version pip)"
  # shellcheck disable=SC2086
  "${pip[@]}" $torch_spec
  "${pip[@]}" -r "$lock"
  "${pip[@]}" --no-deps -e .
  "$venv/bin/python" scripts/check_lock.py "$lock"
fi
echo "$wanted" > "$stamp"
