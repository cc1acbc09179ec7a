#!/usr/bin/env bash
# The quickstart: make a tiny gpt-oss, fine-tune it with LoRA on attention and experts from
# recipes/quickstart.yaml, print the summary, then ask the result a question. About 2 minutes on a
# laptop CPU after the first set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(cd "${OSSFT_VENV:-.venv}" && pwd)/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

[ -f models/tiny-gpt-oss/config.json ] || ossft tiny-model models/tiny-gpt-oss
ossft train recipes/quickstart.yaml "$@"
echo
echo "sample generation from the fine-tuned tiny model:"
ossft generate outputs/quickstart --prompt "What is 12 + 7?"
