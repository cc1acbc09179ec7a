#!/usr/bin/env bash
# Drift check, not part of CI: the newest releases pyproject.toml's ranges allow, in a separate venv
# (.venv-latest, made anew each time), then the whole test suite on them. It prints which packages
# are newer than requirements.lock first, so a failure points at what moved. Extra arguments go to
# pytest. When it passes, `bash scripts/lock.sh` moves the lock to these releases.
set -euo pipefail
cd "$(dirname "$0")/.."
export OSSFT_VENV=${OSSFT_VENV:-.venv-latest} OSSFT_UNLOCKED=1
rm -rf "$OSSFT_VENV"
bash scripts/setup.sh
echo "newest releases against requirements.lock:"
"$OSSFT_VENV/bin/python" scripts/check_lock.py requirements.lock 2>&1 | grep -v 'not the locked set' || echo "  the same"
bash scripts/test.sh "$@"
