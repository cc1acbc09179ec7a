"""The step-time benchmark runs end to end (its numbers go to BENCHMARKS.md, never into a test)."""

from __future__ import annotations

import re

from tests.conftest import run_bench_script


def test_step_benchmark_runs_both_trainers(tmp_path):
    section = run_bench_script("step_overhead.py", tmp_path / "bench.md", "--steps", "7", "--repeat", "2")
    assert re.search(r"\| bare TRL SFTTrainer \| \d+\.\d \|", section)
    assert re.search(r"\| ossft \| \d+\.\d \|", section)
    assert re.search(r"ossft / TRL: \*\*\d+\.\d{3}\*\* \(goal: at most 1\.05: (met|not met)\)", section)
    assert re.search(r"Each round .*: ossft [\d.]+ then trl [\d.]+; trl [\d.]+ then ossft [\d.]+\.", section)
