"""The step-time benchmark runs end to end (its numbers go to BENCHMARKS.md, never into a test)."""

from __future__ import annotations

import re
import statistics

import pytest

from tests.conftest import run_bench_script

pytestmark = pytest.mark.bench


def test_step_benchmark_runs_both_trainers(tmp_path):
    section = run_bench_script("step_overhead.py", tmp_path / "bench.md", "--steps", "7", "--repeat", "2")
    assert re.search(r"\| bare TRL SFTTrainer \| \d+\.\d \|", section)
    assert re.search(r"\| ossft \| \d+\.\d \|", section)
    assert "the result is the median over 2 rounds" in section
    headline = re.search(
        r"ossft / TRL: \*\*(\d+\.\d{3})\*\*, the median of the rounds' ratios \(goal: at most 1\.05", section
    )
    rounds = re.search(
        r"Each round .*: ossft ([\d.]+) then trl ([\d.]+) \((\d\.\d{3})\); trl ([\d.]+) then ossft ([\d.]+) \((\d\.\d{3})\)\.",
        section,
    )
    assert headline and rounds, section
    first, second = float(rounds[1]) / float(rounds[2]), float(rounds[5]) / float(rounds[4])
    # Each round's ratio is ossft over TRL in that round, and the headline is their median (the mean of two).
    assert abs(first - float(rounds[3])) < 2e-3 and abs(second - float(rounds[6])) < 2e-3
    assert abs(statistics.median([first, second]) - float(headline[1])) < 2e-3
