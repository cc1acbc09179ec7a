"""The GPU benchmark script runs end to end on CPU with tiny dimensions (its numbers come from a GPU)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_bench_script


def test_gpu_benchmark_runs_both_configs_on_cpu(tmp_path):
    args = ("--shape", "tiny", "--seq", "64", "--micro-batch", "2", "--steps", "4", "--warmup", "1")
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args, "--out", str(tmp_path / "out"))
    assert "## LoRA on the gpt-oss-tiny shape: ossft against the cookbook" in section
    for config in ("cookbook", "ossft"):
        assert re.search(rf"\| {config} \| [\d,]+ \| nan \| nan \| \d+\.\d\d% \|", section), section
    assert re.search(r"ossft / cookbook tokens/s: \*\*\d+\.\d\d\*\*", section)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_shapes_are_refused_without_a_gpu(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/bench/gpu_lora.py", "--shape", "20b", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "only --shape tiny runs on CPU" in done.stderr
