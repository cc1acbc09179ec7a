"""The GPU benchmark script runs end to end on CPU with tiny dimensions (its numbers come from a GPU)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_bench_script

pytestmark = pytest.mark.bench


def test_gpu_benchmark_runs_both_configs_on_cpu(tmp_path):
    args = ("--shape", "tiny", "--seq", "64", "--micro-batch", "2", "--steps", "4", "--warmup", "1")
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args, "--out", str(tmp_path / "out"))
    assert "## LoRA on the gpt-oss-tiny shape: ossft against the cookbook" in section
    for config in ("cookbook", "ossft"):
        assert re.search(rf"\| {config} \| [\d,]+ \| nan \| nan \| \d+\.\d\d% \|", section), section
    assert re.search(r"ossft / cookbook tokens/s: \*\*\d+\.\d\d\*\*", section)


def test_packed_flex_against_the_padded_cookbook_on_cpu(tmp_path):
    # --cpu-flex-backward: flex's unfused path, torch's CPU refusal lifted in this process only.
    args = ("--shape", "tiny", "--seq", "256", "--steps", "4", "--warmup", "1", "--packing", "--attn", "ossft_flex")
    args += ("--cpu-flex-backward", "--out", str(tmp_path / "out"))
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args)
    assert "examples of seq/2, seq/4, seq/8, seq/8 tokens, padded by the cookbook, packed by ossft" in section
    assert re.search(r"\| cookbook \| [\d,]+ \| nan \| nan \| \d+\.\d\d% \| eager \| padded \|", section), section
    assert re.search(r"\| ossft \| [\d,]+ \| nan \| nan \| \d+\.\d\d% \| ossft_flex \| packed \|", section), section


def test_ossft_with_its_experts_kept_in_mxfp4_on_cpu(tmp_path):
    # The random experts must first be rounded to MXFP4 values: keep_experts_in_mxfp4 refuses any others.
    args = ("--shape", "tiny", "--seq", "64", "--steps", "2", "--warmup", "1", "--mxfp4-experts")
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args, "--out", str(tmp_path / "out"))
    assert re.search(r"\| cookbook \| [\d,]+ \| nan \|", section), section  # the cookbook's experts stay bf16
    assert re.search(r"\| ossft \(experts MXFP4\) \| [\d,]+ \| nan \| nan \| \d+\.\d\d% \| eager \|", section), section


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_flex_on_cpu_needs_the_backward_lifted(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/bench/gpu_lora.py", "--shape", "tiny", "--attn", "ossft_flex", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "--cpu-flex-backward" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_shapes_are_refused_without_a_gpu(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/bench/gpu_lora.py", "--shape", "20b", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "only --shape tiny runs on CPU" in done.stderr


def attempts_of(section: str) -> dict[int, bool]:
    tried = re.search(r"- Tried: (.*)\.", section)
    assert tried, section
    return {int(seq): result == "ok" for seq, result in (item.split() for item in tried[1].split(", "))}


def test_longest_sequence_probe_doubles_until_the_cap(tmp_path):
    args = ("--shape", "tiny", "--longest", "--seq", "256", "--max-seq", "512", "--out", str(tmp_path / "out"))
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args)
    assert "## Longest sequence, LoRA on the gpt-oss-tiny shape" in section
    assert attempts_of(section) == {256: True, 512: True}
    assert "Longest: **512 tokens** (no length up to --max-seq 512 ran out)" in section


def test_longest_sequence_probe_finds_where_memory_runs_out(tmp_path):
    # A real out-of-memory on CPU: each run may map 4 GiB more than its libraries. Eager attention's
    # [4 heads, seq, seq] fp32 scores and their gradient alone take 0.75 GiB at 4096 tokens and 3 GiB
    # at 8192, so the doubling stops at 8192 at the latest and the gap is then halved to 2048 tokens.
    args = ("--shape", "tiny", "--longest", "--seq", "2048", "--resolution", "2048", "--memory-limit", "4")
    args += ("--out", str(tmp_path / "out"))
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args)
    attempts = attempts_of(section)
    longest = max(seq for seq, fits in attempts.items() if fits)
    failed = [seq for seq, fits in attempts.items() if not fits]
    assert failed and 2048 <= longest < 8192, attempts
    assert all(fits == (seq <= longest) for seq, fits in attempts.items()), attempts  # one boundary
    assert min(failed) - longest <= 2048, attempts
    assert f"Longest: **{longest:,} tokens**, peak reserved nan GiB." in section


def test_longest_sequence_probe_stops_at_its_time_box(tmp_path):
    # Not even the first length's process can start in 1 s: it is stopped, and the section says so.
    args = ("--shape", "tiny", "--longest", "--seq", "256", "--time-box", "1", "--out", str(tmp_path / "out"))
    section = run_bench_script("gpu_lora.py", tmp_path / "bench.md", *args)
    assert "- Tried: ." in section and "Not even 256 tokens trained in the time box." in section
