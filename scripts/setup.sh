#!/usr/bin/env bash
# Create (or reuse) .venv in the repository and install ossft into it, torch first.
#
# Why torch first and pinned: with no torch installed, any package that asks for a bare `torch`
# makes pip fetch the newest CUDA build (several GB). Installing the pinned torch first means the
# later `pip install -e .` finds its torch requirement already met.
# OSSFT_TORCH picks another torch (e.g. OSSFT_TORCH="torch==2.13.0 --index-url ..." on GPU boxes).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "ossft needs Python >= 3.10; found: $("$python" --version 2>&1). Set PYTHON=/path/to/python3.10+." >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

# Skip the installs when nothing changed since the last successful one.
stamp=.venv/.ossft-installed
wanted="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) ${OSSFT_TORCH:-torch==2.13.0}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && .venv/bin/python -c 'import ossft, torch' 2>/dev/null; then
  exit 0
fi
echo "setting up .venv (torch first, then ossft and its dependencies)..." >&2
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # OSSFT_TORCH may carry pip flags
.venv/bin/python -m pip install --quiet ${OSSFT_TORCH:-torch==2.13.0}
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "$wanted" > "$stamp"
