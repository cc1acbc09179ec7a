#!/usr/bin/env bash
# The whole test suite (what CI runs): set up .venv from requirements.lock if needed, lint, then
# pytest. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k recipe -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${OSSFT_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
"$venv/bin/ruff" check ossft tests scripts
"$venv/bin/python" -m pytest "$@"
