#!/usr/bin/env bash
# Download, here (the device machine reaches no package registry), the wheels that
# scripts/bench/gpu_check.py needs on the device machine beyond its image, at requirements.lock's
# versions, for its Python 3.12 on x86-64, into wheels/ (git-ignored). How to use them there: the
# docstring of scripts/bench/gpu_check.py.
#
# Carried: what the image lacks (trl, datasets, pydantic, kernels and their own missing dependencies)
# or holds too old for the lock (transformers 5.17: 5.25 checks at import for huggingface_hub >= 2.4,
# which the image's 1.33 is not, and for regex >= 2025.10; accelerate 1.15), and what the image holds
# at a version nobody has read (peft, click, anyio, ...): cheaper to carry than to find out on GPU time.
# Not carried: torch and its CUDA libraries, numpy, pandas, pyarrow, tokenizers, safetensors, pyyaml,
# rich, matplotlib, tqdm, filelock, fsspec, xxhash, psutil: the image has versions the lock's
# ranges accept. Extra names from the lock (e.g. pyarrow, if datasets complains of it there):
#     bash scripts/bench/gpu_check_wheels.sh pyarrow
set -euo pipefail
cd "$(dirname "$0")/../.."

carried=(
  transformers trl peft accelerate datasets dill multiprocess
  huggingface_hub hf-xet httpx2 httpcore2 h11 anyio idna truststore click
  kernels tomlkit regex
  pydantic pydantic_core annotated-types typing-inspection typing_extensions
)
pins=()
for name in "${carried[@]}" "$@"; do
  pattern="^$(echo "$name" | sed 's/[-_.]/[-_.]/g')=="
  pin=$(grep -i -E "$pattern" requirements.lock) || { echo "not in requirements.lock: $name" >&2; exit 1; }
  pins+=("$pin")
done

python=.venv/bin/python
[ -x "$python" ] || python=python3
rm -rf wheels
# The device's manylinux level is not known here: pip matches each platform tag exactly, so offer several.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d wheels "${pins[@]}"
count=$(ls wheels/*.whl | wc -l)
[ "$count" -eq "${#pins[@]}" ] || { echo "expected ${#pins[@]} wheels, got $count" >&2; exit 1; }
echo "wheels/: $count wheels, $(du -sh wheels | cut -f1) (the working tree a device call carries is capped at 64 MiB)"
